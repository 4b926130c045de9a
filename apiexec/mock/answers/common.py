"""Pieces every answer uses: request parsing, token estimates, the reply text, logprobs.

Usage is estimated, not tokenized: ``prompt_tokens = ceil(chars / 4) + 3 per
message`` over all message text (plus the system prompt or instructions), and a
plain text reply costs ``min(max_tokens, 12)`` completion tokens. Structured
output (tool arguments, JSON) costs ``ceil(chars / 4)``.

Example:
    >>> estimate_tokens(["abcdefgh"], messages=1)
    5
    >>> reply_text([{"role": "user", "content": "hi"}], DEFAULT_COMPLETION_TOKENS, truncated=False)
    'mock reply to: hi'
    >>> cut_at_stop("a b STOP c", ["STOP"])
    ('a b ', 'STOP')
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from apiexec.mock.config import CHARS_PER_TOKEN, DEFAULT_COMPLETION_TOKENS, DEFAULT_MODEL, TOKENS_PER_MESSAGE, is_int

REPLY_PREFIX: Final = "mock reply to: "
REPLY_QUOTE_CHARS: Final = 40
MAX_CHOICES: Final = 128
MAX_TOP_LOGPROBS: Final = 20


class BadRequest(Exception):
    """The request body is invalid; the message goes back to the client (a 400).

    Args:
        message: What is wrong, naming the field.
        param: The field, as OpenAI's ``error.param`` names it.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Answer:
    """What one model request produced.

    Attributes:
        payload: The JSON body of the answer.
        total_tokens: What the rate limiter charges.
        events: Server-sent events, when the request asked to stream.
    """

    payload: dict[str, Any]
    total_tokens: int
    events: list[bytes] | None = None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`BadRequest`."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value


def text_of(content: object) -> str:
    """Text of a message content: a string or a list of parts carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def estimate_tokens(texts: Sequence[str], messages: int) -> int:
    """``ceil(chars / 4)`` over ``texts`` plus 3 per message."""
    chars = sum(len(text) for text in texts)
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * messages


def tokens_of_text(text: str) -> int:
    """What a structured output (JSON, tool arguments) costs: ``ceil(chars / 4)``, at least 1."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def messages_of(body: Mapping[str, Any], name: str = "messages") -> list[dict[str, Any]]:
    """The non-empty list of message objects in ``body[name]``."""
    messages = body.get(name)
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest(f"'{name}' must be a non-empty list of objects", name)
    return messages


def model_of(body: Mapping[str, Any], *, required: bool = False) -> str:
    """The request's model (``mock-model`` when absent and not required)."""
    model = body.get("model")
    if isinstance(model, str) and model:
        return model
    if required or model is not None:
        raise BadRequest("'model' must be a non-empty string", "model")
    return DEFAULT_MODEL


def positive_int(body: Mapping[str, Any], name: str, default: int | None, *, maximum: int | None = None) -> int | None:
    """``body[name]`` as an int in ``1..maximum``, or ``default`` when absent."""
    value = body.get(name)
    if value is None:
        return default
    if not is_int(value) or value < 1 or (maximum is not None and value > maximum):
        bound = f" <= {maximum}" if maximum is not None else ""
        raise BadRequest(f"'{name}' must be an integer >= 1{bound}, got {value!r}", name)
    return int(value)


def completion_budget(body: Mapping[str, Any], *names: str) -> int | None:
    """The first of ``names`` given, as a positive int (None: no limit)."""
    for name in names:
        limit = positive_int(body, name, None)
        if limit is not None:
            return limit
    return None


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    last = users[-1] if users else messages[-1]
    return text_of(last.get("content"))


def reply_text(messages: Sequence[Mapping[str, Any]], tokens: int, truncated: bool) -> str:
    """``"mock reply to: "`` and the start of the last user message, cut to ``tokens`` when truncated."""
    text = REPLY_PREFIX + last_user_text(messages)[:REPLY_QUOTE_CHARS]
    return text[: tokens * CHARS_PER_TOKEN] if truncated else text


def plain_reply(quoted: str, limit: int | None, stops: Sequence[str] = ()) -> tuple[str, int, str]:
    """The text reply to ``quoted``: (text, completion tokens, why it ended).

    The reason is ``"stop"``, ``"length"`` (``limit`` cut it) or ``"stop_sequence"``.
    """
    text = REPLY_PREFIX + quoted[:REPLY_QUOTE_CHARS]
    tokens = DEFAULT_COMPLETION_TOKENS
    if limit is not None and limit < tokens:
        return text[: limit * CHARS_PER_TOKEN], limit, "length"
    cut, stop = cut_at_stop(text, stops)
    return (cut, min(tokens, tokens_of_text(cut)), "stop_sequence") if stop else (text, tokens, "stop")


def structured_reply(text: str, limit: int | None) -> tuple[str, int, bool]:
    """A JSON reply: (text, completion tokens, truncated by ``limit``)."""
    tokens = tokens_of_text(text)
    if limit is not None and limit < tokens:
        return text[: limit * CHARS_PER_TOKEN], limit, True
    return text, tokens, False


def stop_sequences(body: Mapping[str, Any], name: str) -> list[str]:
    """``body[name]``: a string or a list of non-empty strings (OpenAI allows up to 4)."""
    value = body.get(name)
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest(f"'{name}' must be a string or a list of non-empty strings", name)
    return stops


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to the earliest stop sequence, and that sequence (None when none occurs)."""
    found = [(text.find(stop), stop) for stop in stops if stop in text]
    if not found:
        return text, None
    index, stop = min(found)
    return text[:index], stop


def pieces(text: str) -> list[str]:
    """``text`` in stream-sized pieces (words with their trailing space)."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def fake_logprob(token: str, rank: int = 0) -> float:
    """A deterministic log probability for ``token``: small, and lower for lower ranks."""
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return -round(digest[0] / 2550 + rank * 0.75, 4)


def token_logprobs(text: str, top: int) -> list[dict[str, Any]]:
    """OpenAI chat ``logprobs.content`` entries for ``text``, ``top`` alternatives each."""
    entries = []
    for piece in pieces(text) if text else []:
        alternatives = [piece] + [f"{piece.strip() or '_'}{i}" for i in range(1, top)]
        entries.append({
            "token": piece,
            "logprob": fake_logprob(piece),
            "bytes": list(piece.encode("utf-8")),
            "top_logprobs": [
                {"token": alt, "logprob": fake_logprob(alt, rank), "bytes": list(alt.encode("utf-8"))}
                for rank, alt in enumerate(alternatives[:top])
            ],
        })
    return entries


def json_dumps(value: object) -> str:
    """Compact JSON, as the providers send tool arguments."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
