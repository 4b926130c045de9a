"""The mock server's wire format: requests, replies, JSON and SSE framing, error bodies
and rate-limit headers, in the OpenAI or the Anthropic dialect.

Example:
    >>> format_duration(90.25)
    '1m30.25s'
    >>> sse({"a": 1}, "ping")
    b'event: ping\\ndata: {"a":1}\\n\\n'
    >>> error_reply(404, "no such file").body
    b'{"error":{"message":"no such file","type":"invalid_request_error","param":null,"code":null}}'
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Final

from apiexec.mock.oracle import Decision, RateLimiter, RateState

_EPSILON: Final = 1e-9


def new_id(prefix: str) -> str:
    """A fresh random id such as ``"req_3f2a..."`` (24 hex digits after the prefix)."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def sse(data: object, event: str | None = None) -> bytes:
    """One server-sent event: JSON (or a literal string) data, with an optional name."""
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {body}\n\n".encode()


@dataclass
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # keys in lower case
    body: bytes
    query: str = ""  # the raw query string, without "?"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    events: list[bytes] | None = None  # sent with chunked transfer encoding
    delay_s: float = 0.0
    drop: bool = False
    close: bool = False
    cut_after: int | None = None  # a truncated answer: events (or half the body) sent, then the socket is cut
    rate: RateState | None = None
    limiter: RateLimiter | None = None  # the limiter that decided (per key), for the rate-limit headers


_OPENAI_ERROR_TYPES: Final[Mapping[int, str]] = {
    401: "invalid_request_error",
    403: "permission_error",
    408: "timeout",
    409: "conflict",
    429: "requests",
}
_ANTHROPIC_ERROR_TYPES: Final[Mapping[int, str]] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    402: "billing_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def json_reply(status: int, payload: object) -> Reply:
    """A JSON answer."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, body, {"Content-Type": "application/json"})


def bytes_reply(data: bytes, content_type: str) -> Reply:
    """A 200 with a raw body (file contents, JSONL results)."""
    return Reply(200, data, {"Content-Type": content_type})


def openai_error_body(
    status: int, message: str, param: str | None = None, *, kind: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = kind or _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def anthropic_error_body(status: int, message: str, *, kind: str | None = None) -> dict[str, Any]:
    """Anthropic's error JSON (the ``request_id`` is added when the reply gets its id)."""
    kind = kind or _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_reply(
    status: int,
    message: str,
    *,
    anthropic: bool = False,
    kind: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> Reply:
    """A JSON error in the OpenAI shape, or the Anthropic one."""
    if anthropic:
        return json_reply(status, anthropic_error_body(status, message, kind=kind))
    return json_reply(status, openai_error_body(status, message, param, kind=kind, code=code))


def with_request_id(reply: Reply, request_id: str) -> None:
    """Put ``request_id`` into an Anthropic error body, as Anthropic does."""
    try:
        payload = json.loads(reply.body)
    except ValueError:
        return
    if isinstance(payload, dict) and payload.get("type") == "error":
        payload["request_id"] = request_id
        reply.body = json.dumps(payload, separators=(",", ":")).encode()


def status_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"mock server fault: {status} {phrase}"


def rate_limited_reply(retry_after_ms: int, message: str, *, anthropic: bool, kind: str = "requests") -> Reply:
    reply = error_reply(429, message, anthropic=anthropic, kind=None if anthropic else kind,
                         code="rate_limit_exceeded")
    reply.headers["retry-after-ms"] = str(retry_after_ms)
    reply.headers["retry-after"] = str(max(1, math.ceil(retry_after_ms / 1000)))
    return reply


def denied_reply(decision: Decision, *, anthropic: bool) -> Reply:
    retry_ms = max(1, math.ceil(decision.retry_after_s * 1000))
    if decision.too_large:
        message = "Request too large for the tokens per min (TPM) limit; it can never be admitted."
    else:
        message = f"Rate limit reached for {decision.limited_by} per min. Please try again in {retry_ms}ms."
    reply = rate_limited_reply(retry_ms, message, anthropic=anthropic, kind=decision.limited_by)
    reply.rate = decision.state
    return reply


def format_duration(seconds: float) -> str:
    """Go duration format as in OpenAI headers: ``"12ms"``, ``"1.5s"``, ``"6m0s"``.

    Rounded up to the millisecond, so that waiting this long is always enough.
    """
    ms = math.ceil(seconds * 1000 - _EPSILON)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest_ms = divmod(ms, 60_000)
    secs = f"{rest_ms / 1000:.3f}".rstrip("0").rstrip(".")
    if minutes == 0:
        return f"{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{f'{hours}h' if hours else ''}{minutes}m{secs}s"


def format_rfc3339(seconds_from_now: float) -> str:
    """UTC time ``seconds_from_now`` ahead, rounded up to the second."""
    moment = datetime.fromtimestamp(math.ceil(time.time() + seconds_from_now), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ratelimit_headers(state: RateState, *, anthropic: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, limit in (("requests", state.requests), ("tokens", state.tokens)):
        if limit is None:
            continue
        per_minute = str(max(1, round(limit.per_minute)))
        headers[f"x-ratelimit-limit-{name}"] = per_minute
        headers[f"x-ratelimit-remaining-{name}"] = str(limit.remaining)
        headers[f"x-ratelimit-reset-{name}"] = format_duration(limit.reset_s)
        if anthropic:
            headers[f"anthropic-ratelimit-{name}-limit"] = per_minute
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(limit.remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = format_rfc3339(limit.reset_s)
    return headers


