"""The mock server's Anthropic endpoints, driven by the official ``anthropic`` SDK.

Answers are validated with the SDK's own pydantic types from the raw JSON
(``Type.model_validate``), and round-tripped through ``model_dump``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import pytest
from anthropic.types import Message, MessageTokensCount, ModelInfo, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from apiexec.mock.server import MockServer, MockServerConfig

pytestmark = pytest.mark.integration

KEY = "sk-ant-mock-test"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3}},
    "required": ["city", "days"],
}
WEATHER = {"name": "get_weather", "description": "weather", "input_schema": SCHEMA}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(MockServerConfig(api_key=KEY)) as running:
        yield running


@pytest.fixture
def client(server: MockServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def validated(kind: Any, raw: Any) -> Any:
    obj = kind.model_validate(raw.http_response.json())
    assert kind.model_validate(obj.model_dump()) == obj
    return obj


def message(client: anthropic.Anthropic, **kwargs: Any) -> Message:
    kwargs.setdefault("model", "claude-mock")
    kwargs.setdefault("max_tokens", 100)
    kwargs.setdefault("messages", USER)
    return validated(Message, client.messages.with_raw_response.create(**kwargs))


def test_message_validates(client: anthropic.Anthropic) -> None:
    reply = message(client, system=[{"type": "text", "text": "be brief"}])
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.content[0].type == "text" and reply.content[0].text == "mock reply to: What is the weather in Paris?"
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens == 12
    assert reply.usage.cache_read_input_tokens == 0


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic) -> None:
    cut = message(client, max_tokens=2)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2
    stopped = message(client, stop_sequences=["Paris", "weather"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "weather"
    assert stopped.content[0].text == "mock reply to: What is the "  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages", body={"model": "c", "messages": USER}, cast_to=Message)  # max_tokens is required
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_tool_choice_any_tool_auto_none(client: anthropic.Anthropic) -> None:
    forced = message(client, tools=[WEATHER, TIME], tool_choice={"type": "any"})
    assert forced.stop_reason == "tool_use"
    (block,) = forced.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, SCHEMA)
    named = message(client, tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_time"})
    assert named.content[0].name == "get_time"  # type: ignore[union-attr]
    none = message(client, tools=[WEATHER], tool_choice={"type": "none"})
    assert none.content[0].type == "text"
    auto = message(client, tools=[WEATHER])
    assert auto.content[0].type == "tool_use"
    followup = [*USER, {"role": "assistant", "content": [b.model_dump() for b in auto.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": auto.content[0].id,  # type: ignore[union-attr]
                                              "content": "sunny"}]}]
    answered = message(client, tools=[WEATHER], messages=followup)
    assert answered.content[0].type == "text" and answered.stop_reason == "end_turn"


def test_stream_events_validate_and_assemble(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model="c", max_tokens=50, messages=USER, stream=True)
    lines = [line[6:] for line in raw.http_response.iter_lines() if line.startswith("data: ")]
    events = [TypeAdapter(RawMessageStreamEvent).validate_json(line) for line in lines if '"ping"' not in line]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    with client.messages.stream(model="c", max_tokens=50, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == "mock reply to: What is the weather in Paris?"  # type: ignore[union-attr]
    assert final.usage.output_tokens == 12 and final.stop_reason == "end_turn"


def test_stream_of_a_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="c", max_tokens=200, messages=USER, tools=[WEATHER],
                                tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    jsonschema.validate(final.content[0].input, SCHEMA)  # type: ignore[union-attr]


def test_models_list_and_retrieve(client: anthropic.Anthropic) -> None:
    raw = client.models.with_raw_response.list()
    page = raw.http_response.json()
    assert page["has_more"] is False and page["first_id"] == page["last_id"] == "mock-model"
    assert [ModelInfo.model_validate(m).id for m in page["data"]] == ["mock-model"]
    assert [m.id for m in client.models.list()] == ["mock-model"]
    model = validated(ModelInfo, client.models.with_raw_response.retrieve("claude-opus-4-1"))
    assert model.id == "claude-opus-4-1" and model.type == "model" and model.display_name


def test_count_tokens_matches_the_charge(client: anthropic.Anthropic) -> None:
    counted = validated(MessageTokensCount, client.messages.with_raw_response.count_tokens(
        model="c", messages=USER, system="be brief", tools=[WEATHER]))
    charged = message(client, system="be brief", tools=[WEATHER], tool_choice={"type": "none"})
    assert counted.input_tokens == charged.usage.input_tokens


def test_error_bodies_carry_request_id(server: MockServer, client: anthropic.Anthropic) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            bad.messages.create(model="c", max_tokens=5, messages=USER)
    body = ErrorResponse.model_validate(auth.value.body)
    assert body.error.type == "authentication_error"
    assert body.request_id == auth.value.response.headers["request-id"] == auth.value.request_id
    cases = [("429", anthropic.RateLimitError, "rate_limit_error"), ("529", anthropic.APIStatusError, "overloaded_error"),
             ("503", anthropic.InternalServerError, "api_error"), ("500", anthropic.InternalServerError, "api_error")]
    for fault, error, kind in cases:
        with pytest.raises(error) as caught:
            client.messages.create(model="c", max_tokens=5, messages=USER, extra_headers={"x-mock-fault": fault})
        parsed = ErrorResponse.model_validate(caught.value.body)
        assert (parsed.error.type, caught.value.status_code) == (kind, int(fault))
        assert parsed.request_id and parsed.request_id.startswith("req_")
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.batches.retrieve("msgbatch_nope")
    assert json.loads(missing.value.response.text)["error"]["type"] == "not_found_error"


def test_raw_tool_use_stream_events_validate(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model="c", max_tokens=200, messages=USER, tools=[WEATHER],
                                                   tool_choice={"type": "any"}, stream=True)
    lines = list(raw.http_response.iter_lines())
    names = [line[7:] for line in lines if line.startswith("event: ")]
    datas = [line[6:] for line in lines if line.startswith("data: ")]
    assert names[:2] == ["message_start", "ping"] and names[-1] == "message_stop"
    events = [TypeAdapter(RawMessageStreamEvent).validate_json(d) for n, d in zip(names, datas) if n != "ping"]
    partial = "".join(e.delta.partial_json for e in events  # type: ignore[union-attr]
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    jsonschema.validate(json.loads(partial), SCHEMA)
