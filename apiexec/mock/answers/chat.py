"""OpenAI chat completions (``POST /v1/chat/completions``): JSON or a stream of chunks.

Honours ``n`` (choices), ``max_tokens``/``max_completion_tokens``, ``stop``,
``tools`` with ``tool_choice`` (``none``, ``auto``: a call while the last message
is the user's, ``required``, or a named function), ``response_format``
(``text``, ``json_object``, ``json_schema``: JSON valid for the schema),
``logprobs``/``top_logprobs`` and ``stream``/``stream_options.include_usage``.
``usage`` carries ``prompt_tokens_details`` and ``completion_tokens_details``;
``completion_tokens`` counts every choice, as OpenAI bills them.

Example:
    >>> body = {"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]}
    >>> payload = chat_answer(body).payload
    >>> [c["message"]["content"] for c in payload["choices"]], payload["usage"]["completion_tokens"]
    (['mock reply to: hi', 'mock reply to: hi'], 24)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from apiexec.mock.answers.common import (
    MAX_CHOICES,
    MAX_TOP_LOGPROBS,
    Answer,
    BadRequest,
    completion_budget,
    estimate_tokens,
    json_dumps,
    last_user_text,
    messages_of,
    model_of,
    pieces,
    plain_reply,
    positive_int,
    stop_sequences,
    structured_reply,
    text_of,
    token_logprobs,
)
from apiexec.mock.answers.schema import example_for
from apiexec.mock.wire import new_id, sse

SYSTEM_FINGERPRINT: Final = "fp_apiexec_mock"


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class _Output:
    content: str | None
    tool: Tool | None
    tokens: int
    finish: str


def chat_answer(body: dict[str, Any]) -> Answer:
    """The chat completion for ``body`` (and its SSE chunks when ``stream`` is true)."""
    messages = messages_of(body)
    model = model_of(body)
    n = positive_int(body, "n", 1, maximum=MAX_CHOICES) or 1
    top = _top_logprobs(body)
    output = _output(body, messages)
    prompt = estimate_tokens([text_of(m.get("content")) for m in messages], len(messages))
    prompt += estimate_tokens([json_dumps(t.parameters) for t in tools_of(body)], 0)
    completion = output.tokens * n
    choices = [_choice(i, output, top) for i in range(n)]
    payload = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt, completion),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    events = _stream(payload, _include_usage(body)) if body.get("stream") is True else None
    return Answer(payload, prompt + completion, events)


def usage(prompt: int, completion: int) -> dict[str, Any]:
    """OpenAI's ``CompletionUsage`` with its detail objects (nothing cached, no reasoning)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def tools_of(body: Mapping[str, Any]) -> list[Tool]:
    """The ``tools`` of a chat request (``{"type": "function", "function": {...}}`` each)."""
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("'tools' must be a list", "tools")
    tools = []
    for i, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise BadRequest(f"'tools[{i}].function.name' must be a non-empty string", f"tools[{i}].function.name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise BadRequest(f"'tools[{i}].function.parameters' must be an object", f"tools[{i}].function.parameters")
        tools.append(Tool(function["name"], parameters))
    return tools


def chosen_tool(tools: list[Tool], choice: object, last_role: object, *, named: str | None) -> Tool | None:
    """The tool the mock calls: ``named`` or the first, when ``choice`` asks for a call.

    ``auto`` calls a tool only while the last message is the user's, so a
    tool-using loop ends once the tool results come back.
    """
    if not tools or choice == "none":
        return None
    if named is not None:
        for tool in tools:
            if tool.name == named:
                return tool
        raise BadRequest(f"tool_choice names {named!r}, which is not in 'tools'", "tool_choice")
    if choice == "required" or (choice in (None, "auto") and last_role == "user"):
        return tools[0]
    return None


def _output(body: Mapping[str, Any], messages: list[dict[str, Any]]) -> _Output:
    tools = tools_of(body)
    choice = body.get("tool_choice")
    named = _named_tool(choice)
    limit = completion_budget(body, "max_completion_tokens", "max_tokens")
    tool = chosen_tool(tools, choice, messages[-1].get("role"), named=named)
    if tool is not None:
        arguments, tokens, truncated = structured_reply(json_dumps(example_for(tool.parameters)), limit)
        # OpenAI ends a forced named call with "stop", an auto/required one with "tool_calls"
        # (measured against the API in vllm-project/vllm#25054).
        finish = "length" if truncated else ("stop" if named else "tool_calls")
        return _Output(arguments, tool, tokens, finish)
    schema = _json_format(body.get("response_format"))
    if schema is not None:
        value = example_for(schema) if schema else {"reply": last_user_text(messages)}
        text, tokens, truncated = structured_reply(json_dumps(value), limit)
        return _Output(text, None, tokens, "length" if truncated else "stop")
    text, tokens, reason = plain_reply(last_user_text(messages), limit, stop_sequences(body, "stop"))
    return _Output(text, None, tokens, "length" if reason == "length" else "stop")


def _named_tool(choice: object) -> str | None:
    if choice is None or choice in ("none", "auto", "required"):
        return None
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return str(function["name"])
    raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', "
                     "'function': {'name': ...}}", "tool_choice")


