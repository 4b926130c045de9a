"""Assembling streamed events into the message a non-streamed call returns.

A streamed call yields many small events; most callers also want the final
message, shaped like the answer of the same request without streaming, so
that code reading ``choices[0].message.content`` or ``content[0].text`` and
:func:`apiexec.llm.tokens.usage_tokens` work on either.

========================  ==============================================
events                    assembled into
========================  ==============================================
OpenAI chat chunks        a ``chat.completion``: ``id``, ``model``,
                          ``choices[i].message`` (role, content,
                          refusal, tool_calls), ``finish_reason``, and
                          ``usage`` when the stream carried it
                          (``stream_options={"include_usage": True}``)
Anthropic message events  a ``message``: ``content`` blocks (text,
                          tool_use with its parsed ``input``, thinking),
                          ``stop_reason``, ``usage`` (input tokens from
                          ``message_start``, output tokens from the last
                          ``message_delta``)
OpenAI Responses events   the ``response`` of ``response.completed``
anything else             the list of events, unchanged
========================  ==============================================

Left out: OpenAI's legacy ``function_call`` deltas and ``logprobs``.

Example:
    >>> chunks = [
    ...     {"id": "c1", "object": "chat.completion.chunk", "model": "m",
    ...      "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
    ...     {"id": "c1", "object": "chat.completion.chunk", "model": "m",
    ...      "choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}]},
    ... ]
    >>> message = assemble(chunks)
    >>> message["choices"][0]["message"]["content"], message["choices"][0]["finish_reason"]
    ('Hi!', 'stop')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Keys of the first chunk copied to the assembled chat completion.
_CHAT_KEYS = ("id", "created", "model", "system_fingerprint", "service_tier")
#: Responses API events that carry the finished response.
_RESPONSE_DONE = ("response.completed", "response.incomplete", "response.failed")


def assemble(events: Iterable[Mapping[str, Any]]) -> Any:
    """Assemble streamed events into the final message, recognising the API.

    Args:
        events: The parsed events of one stream, in order.

    Returns:
        A ``chat.completion`` dict, an Anthropic ``message`` dict, a Responses
        API ``response`` dict, or (for a stream of another shape, or an empty
        one) the list of events.
    """
    events = list(events)
    for event in events:
        kind = event.get("type")
        if kind == "message_start":
            return assemble_anthropic_message(events)
        if kind in _RESPONSE_DONE and isinstance(event.get("response"), Mapping):
            return dict(event["response"])
        if event.get("object") == "chat.completion.chunk" or "choices" in event:
            return assemble_chat_completion(events)
    return events


# -- OpenAI chat completions ----------------------------------------------------------------


def assemble_chat_completion(chunks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Join ``chat.completion.chunk`` events into one ``chat.completion``.

    Content and refusal pieces are concatenated per choice; streamed tool
    calls are merged by their ``index`` (their ``arguments`` strings
    concatenated). The last non-null ``usage`` wins.

    Args:
        chunks: The parsed chunks, in order (without ``[DONE]``).

    Returns:
        A dict shaped like the non-streamed answer.
    """
    completion: dict[str, Any] = {"object": "chat.completion"}
    choices: dict[int, _ChoiceParts] = {}
    for chunk in chunks:
        for key in _CHAT_KEYS:
            if key not in completion and chunk.get(key) is not None:
                completion[key] = chunk[key]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            choices.setdefault(index, _ChoiceParts(index)).add(choice)
        if chunk.get("usage") is not None:
            completion["usage"] = chunk["usage"]
    completion["choices"] = [choices[i].result() for i in sorted(choices)]
    return _ordered(completion, ("id", "object", "created", "model", "choices", "usage"))


class _ChoiceParts:
    """The pieces of one streamed choice."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta") or {}
        self.role = delta.get("role") or self.role
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            self._add_tool_call(call)
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]

    def _add_tool_call(self, delta: Mapping[str, Any]) -> None:
        call = self.tool_calls.setdefault(
            delta.get("index", len(self.tool_calls)),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        for key in ("id", "type"):
            if delta.get(key):
                call[key] = delta[key]
        function = delta.get("function") or {}
        for key in ("name", "arguments"):
            if isinstance(function.get(key), str):
                call["function"][key] += function[key]

    def result(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.content or not self.tool_calls else None,
        }
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return {"index": self.index, "message": message, "finish_reason": self.finish_reason}


# -- Anthropic messages ---------------------------------------------------------------------


def assemble_anthropic_message(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Join Anthropic message-stream events into one ``message``.

    Text and thinking deltas are concatenated per content block; a
    ``tool_use`` block's ``input_json_delta`` pieces are joined and parsed
    at the end (a piece that is not valid JSON is kept as the raw string).

    Args:
        events: The parsed events, in order (``ping`` events are ignored).

    Returns:
        A dict shaped like the non-streamed answer.
    """
    message: dict[str, Any] = {"type": "message", "role": "assistant", "content": []}
    blocks: dict[int, dict[str, Any]] = {}
    partial_json: dict[int, list[str]] = {}
    for event in events:
        kind = event.get("type")
        if kind == "message_start":
            message.update(event.get("message") or {})
            message["usage"] = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            blocks[event.get("index", len(blocks))] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            index = event.get("index", 0)
            _apply_block_delta(blocks.setdefault(index, {}), event.get("delta") or {}, partial_json.setdefault(index, []))
        elif kind == "message_delta":
            message.update(event.get("delta") or {})
            usage = {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            message["usage"] = {**(message.get("usage") or {}), **usage}
    for index, pieces in partial_json.items():
        if pieces:
            blocks[index]["input"] = _parse_json("".join(pieces))
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return _ordered(message, ("id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"))


def _apply_block_delta(block: dict[str, Any], delta: Mapping[str, Any], partial_json: list[str]) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = block.get("text", "") + delta.get("text", "")
    elif kind == "input_json_delta":
        partial_json.append(delta.get("partial_json", ""))
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature")
    elif kind == "citations_delta":
        block.setdefault("citations", []).append(delta.get("citation"))


def _ordered(fields: dict[str, Any], first: Sequence[str]) -> dict[str, Any]:
    """The same dict with keys in the order of the non-streamed answer."""
    return {**{key: fields[key] for key in first if key in fields}, **fields}


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
