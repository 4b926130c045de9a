"""The OpenAI Responses API (``POST /v1/responses``): a ``response`` object or its event stream.

Honours ``input`` (a string or a list of items: messages, ``function_call`` and
``function_call_output``), ``instructions``, ``max_output_tokens`` (``status:
incomplete`` when it cuts the reply), ``tools`` (``{"type": "function", "name",
"parameters"}``) with ``tool_choice``, ``text.format`` (``json_object``,
``json_schema``), ``parallel_tool_calls``, ``temperature``, ``top_p``,
``metadata``, ``previous_response_id``, ``store`` and ``stream``. The stream is
``response.created``, ``response.in_progress``, the output item and content
part events with ``response.output_text.delta`` (or
``response.function_call_arguments.delta``), then ``response.completed`` or
``response.incomplete``, each with a ``sequence_number``.

Example:
    >>> payload = responses_answer({"model": "m", "input": "hi"}).payload
    >>> payload["status"], payload["output"][0]["content"][0]["text"]
    ('completed', 'mock reply to: hi')
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from apiexec.mock.answers.chat import Tool, chosen_tool
from apiexec.mock.answers.common import (
    Answer,
    BadRequest,
    completion_budget,
    estimate_tokens,
    json_dumps,
    last_user_text,
    model_of,
    pieces,
    plain_reply,
    structured_reply,
    text_of,
)
from apiexec.mock.answers.schema import example_for
from apiexec.mock.wire import new_id, sse


def responses_answer(body: dict[str, Any]) -> Answer:
    """The ``response`` for ``body`` (and its events when ``stream`` is true)."""
    items = _input_items(body.get("input"))
    tools = _tools(body.get("tools"))
    choice = body.get("tool_choice", "auto")
    named = _named(choice)
    limit = completion_budget(body, "max_output_tokens")
    texts = [text_of(i.get("content")) or str(i.get("output", "")) for i in items]
    prompt = estimate_tokens(texts + [text_of(body.get("instructions"))], len(items))
    prompt += estimate_tokens([json_dumps(t.parameters) for t in tools], 0)
    last_role = items[-1].get("role", "tool") if items[-1].get("type", "message") == "message" else "tool"
    tool = chosen_tool(tools, None if choice == "auto" else choice, last_role, named=named)
    text_format = _text_format(body.get("text"))
    if tool is not None:
        arguments, completion, truncated = structured_reply(json_dumps(example_for(tool.parameters)), limit)
        item: dict[str, Any] = {"type": "function_call", "id": new_id("fc_"), "call_id": new_id("call_"),
                                "name": tool.name, "arguments": arguments, "status": "completed"}
    else:
        if text_format["type"] == "text":
            text, completion, reason = plain_reply(last_user_text(items), limit)
            truncated = reason == "length"
        else:
            schema = text_format.get("schema") if text_format["type"] == "json_schema" else None
            value = example_for(schema) if schema else {"reply": last_user_text(items)}
            text, completion, truncated = structured_reply(json_dumps(value), limit)
        item = {"type": "message", "id": new_id("msg_"), "status": "incomplete" if truncated else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
    payload = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if truncated else "completed",
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": limit,
        "max_tool_calls": None,
        "metadata": body.get("metadata") or {},
        "model": model_of(body),
        "output": [item],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": text_format, "verbosity": "medium"},
        "tool_choice": choice,
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
        "user": None,
    }
    events = _stream(payload) if body.get("stream") is True else None
    return Answer(payload, prompt + completion, events)


def _input_items(raw: object) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw or not all(isinstance(i, dict) for i in raw):
        raise BadRequest("'input' must be a string or a non-empty list of input items", "input")
    return raw


def _tools(raw: object) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("'tools' must be a list", "tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise BadRequest(f"'tools[{i}]' must be an object", f"tools[{i}]")
        if tool.get("type") != "function":
            continue  # built-in tools (web search, ...) are accepted and never called
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise BadRequest(f"'tools[{i}].name' must be a non-empty string", f"tools[{i}].name")
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        tools.append(Tool(tool["name"], parameters))
    return tools


def _named(choice: object) -> str | None:
    if choice in ("none", "auto", "required"):
        return None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return str(choice["name"])
    raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', 'name': ...}",
                     "tool_choice")


def _text_format(text: object) -> dict[str, Any]:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema" and isinstance(fmt, dict):
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise BadRequest("'text.format' of type json_schema needs 'name' and 'schema'", "text.format")
        return {"type": "json_schema", "name": fmt["name"], "schema": fmt["schema"],
                "strict": fmt.get("strict", False) is True, "description": fmt.get("description")}
    raise BadRequest("'text.format.type' must be 'text', 'json_object' or 'json_schema'", "text.format.type")


def _stream(payload: Mapping[str, Any]) -> list[bytes]:
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(sse({"type": kind, "sequence_number": len(events), **fields}, kind))

    start = dict(payload, status="in_progress", output=[], usage=None, incomplete_details=None)
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    for index, item in enumerate(payload["output"]):
        if item["type"] == "function_call":
            emit("response.output_item.added", output_index=index,
                 item=dict(item, arguments="", status="in_progress"))
            for piece in pieces(item["arguments"]):
                emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
            emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                 name=item["name"], arguments=item["arguments"])
        else:
            emit("response.output_item.added", output_index=index, item=dict(item, content=[], status="in_progress"))
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            emit("response.content_part.added", **where, part=dict(part, text=""))
            for piece in pieces(part["text"]) if part["text"] else []:
                emit("response.output_text.delta", **where, delta=piece, logprobs=[])
            emit("response.output_text.done", **where, text=part["text"], logprobs=[])
            emit("response.content_part.done", **where, part=part)
        emit("response.output_item.done", output_index=index, item=item)
    kind = "response.completed" if payload["status"] == "completed" else "response.incomplete"
    emit(kind, response=payload)
    return events
