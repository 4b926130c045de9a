"""Anthropic messages (``POST /v1/messages``), token counting and models.

Honours ``max_tokens`` (required, as Anthropic requires it), ``system`` (a
string or text blocks), ``stop_sequences`` (``stop_reason: stop_sequence``),
``tools`` with ``tool_choice`` (``auto``: a ``tool_use`` while the last user
message carries no ``tool_result``; ``any``; ``tool`` by name; ``none``) and
``stream`` (``message_start``, ``ping``, content block events with
``text_delta`` or ``input_json_delta``, ``message_delta``, ``message_stop``).
``POST /v1/messages/count_tokens`` answers ``{"input_tokens": N}`` with the same
estimate a message would be charged.

Example:
    >>> body = {"model": "claude-x", "max_tokens": 50, "stop_sequences": ["to"],
    ...         "messages": [{"role": "user", "content": "hi"}]}
    >>> message = messages_answer(body).payload
    >>> message["content"][0]["text"], message["stop_reason"], message["stop_sequence"]
    ('mock reply ', 'stop_sequence', 'to')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from apiexec.mock.answers.chat import Tool, chosen_tool
from apiexec.mock.answers.common import (
    Answer,
    BadRequest,
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
)
from apiexec.mock.answers.schema import example_for
from apiexec.mock.wire import new_id, sse

MODEL_CREATED_AT: Final = "2025-01-01T00:00:00Z"
ANTHROPIC_MODELS: Final = ("mock-model",)


def messages_answer(body: dict[str, Any]) -> Answer:
    """The ``message`` for ``body`` (and its events when ``stream`` is true)."""
    messages = messages_of(body)
    model = model_of(body)
    limit = positive_int(body, "max_tokens", None)
    if limit is None:
        raise BadRequest("max_tokens: Field required", "max_tokens")
    prompt = input_tokens(body, messages)
    tools = _tools(body.get("tools"))
    tool = _chosen(tools, body.get("tool_choice"), messages[-1])
    stop_sequence = None
    if tool is not None:
        _, completion, truncated = structured_reply(json_dumps(example_for(tool.parameters)), limit)
        if truncated:  # the arguments were cut: no usable tool_use block
            content: list[dict[str, Any]] = []
            stop_reason = "max_tokens"
        else:
            content = [{"type": "tool_use", "id": new_id("toolu_"), "name": tool.name,
                        "input": example_for(tool.parameters)}]
            stop_reason = "tool_use"
    else:
        stops = stop_sequences(body, "stop_sequences")
        text, completion, reason = plain_reply(last_user_text(messages), limit, stops)
        content = [{"type": "text", "text": text}]
        stop_reason = {"length": "max_tokens", "stop": "end_turn"}.get(reason, "stop_sequence")
        if reason == "stop_sequence":
            stop_sequence = _matched_stop(last_user_text(messages), stops)
    payload = {
        "id": new_id("msg_mock"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": prompt,
            "output_tokens": completion,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }
    events = _stream(payload) if body.get("stream") is True else None
    return Answer(payload, prompt + completion, events)


def input_tokens(body: Mapping[str, Any], messages: list[dict[str, Any]]) -> int:
    """The estimate of a request's input: messages, system prompt and tool schemas."""
    texts = [_content_text(m.get("content")) for m in messages] + [text_of(body.get("system"))]
    texts += [json_dumps(t.parameters) for t in _tools(body.get("tools"))]
    return estimate_tokens(texts, len(messages))


def count_tokens_answer(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/messages/count_tokens``."""
    model_of(body, required=True)
    return {"input_tokens": input_tokens(body, messages_of(body))}


def _content_text(content: object) -> str:
    """Text of a message, counting tool results and tool inputs too."""
    text = text_of(content)
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text += text_of(block.get("content"))
            elif isinstance(block, dict) and block.get("type") == "tool_use":
                text += json_dumps(block.get("input", {}))
    return text


def _matched_stop(quoted: str, stops: list[str]) -> str | None:
    """Which stop sequence cut ``text`` (the earliest in the full reply)."""
    full, _, _ = plain_reply(quoted, None)
    found = [(full.find(s), s) for s in stops if s in full]
    return min(found)[1] if found else None


def _tools(raw: object) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("tools: must be a list", "tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise BadRequest(f"tools.{i}.name: Field required", f"tools.{i}.name")
        if "input_schema" not in tool and "type" in tool and tool["type"] != "custom":
            continue  # server tools (web search, ...) are accepted and never called
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise BadRequest(f"tools.{i}.input_schema: Field required", f"tools.{i}.input_schema")
        tools.append(Tool(tool["name"], schema))
    return tools


def _chosen(tools: list[Tool], choice: object, last: Mapping[str, Any]) -> Tool | None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice is not None and kind not in ("auto", "any", "tool", "none"):
        raise BadRequest("tool_choice: must be {'type': 'auto' | 'any' | 'tool' | 'none'}", "tool_choice")
    named = None
    if kind == "tool":
        named = choice.get("name") if isinstance(choice, dict) else None
        if not isinstance(named, str):
            raise BadRequest("tool_choice.name: Field required", "tool_choice.name")
    content = last.get("content")
    answered = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
    role = "tool" if answered else last.get("role")
    mapped = {"any": "required", "none": "none", "auto": "auto", None: "auto"}.get(kind, "auto")
    return chosen_tool(tools, mapped, role, named=named)


def _stream(payload: Mapping[str, Any]) -> list[bytes]:
    usage = payload["usage"]
    start = dict(payload, content=[], stop_reason=None, stop_sequence=None, usage=dict(usage, output_tokens=1))
    events = [sse({"type": "message_start", "message": start}, "message_start"), sse({"type": "ping"}, "ping")]
    for index, block in enumerate(payload["content"]):
        if block["type"] == "tool_use":
            opening = dict(block, input={})
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces(json_dumps(block["input"]))]
        else:
            opening = dict(block, text="")
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        events.append(sse({"type": "content_block_start", "index": index, "content_block": opening},
                          "content_block_start"))
        for delta in deltas:
            events.append(sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"))
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    stop = {"stop_reason": payload["stop_reason"], "stop_sequence": payload["stop_sequence"]}
    final_usage = {"output_tokens": usage["output_tokens"]}
    events += [
        sse({"type": "message_delta", "delta": stop, "usage": final_usage}, "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def anthropic_model(model_id: str) -> dict[str, Any]:
    """Anthropic's ``ModelInfo`` for ``model_id``."""
    return {"type": "model", "id": model_id, "display_name": f"Mock {model_id}", "created_at": MODEL_CREATED_AT,
            "lifecycle": "active"}


def anthropic_models(query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/models`` in Anthropic's page shape (``has_more``, ``first_id``, ``last_id``)."""
    data = [anthropic_model(m) for m in ANTHROPIC_MODELS]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