def _json_format(response_format: object) -> dict[str, Any] | None:
    """None for text; ``{}`` for JSON mode; the schema for ``json_schema``."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest("'response_format.json_schema.name' is required", "response_format.json_schema.name")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise BadRequest("'response_format.json_schema.schema' must be an object",
                             "response_format.json_schema.schema")
        return schema or {"type": "object", "properties": {}}
    raise BadRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'", "response_format.type")


def _top_logprobs(body: Mapping[str, Any]) -> int | None:
    """None when logprobs are not asked for, else how many alternatives per token."""
    wanted = body.get("logprobs")
    top = body.get("top_logprobs")
    if wanted not in (None, True, False):
        raise BadRequest("'logprobs' must be a boolean", "logprobs")
    if top is not None:
        if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"'top_logprobs' must be an integer in 0..{MAX_TOP_LOGPROBS}", "top_logprobs")
        if wanted is not True:
            raise BadRequest("'top_logprobs' needs 'logprobs' set to true", "top_logprobs")
    return (top or 0) if wanted is True else None


def _choice(index: int, output: _Output, top: int | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    if output.tool is not None:
        call = {"id": new_id("call_"), "type": "function",
                "function": {"name": output.tool.name, "arguments": output.content}}
        message["tool_calls"] = [call]
    else:
        message["content"] = output.content
    logprobs = None
    if top is not None:
        logprobs = {"content": token_logprobs(message["content"] or "", top), "refusal": None}
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": output.finish}


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _stream(payload: Mapping[str, Any], include_usage: bool) -> list[bytes]:
    base: dict[str, Any] = {key: payload[key] for key in ("id", "created", "model", "service_tier",
                                                          "system_fingerprint")}
    base["object"] = "chat.completion.chunk"

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        out = dict(base, choices=[{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}])
        if include_usage:
            out["usage"] = None
        return out

    chunks = []
    for choice in payload["choices"]:
        index, message = choice["index"], choice["message"]
        first = "" if message["content"] is not None else None  # a tool call has no text
        chunks.append(chunk(index, {"role": "assistant", "content": first, "refusal": None}))
        for call in message.get("tool_calls", []):
            head = {"index": 0, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            chunks.append(chunk(index, {"tool_calls": [head]}))
            for piece in pieces(call["function"]["arguments"]):
                chunks.append(chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        entries = (choice["logprobs"] or {}).get("content") or []
        for i, piece in enumerate(pieces(message["content"]) if message["content"] else []):
            logprobs = {"content": entries[i:i + 1], "refusal": None} if choice["logprobs"] is not None else None
            chunks.append(chunk(index, {"content": piece}, logprobs=logprobs))
        chunks.append(chunk(index, {}, choice["finish_reason"]))
    if include_usage:
        chunks.append(dict(base, choices=[], usage=payload["usage"]))
    return [sse(c) for c in chunks] + [sse("[DONE]")]
