"""The mock server's OpenAI endpoints, driven by the official ``openai`` SDK.

Every answer is validated with the SDK's own pydantic types, from the raw JSON
(``Type.model_validate``: the SDK itself builds its objects without validation),
and round-tripped through ``model_dump``.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from apiexec.mock.server import MockServer, MockServerConfig

pytestmark = pytest.mark.integration

KEY = "sk-mock-openai-test"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
        "when": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
    },
    "required": ["city", "unit", "days", "tags", "when"],
    "additionalProperties": False,
    "$defs": {"tag": {"type": "object", "properties": {"name": {"type": "string", "minLength": 6}},
                      "required": ["name"], "additionalProperties": False}},
}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(MockServerConfig(api_key=KEY)) as running:
        yield running


@pytest.fixture
def client(server: MockServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def validated(kind: Any, raw: Any) -> Any:
    """``kind`` validated from the raw HTTP JSON; the dump round-trips."""
    data = raw.http_response.json()
    obj = kind.model_validate(data)
    assert kind.model_validate(obj.model_dump(by_alias=True)) == obj  # by alias: the SDK's ``async_`` is ``async``
    return obj


def chat(client: openai.OpenAI, **kwargs: Any) -> ChatCompletion:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", USER)
    return validated(ChatCompletion, client.chat.completions.with_raw_response.create(**kwargs))


# --------------------------------------------------------------------------- chat


def test_chat_completion_validates_with_usage_details(client: openai.OpenAI) -> None:
    completion = chat(client)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "mock reply to: What is the weather in Paris?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].logprobs is None  # not asked for
    usage = completion.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_n_returns_n_choices_and_bills_them_all(client: openai.OpenAI) -> None:
    one = chat(client)
    three = chat(client, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.usage is not None and one.usage is not None
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=USER, n=0)
    assert caught.value.body["param"] == "n"  # type: ignore[index]


def test_chat_max_tokens_and_stop(client: openai.OpenAI) -> None:
    short = chat(client, max_completion_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2
    stopped = chat(client, stop=["weather"])
    assert stopped.choices[0].message.content == "mock reply to: What is the "
    assert stopped.choices[0].finish_reason == "stop"


def test_tool_choice_required_calls_a_tool_with_schema_valid_arguments(client: openai.OpenAI) -> None:
    completion = chat(client, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)


def test_tool_choice_named_none_and_auto(client: openai.OpenAI) -> None:
    named = chat(client, tools=[WEATHER_TOOL, TIME_TOOL],
                 tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"  # type: ignore[index]
    assert named.choices[0].finish_reason == "stop"  # as OpenAI does for a named choice (vllm-project/vllm#25054)
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {}  # type: ignore[index]
    none = chat(client, tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content
    auto = chat(client, tools=[WEATHER_TOOL])  # auto: the user asked, the model calls
    call = auto.choices[0].message.tool_calls[0]  # type: ignore[index]
    followup = [*USER, auto.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    answered = chat(client, tools=[WEATHER_TOOL], messages=followup)  # the tool answered: text, the loop ends
    assert answered.choices[0].message.tool_calls is None
    assert answered.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=USER, tools=[WEATHER_TOOL],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})


def test_json_object_mode_returns_json(client: openai.OpenAI) -> None:
    completion = chat(client, response_format={"type": "json_object"})
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_json_schema_structured_output_is_valid_for_the_schema(client: openai.OpenAI) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA,
                                                               "strict": True}}
    completion = chat(client, response_format=response_format)
    jsonschema.validate(json.loads(completion.choices[0].message.content or ""), WEATHER_SCHEMA)

    class Forecast(BaseModel):
        city: str
        unit: Literal["celsius", "fahrenheit"]
        days: list[int]
        note: str | None

    parsed = client.chat.completions.parse(model="m", messages=USER, response_format=Forecast)
    assert isinstance(parsed.choices[0].message.parsed, Forecast)


def test_logprobs_when_asked(client: openai.OpenAI) -> None:
    completion = chat(client, logprobs=True, top_logprobs=3)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == completion.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in logprobs.content)
    assert all(bytes(t.bytes or []).decode() == t.token for t in logprobs.content)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=USER, top_logprobs=2)  # without logprobs


def _chunks(client: openai.OpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    raw = client.chat.completions.with_raw_response.create(model="m", messages=USER, stream=True, **kwargs)
    lines = [line for line in raw.http_response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [ChatCompletionChunk.model_validate_json(line[6:]) for line in lines[:-1]]


def test_chat_stream_without_usage(client: openai.OpenAI) -> None:
    chunks = _chunks(client)
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat(client).choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_stream_with_usage_and_logprobs(client: openai.OpenAI) -> None:
    chunks = _chunks(client, stream_options={"include_usage": True}, logprobs=True, n=2)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2 * 12
    assert {c.choices[0].index for c in chunks[:-1]} == {0, 1}
    assert any(c.choices[0].logprobs and c.choices[0].logprobs.content for c in chunks[:-1])
    with client.chat.completions.stream(model="m", messages=USER, stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == chat(client).choices[0].message.content


def test_chat_stream_of_a_tool_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="m", messages=USER, tools=[WEATHER_TOOL],
                                        tool_choice="required") as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)
    assert final.choices[0].finish_reason == "tool_calls"


# --------------------------------------------------------------------------- embeddings


def test_embeddings_float_base64_dimensions_and_token_ids(client: openai.OpenAI) -> None:
    floats = validated(CreateEmbeddingResponse, client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["a", "bb"], encoding_format="float"))
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 8
    raw = client.embeddings.with_raw_response.create(model="e", input=["a", "bb"], encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(encoded))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)
    default = client.embeddings.create(model="e", input=["a", "bb"])  # the SDK asks for base64 and decodes
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    sized = client.embeddings.create(model="e", input="a", dimensions=256, encoding_format="float")
    assert len(sized.data[0].embedding) == 256
    assert sum(x * x for x in sized.data[0].embedding) == pytest.approx(1.0, abs=1e-3)
    ids = validated(CreateEmbeddingResponse, client.embeddings.with_raw_response.create(
        model="e", input=[[1, 2, 3], [4, 5]], encoding_format="float"))
    assert len(ids.data) == 2 and ids.usage.prompt_tokens == 5
    one = client.embeddings.create(model="e", input=[7, 8, 9], encoding_format="float")
    assert len(one.data) == 1 and one.usage.total_tokens == 3
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="e", input="a", encoding_format="hex")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- responses


def test_responses_create_validates(client: openai.OpenAI) -> None:
    response = validated(Response, client.responses.with_raw_response.create(
        model="gpt-4.1", input="hello there", instructions="be brief", metadata={"k": "v"}))
    assert response.status == "completed" and response.output_text == "mock reply to: hello there"
    assert response.tools == [] and response.parallel_tool_calls is True and response.tool_choice == "auto"
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.metadata == {"k": "v"}
    cut = client.responses.create(model="m", input="hello", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details is not None


def test_responses_tools_and_structured_output(client: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": True}
    response = validated(Response, client.responses.with_raw_response.create(
        model="m", input="weather?", tools=[tool], tool_choice="required"))
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)
    followup = client.responses.create(model="m", tools=[tool], input=[
        {"role": "user", "content": "weather?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert followup.output[0].type == "message"

    class City(BaseModel):
        name: str
        population: int

    parsed = client.responses.parse(model="m", input="a city", text_format=City)
    assert isinstance(parsed.output_parsed, City)


def test_responses_stream_events_validate(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="m", input="stream me", stream=True)
    lines = [line[6:] for line in raw.http_response.iter_lines() if line.startswith("data: ")]
    events = [TypeAdapter(ResponseStreamEvent).validate_json(line) for line in lines]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "mock reply to: stream me"
    with client.responses.stream(model="m", input="stream me") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == text


# --------------------------------------------------------------------------- completions and models


def test_legacy_completions(client: openai.OpenAI) -> None:
    completion = validated(Completion, client.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt=["one", "two"], n=2, max_tokens=50, echo=True, logprobs=2))
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert completion.choices[0].text == "onemock reply to: one"
    assert completion.choices[2].text.startswith("two")
    assert completion.choices[0].logprobs is not None and completion.choices[0].logprobs.tokens
    short = client.completions.create(model="m", prompt="abc")  # default max_tokens 16 > 12: not cut
    assert short.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="m", prompt="abc", stream=True)
                       if c.choices)
    assert streamed == short.choices[0].text
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="m", prompt=None)  # type: ignore[arg-type]


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [Model.model_validate(m.model_dump()).id for m in models] == ["mock-model"]
    model = validated(Model, client.models.with_raw_response.retrieve("gpt-4o"))
    assert model.id == "gpt-4o" and model.object == "model"


# --------------------------------------------------------------------------- errors


def test_errors_map_to_the_sdk_exceptions(server: MockServer, client: openai.OpenAI) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as auth:
            bad.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()  # every /v1 path needs the key
    assert auth.value.code == "invalid_api_key" and "wrong" not in str(auth.value.body)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=USER, extra_headers={"x-mock-fault": "429:1500"})
    assert limited.value.response.headers["retry-after-ms"] == "1500"
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=USER, extra_headers={"x-mock-fault": "503"})
    with pytest.raises(openai.BadRequestError) as bad_request:
        client.chat.completions.create(model="m", messages=[])
    assert bad_request.value.param == "messages" and bad_request.value.request_id
    with pytest.raises(openai.NotFoundError):
        client.get("/nowhere", cast_to=object)


def test_responses_stream_of_a_tool_call_and_of_a_cut_reply(client: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}
    with client.responses.stream(model="m", input="weather?", tools=[tool], tool_choice="required") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    jsonschema.validate(json.loads(final.output[0].arguments), WEATHER_SCHEMA)  # type: ignore[union-attr]
    raw = client.responses.with_raw_response.create(model="m", input="hello", max_output_tokens=2, stream=True)
    lines = [line[6:] for line in raw.http_response.iter_lines() if line.startswith("data: ")]
    last = TypeAdapter(ResponseStreamEvent).validate_json(lines[-1])
    assert last.type == "response.incomplete" and last.response.status == "incomplete"


def test_chat_stream_chunks_with_n_tools_logprobs_and_usage_all_validate(client: openai.OpenAI) -> None:
    chunks = _chunks(client, n=2, logprobs=True, top_logprobs=1, tools=[WEATHER_TOOL],
                     stream_options={"include_usage": True})
    calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert {c.choices[0].index for c in calls} == {0, 1}
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index, union-attr]
                        for c in calls if c.choices[0].index == 0)
    jsonschema.validate(json.loads(arguments), WEATHER_SCHEMA)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls", "tool_calls"]


def test_per_key_limits_and_seeded_faults_through_the_sdk() -> None:
    config = MockServerConfig(api_key="key-a", api_keys=("key-b",), limits_per_key=True, requests_per_minute=60,
                              request_burst=1)
    with MockServer(config) as server, \
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="key-a", max_retries=0) as a, \
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="key-b", max_retries=0) as b:
        a.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.RateLimitError) as limited:
            a.chat.completions.create(model="m", messages=USER)
        assert limited.value.body["type"] == "requests"  # type: ignore[index]
        b.chat.completions.create(model="m", messages=USER)  # its own bucket
    outcomes = []
    for _ in range(2):
        with MockServer(MockServerConfig(fail_rate=0.5, seed=3)) as server, \
                openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as sdk:
            run = []
            for _ in range(8):
                try:
                    sdk.chat.completions.create(model="m", messages=USER)
                    run.append(200)
                except openai.InternalServerError as exc:
                    run.append(exc.status_code)
            outcomes.append(run)
    assert outcomes[0] == outcomes[1] and set(outcomes[0]) - {200}  # reproducible, and some failed
