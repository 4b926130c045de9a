"""The mock server's answers: what each model endpoint returns for a request body.

Usage is estimated, not tokenized: ``prompt_tokens = ceil(chars / 4) + 3 per
message`` over all message text (plus the system prompt or instructions), and
``completion_tokens = min(max_tokens, 12)``. Embedding inputs cost
``ceil(chars / 4)`` each.

Example:
    >>> answer = chat_answer({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    >>> answer.payload["choices"][0]["message"]["content"], answer.total_tokens
    ('mock reply to: hi', 16)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from apiexec.mock.config import (
    CHARS_PER_TOKEN,
    DEFAULT_COMPLETION_TOKENS,
    DEFAULT_MODEL,
    EMBEDDING_DIMENSIONS,
    TOKENS_PER_MESSAGE,
    is_int,
)
from apiexec.mock.wire import new_id, sse

REPLY_PREFIX: Final = "mock reply to: "
REPLY_QUOTE_CHARS: Final = 40

class BadRequest(Exception):
    """The request body is invalid; the message goes back to the client."""


@dataclass(frozen=True)
class Answer:
    payload: dict[str, Any]
    total_tokens: int
    events: list[bytes] | None = None  # server-sent events when streaming


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value


def _text_of(content: object) -> str:
    """Text of a message content: a string or a list of ``{"text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _estimate_tokens(texts: Sequence[str], messages: int) -> int:
    chars = sum(len(text) for text in texts)
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * messages


def _messages_of(body: Mapping[str, Any], name: str = "messages") -> list[dict[str, Any]]:
    messages = body.get(name)
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest(f"'{name}' must be a non-empty list of objects")
    return messages


def _model_of(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODEL


def _completion_budget(body: Mapping[str, Any], *names: str) -> tuple[int, bool]:
    """Completion tokens to produce and whether the limit truncated them."""
    for name in names:
        limit = body.get(name)
        if limit is None:
            continue
        if not is_int(limit) or limit < 1:
            raise BadRequest(f"'{name}' must be a positive integer")
        return min(limit, DEFAULT_COMPLETION_TOKENS), limit < DEFAULT_COMPLETION_TOKENS
    return DEFAULT_COMPLETION_TOKENS, False


def _reply_text(messages: Sequence[Mapping[str, Any]], tokens: int, truncated: bool) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    last = users[-1] if users else messages[-1]
    text = REPLY_PREFIX + _text_of(last.get("content"))[:REPLY_QUOTE_CHARS]
    return text[: tokens * CHARS_PER_TOKEN] if truncated else text


def _pieces(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [""]


def chat_answer(body: dict[str, Any]) -> Answer:
    messages = _messages_of(body)
    prompt = _estimate_tokens([_text_of(m.get("content")) for m in messages], len(messages))
    completion, truncated = _completion_budget(body, "max_completion_tokens", "max_tokens")
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    content = _reply_text(messages, completion, truncated)
    payload = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model_of(body),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "length" if truncated else "stop",
            }
        ],
        "usage": usage,
    }
    events = _chat_stream(payload, _include_usage(body)) if body.get("stream") is True else None
    return Answer(payload, prompt + completion, events)


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chat_stream(payload: Mapping[str, Any], include_usage: bool) -> list[bytes]:
    base = {key: payload[key] for key in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    choice = payload["choices"][0]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        if include_usage:
            out["usage"] = None
        return out

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in _pieces(choice["message"]["content"])]
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append(dict(base, choices=[], usage=payload["usage"]))
    return [sse(c) for c in chunks] + [sse("[DONE]")]


def _embeddings_answer(body: dict[str, Any]) -> Answer:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise BadRequest("'input' must be a string or a non-empty list of strings")
    tokens = sum(_estimate_tokens([text], 0) for text in inputs)
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _embedding(t)} for i, t in enumerate(inputs)],
        "model": _model_of(body),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Answer(payload, tokens)


def _embedding(text: str) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(EMBEDDING_DIMENSIONS)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def _messages_answer(body: dict[str, Any]) -> Answer:
    messages = _messages_of(body)
    texts = [_text_of(m.get("content")) for m in messages] + [_text_of(body.get("system"))]
    prompt = _estimate_tokens(texts, len(messages))
    completion, truncated = _completion_budget(body, "max_tokens")
    payload = {
        "id": new_id("msg_mock"),
        "type": "message",
        "role": "assistant",
        "model": _model_of(body),
        "content": [{"type": "text", "text": _reply_text(messages, completion, truncated)}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }
    events = _messages_stream(payload) if body.get("stream") is True else None
    return Answer(payload, prompt + completion, events)


def _messages_stream(payload: Mapping[str, Any]) -> list[bytes]:
    usage = payload["usage"]
    start = dict(payload, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    events = [
        sse({"type": "message_start", "message": start}, "message_start"),
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"),
    ]
    for piece in _pieces(payload["content"][0]["text"]):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        events.append(sse(delta, "content_block_delta"))
    stop = {"stop_reason": payload["stop_reason"], "stop_sequence": None}
    events += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse({"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}},
             "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def _responses_answer(body: dict[str, Any]) -> Answer:
    if body.get("stream") is True:
        raise BadRequest("the mock server does not stream /v1/responses")
    raw = body.get("input")
    messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else _messages_of(body, "input")
    texts = [_text_of(m.get("content")) for m in messages] + [_text_of(body.get("instructions"))]
    prompt = _estimate_tokens(texts, len(messages))
    completion, truncated = _completion_budget(body, "max_output_tokens")
    text = _reply_text(messages, completion, truncated)
    message = {
        "type": "message",
        "id": new_id("msg_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    payload = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if truncated else "completed",
        "model": _model_of(body),
        "output": [message],
        "output_text": text,
        "usage": {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion},
    }
    return Answer(payload, prompt + completion)


def _models_payload() -> dict[str, Any]:
    model = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "apiexec-mock"}
    return {"object": "list", "data": [model]}


def _health_payload() -> dict[str, Any]:
    return {"status": "ok"}


@dataclass(frozen=True)
class ApiRoute:
    build: Callable[[dict[str, Any]], Answer]
    anthropic: bool = False


API_ROUTES: Final[Mapping[str, ApiRoute]] = {
    "/v1/chat/completions": ApiRoute(chat_answer),
    "/v1/embeddings": ApiRoute(_embeddings_answer),
    "/v1/messages": ApiRoute(_messages_answer, anthropic=True),
    "/v1/responses": ApiRoute(_responses_answer),
}
INFO_ROUTES: Final[Mapping[str, Callable[[], dict[str, Any]]]] = {
    "/v1/models": _models_payload,
    "/health": _health_payload,
}

