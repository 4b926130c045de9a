"""A local mock of the OpenAI and Anthropic HTTP APIs, with limits and faults.

The mock server lets ``apiexec run ... --mock`` and ``apiexec mock-server`` run a
batch end to end with no API key and no network, and it is the fault-injection
server of the test suite: real HTTP/1.1 over loopback sockets, keep-alive,
latency, a server-side rate limiter and scripted or random failures.

Endpoints (JSON bodies; answers are deterministic for a given request):

=======  =========================  ==========================================
POST     ``/v1/chat/completions``   OpenAI chat completion, or SSE chunks
POST     ``/v1/embeddings``         OpenAI embeddings (8 floats per input)
POST     ``/v1/messages``           Anthropic message, or Anthropic SSE events
POST     ``/v1/responses``          OpenAI Responses API (no streaming)
GET      ``/v1/models``             one model, ``mock-model``
GET      ``/health``                ``{"status": "ok"}``
=======  =========================  ==========================================

Usage is estimated, not tokenized: ``prompt_tokens = ceil(chars / 4) + 3 per
message`` over all message text (plus the system prompt or instructions), and
``completion_tokens = min(max_tokens, 12)``. Embedding inputs cost
``ceil(chars / 4)`` each.

What happens to a POST to a model endpoint, in order:

1. ``api_key`` check: ``401`` unless ``Authorization: Bearer <key>`` or
   ``x-api-key: <key>`` matches (the key is never logged or echoed).
2. Fault: the ``x-mock-fault`` header if present, else the next scripted fault
   (:meth:`MockServer.script`), else a random one (``drop_rate``, ``fail_rate``).
   A status fault answers at once and consumes no rate-limit capacity.
3. Body parsing (``400`` when it is not a JSON object or misses a field).
4. Rate limiter, decided on arrival: a continuous token bucket for requests
   and one for tokens (the response's ``total_tokens``), checked atomically; a
   denied request consumes nothing and gets ``429``.
5. Latency (``latency_ms`` +/- ``latency_jitter_ms``, plus any ``slow:MS``
   fault), slept in the connection's thread outside every lock; ``stop()``
   cuts it short.

Fault syntax (``script()`` and the ``x-mock-fault`` header): ``"500"``,
``"503"`` or any status from 400 to 599; ``"429"`` (``retry-after-ms: 1000``);
``"429:1500"`` (``retry-after-ms: 1500``); ``"drop"`` (close the socket without
an answer); ``"slow:MS"`` (MS more milliseconds, then a normal answer).

Headers on every answer: ``x-request-id``; when limits are configured,
``x-ratelimit-limit-*`` (the per-minute limit, rounded), ``x-ratelimit-remaining-*``
(whole units left in the bucket) and ``x-ratelimit-reset-*`` (time until the
bucket is full again, as OpenAI means it, in Go duration format: ``"12ms"``,
``"1.5s"``, ``"6m0s"``), for ``requests`` and ``tokens``. ``/v1/messages``
adds ``request-id`` and ``anthropic-ratelimit-{requests,tokens}-{limit,
remaining,reset}`` (reset as an RFC 3339 UTC time). A ``429`` carries
``retry-after-ms`` (milliseconds until the request would be admitted) and
``retry-after`` (whole seconds, rounded up, at least 1). Error bodies are
OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``), except on
``/v1/messages`` where they are Anthropic-shaped
(``{"type": "error", "error": {"type", "message"}}``).

Faults apply to the model endpoints only; ``/health`` and ``/v1/models`` never
fail and are not rate limited.

Example::

    import requests
    from apiexec.mock.server import MockServer, MockServerConfig

    config = MockServerConfig(requests_per_minute=600, request_burst=2)
    with MockServer(config) as server:
        server.script(["503", "drop"])
        url = f"{server.url}/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert requests.post(url, json=body).status_code == 503
        print(server.stats.by_status)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import math
import random
import re
import socket
import socketserver
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast
from urllib.parse import urlsplit

from apiexec.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_MODEL: Final = "mock-model"
DEFAULT_COMPLETION_TOKENS: Final = 12
DEFAULT_RETRY_AFTER_MS: Final = 1000
EMBEDDING_DIMENSIONS: Final = 8
CHARS_PER_TOKEN: Final = 4
TOKENS_PER_MESSAGE: Final = 3
REPLY_PREFIX: Final = "mock reply to: "
REPLY_QUOTE_CHARS: Final = 40
REQUEST_QUEUE_SIZE: Final = 256
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
FAULT_HEADER: Final = "x-mock-fault"

_POLL_INTERVAL_S: Final = 0.05  # bounds how long stop() waits for the accept loop
_IDLE_TIMEOUT_S: Final = 120.0  # an idle keep-alive connection is closed after this
_MIN_STATUS: Final = 400
_MAX_STATUS: Final = 599
_EPSILON: Final = 1e-9  # float slack so a client waiting retry-after-ms is admitted


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class MockServerConfig:
    """How the mock server behaves.

    Attributes:
        host: Interface to listen on.
        port: TCP port; 0 picks a free one.
        latency_ms: Delay added before every answer.
        latency_jitter_ms: Uniform jitter, +/- this much, around ``latency_ms``.
        requests_per_minute: Refill rate of the request bucket; None: no limit.
        request_burst: Capacity of the request bucket; default a minute's worth.
        tokens_per_minute: Refill rate of the token bucket; None: no limit.
        token_burst: Capacity of the token bucket; default a minute's worth.
        fail_rate: Probability that a model request gets a 500 or 503.
        drop_rate: Probability that a model request gets its socket closed.
        seed: Seed of the random faults and jitter, for reproducible runs.
        api_key: When set, model requests must present it (never shown in repr).
        record_bodies: Keep every raw request body in :attr:`MockServer.stats`.

    Raises:
        ConfigError: (a ``ValueError``) naming the first invalid field.

    Example::

        MockServerConfig(latency_ms=50, requests_per_minute=600, fail_rate=0.05, seed=1)
    """

    host: str = DEFAULT_HOST
    port: int = 0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    requests_per_minute: float | None = None
    request_burst: float | None = None
    tokens_per_minute: float | None = None
    token_burst: float | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int | None = None
    api_key: str | None = field(default=None, repr=False)
    record_bodies: bool = False

    def __post_init__(self) -> None:
        _require(isinstance(self.host, str) and bool(self.host), "host", "must be a non-empty string")
        _require(_is_int(self.port) and 0 <= self.port <= 65535, "port", "must be an int in 0..65535")
        _check_number("latency_ms", self.latency_ms)
        _check_number("latency_jitter_ms", self.latency_jitter_ms)
        _check_limit("requests_per_minute", self.requests_per_minute, "request_burst", self.request_burst)
        _check_limit("tokens_per_minute", self.tokens_per_minute, "token_burst", self.token_burst)
        _check_number("fail_rate", self.fail_rate, maximum=1.0)
        _check_number("drop_rate", self.drop_rate, maximum=1.0)
        _require(self.fail_rate + self.drop_rate <= 1.0, "drop_rate", "fail_rate + drop_rate must not exceed 1")
        _require(self.seed is None or _is_int(self.seed), "seed", "must be an int or None")
        _require(
            self.api_key is None or (isinstance(self.api_key, str) and bool(self.api_key)),
            "api_key",
            "must be a non-empty string or None",
        )
        _require(isinstance(self.record_bodies, bool), "record_bodies", "must be a bool")


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(name, message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(name: str, value: float, *, maximum: float = math.inf) -> None:
    _require(_is_number(value), name, "must be a finite number")
    _require(0.0 <= value <= maximum, name, f"must be between 0 and {maximum:g}")


def _check_limit(name: str, rate: float | None, burst_name: str, burst: float | None) -> None:
    if rate is not None:
        _require(_is_number(rate) and rate > 0, name, "must be a positive number or None")
    if burst is not None:
        _require(rate is not None, burst_name, f"needs {name}")
        _require(_is_number(burst) and burst >= 1, burst_name, "must be a number >= 1 or None")


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class MockServerStats:
    """A snapshot of what the server saw since start or :meth:`MockServer.reset_stats`.

    A request is counted as answered (or dropped) just before its answer is
    written, so a client that has its response already sees it in the stats.

    Attributes:
        requests: Requests received (answered, failed or dropped).
        by_status: Count of answers per HTTP status.
        rate_limited: Count of 429 answers (limiter and faults).
        dropped: Requests whose socket was closed without an answer.
        connections: TCP connections accepted.
        max_in_flight: Most requests being handled at the same time.
        in_flight: Requests being handled now (received, not yet answered).
        bodies: Raw request bodies in arrival order (only with ``record_bodies``).
        paths: Count of requests per path.
    """

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    dropped: int = 0
    connections: int = 0
    max_in_flight: int = 0
    in_flight: int = 0
    bodies: list[bytes] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)


class _StatsRecorder:
    """Thread-safe counters behind :class:`MockServerStats`."""

    def __init__(self, record_bodies: bool) -> None:
        self._lock = threading.Lock()
        self._record_bodies = record_bodies
        self._in_flight = 0
        self._clear_locked()

    def _clear_locked(self) -> None:
        self._requests = 0
        self._by_status: Counter[int] = Counter()
        self._dropped = 0
        self._connections = 0
        self._max_in_flight = self._in_flight
        self._bodies: list[bytes] = []
        self._paths: Counter[str] = Counter()

    def reset(self) -> None:
        with self._lock:
            self._clear_locked()

    def connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    def request_started(self, path: str, body: bytes) -> None:
        with self._lock:
            self._requests += 1
            self._paths[path] += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self._record_bodies:
                self._bodies.append(body)

    def request_finished(self, status: int | None) -> None:
        """Record the end of a request; ``status`` None means it was dropped."""
        with self._lock:
            self._in_flight -= 1
            if status is None:
                self._dropped += 1
            else:
                self._by_status[status] += 1

    def snapshot(self) -> MockServerStats:
        with self._lock:
            return MockServerStats(
                requests=self._requests,
                by_status=Counter(self._by_status),
                rate_limited=self._by_status[429],
                dropped=self._dropped,
                connections=self._connections,
                max_in_flight=self._max_in_flight,
                in_flight=self._in_flight,
                bodies=list(self._bodies),
                paths=Counter(self._paths),
            )


# --------------------------------------------------------------------------- rate limiter


@dataclass(frozen=True)
class _LimitState:
    per_minute: float
    remaining: int
    reset_s: float  # until the bucket is full again


@dataclass(frozen=True)
class _RateState:
    requests: _LimitState | None = None
    tokens: _LimitState | None = None


@dataclass(frozen=True)
class _Decision:
    admitted: bool
    state: _RateState
    retry_after_s: float = 0.0
    limited_by: str = ""  # "requests" or "tokens" when denied
    too_large: bool = False  # the token cost exceeds the bucket's capacity


class _Bucket:
    """A continuous token bucket; the caller holds the lock.

    Written apart from :class:`apiexec.limits.bucket.TokenBucket` on purpose: the
    mock server is the oracle the client's limiter is tested against, so a
    bug in one must not hide in both.
    """

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.per_minute = per_minute
        self.capacity = capacity
        self._rate = per_minute / 60.0
        self._level = capacity
        self._stamp = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._level = min(self.capacity, self._level + elapsed * self._rate)
        self._stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        missing = amount - self._level
        return 0.0 if missing <= _EPSILON else missing / self._rate

    def take(self, amount: float) -> None:
        self._level -= amount

    def state(self) -> _LimitState:
        reset = (self.capacity - self._level) / self._rate
        return _LimitState(self.per_minute, max(0, math.floor(self._level + _EPSILON)), max(0.0, reset))


class _RateLimiter:
    """Request and token buckets, checked and charged atomically."""

    def __init__(self, config: MockServerConfig, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        now = clock()
        self._requests = _new_bucket(config.requests_per_minute, config.request_burst, now)
        self._tokens = _new_bucket(config.tokens_per_minute, config.token_burst, now)

    @property
    def configured(self) -> bool:
        return self._requests is not None or self._tokens is not None

    def acquire(self, tokens: int) -> _Decision:
        """Admit one request costing ``tokens``, or deny it without charging."""
        with self._lock:
            self._refill_locked()
            waits = self._waits_locked(tokens)
            if waits:
                limited_by = max(waits, key=lambda name: waits[name])
                too_large = self._tokens is not None and tokens > self._tokens.capacity
                return _Decision(False, self._state_locked(), waits[limited_by], limited_by, too_large)
            if self._requests is not None:
                self._requests.take(1)
            if self._tokens is not None:
                self._tokens.take(tokens)
            return _Decision(True, self._state_locked())

    def state(self) -> _RateState:
        with self._lock:
            self._refill_locked()
            return self._state_locked()

    def _refill_locked(self) -> None:
        now = self._clock()
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)

    def _waits_locked(self, tokens: int) -> dict[str, float]:
        waits = {}
        if self._requests is not None and self._requests.wait_for(1) > 0:
            waits["requests"] = self._requests.wait_for(1)
        if self._tokens is not None and self._tokens.wait_for(tokens) > 0:
            waits["tokens"] = self._tokens.wait_for(tokens)
        return waits

    def _state_locked(self) -> _RateState:
        return _RateState(
            requests=None if self._requests is None else self._requests.state(),
            tokens=None if self._tokens is None else self._tokens.state(),
        )


def _new_bucket(per_minute: float | None, burst: float | None, now: float) -> _Bucket | None:
    if per_minute is None:
        return None
    return _Bucket(per_minute, per_minute if burst is None else burst, now)


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Fault:
    status: int | None = None
    retry_after_ms: int | None = None
    extra_delay_s: float = 0.0
    drop: bool = False


def _parse_fault(spec: str) -> _Fault:
    """Parse ``"500"``, ``"429:1500"``, ``"drop"`` or ``"slow:250"``.

    Raises:
        ValueError: The spec is not in that syntax.
    """
    text = str(spec).strip().lower()
    if text == "drop":
        return _Fault(drop=True)
    name, sep, arg = text.partition(":")
    if name == "slow" and sep:
        return _Fault(extra_delay_s=_parse_ms(spec, arg) / 1000.0)
    status = int(name) if name.isdigit() else 0
    if not _MIN_STATUS <= status <= _MAX_STATUS:
        raise ValueError(f"invalid fault {spec!r}: expected a status 400-599, 'drop' or 'slow:MS'")
    if not sep:
        return _Fault(status=status)
    if status != HTTPStatus.TOO_MANY_REQUESTS:
        raise ValueError(f"invalid fault {spec!r}: only 429 takes a retry delay")
    return _Fault(status=status, retry_after_ms=math.ceil(_parse_ms(spec, arg)))


def _parse_ms(spec: str, arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"invalid fault {spec!r}: milliseconds must be a number >= 0")
    return value


class _FaultPlan:
    """Chooses the fault, if any, of each model request."""

    def __init__(self, config: MockServerConfig) -> None:
        self._lock = threading.Lock()
        self._scripted: deque[_Fault] = deque()
        self._rng = random.Random(config.seed)
        self._fail_rate = config.fail_rate
        self._drop_rate = config.drop_rate

    def script(self, specs: Iterable[str]) -> None:
        faults = [_parse_fault(spec) for spec in specs]  # all or nothing
        with self._lock:
            self._scripted.extend(faults)

    def pending(self) -> int:
        with self._lock:
            return len(self._scripted)

    def next(self, header: str | None) -> _Fault | None:
        """The fault of one request; the header wins and leaves the script alone.

        Raises:
            ValueError: The header value is not a valid fault.
        """
        if header is not None:
            return _parse_fault(header)
        with self._lock:
            if self._scripted:
                return self._scripted.popleft()
            return self._draw_locked()

    def _draw_locked(self) -> _Fault | None:
        if self._fail_rate == 0 and self._drop_rate == 0:
            return None
        draw = self._rng.random()
        if draw < self._drop_rate:
            return _Fault(drop=True)
        if draw < self._drop_rate + self._fail_rate:
            return _Fault(status=self._rng.choice((500, 503)))
        return None


# --------------------------------------------------------------------------- API answers


class _BadRequest(Exception):
    """The request body is invalid; the message goes back to the client."""


@dataclass(frozen=True)
class _Answer:
    payload: dict[str, Any]
    total_tokens: int
    events: list[bytes] | None = None  # server-sent events when streaming


def _parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise _BadRequest("request body must be a JSON object")
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
        raise _BadRequest(f"'{name}' must be a non-empty list of objects")
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
        if not _is_int(limit) or limit < 1:
            raise _BadRequest(f"'{name}' must be a positive integer")
        return min(limit, DEFAULT_COMPLETION_TOKENS), limit < DEFAULT_COMPLETION_TOKENS
    return DEFAULT_COMPLETION_TOKENS, False


def _reply_text(messages: Sequence[Mapping[str, Any]], tokens: int, truncated: bool) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    last = users[-1] if users else messages[-1]
    text = REPLY_PREFIX + _text_of(last.get("content"))[:REPLY_QUOTE_CHARS]
    return text[: tokens * CHARS_PER_TOKEN] if truncated else text


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {body}\n\n".encode()


def _chat_answer(body: dict[str, Any]) -> _Answer:
    messages = _messages_of(body)
    prompt = _estimate_tokens([_text_of(m.get("content")) for m in messages], len(messages))
    completion, truncated = _completion_budget(body, "max_completion_tokens", "max_tokens")
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    content = _reply_text(messages, completion, truncated)
    payload = {
        "id": _new_id("chatcmpl-"),
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
    return _Answer(payload, prompt + completion, events)


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
    return [_sse(c) for c in chunks] + [_sse("[DONE]")]


def _embeddings_answer(body: dict[str, Any]) -> _Answer:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise _BadRequest("'input' must be a string or a non-empty list of strings")
    tokens = sum(_estimate_tokens([text], 0) for text in inputs)
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _embedding(t)} for i, t in enumerate(inputs)],
        "model": _model_of(body),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _Answer(payload, tokens)


def _embedding(text: str) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(EMBEDDING_DIMENSIONS)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def _messages_answer(body: dict[str, Any]) -> _Answer:
    messages = _messages_of(body)
    texts = [_text_of(m.get("content")) for m in messages] + [_text_of(body.get("system"))]
    prompt = _estimate_tokens(texts, len(messages))
    completion, truncated = _completion_budget(body, "max_tokens")
    payload = {
        "id": _new_id("msg_mock"),
        "type": "message",
        "role": "assistant",
        "model": _model_of(body),
        "content": [{"type": "text", "text": _reply_text(messages, completion, truncated)}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }
    events = _messages_stream(payload) if body.get("stream") is True else None
    return _Answer(payload, prompt + completion, events)


def _messages_stream(payload: Mapping[str, Any]) -> list[bytes]:
    usage = payload["usage"]
    start = dict(payload, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    events = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"),
    ]
    for piece in _pieces(payload["content"][0]["text"]):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        events.append(_sse(delta, "content_block_delta"))
    stop = {"stop_reason": payload["stop_reason"], "stop_sequence": None}
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}},
             "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def _responses_answer(body: dict[str, Any]) -> _Answer:
    if body.get("stream") is True:
        raise _BadRequest("the mock server does not stream /v1/responses")
    raw = body.get("input")
    messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else _messages_of(body, "input")
    texts = [_text_of(m.get("content")) for m in messages] + [_text_of(body.get("instructions"))]
    prompt = _estimate_tokens(texts, len(messages))
    completion, truncated = _completion_budget(body, "max_output_tokens")
    text = _reply_text(messages, completion, truncated)
    message = {
        "type": "message",
        "id": _new_id("msg_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    payload = {
        "id": _new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if truncated else "completed",
        "model": _model_of(body),
        "output": [message],
        "output_text": text,
        "usage": {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion},
    }
    return _Answer(payload, prompt + completion)


def _models_payload() -> dict[str, Any]:
    model = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "apiexec-mock"}
    return {"object": "list", "data": [model]}


def _health_payload() -> dict[str, Any]:
    return {"status": "ok"}


@dataclass(frozen=True)
class _ApiRoute:
    build: Callable[[dict[str, Any]], _Answer]
    anthropic: bool = False


_API_ROUTES: Final[Mapping[str, _ApiRoute]] = {
    "/v1/chat/completions": _ApiRoute(_chat_answer),
    "/v1/embeddings": _ApiRoute(_embeddings_answer),
    "/v1/messages": _ApiRoute(_messages_answer, anthropic=True),
    "/v1/responses": _ApiRoute(_responses_answer),
}
_INFO_ROUTES: Final[Mapping[str, Callable[[], dict[str, Any]]]] = {
    "/v1/models": _models_payload,
    "/health": _health_payload,
}


# --------------------------------------------------------------------------- replies


@dataclass
class _Request:
    method: str
    path: str
    headers: Mapping[str, str]  # keys in lower case
    body: bytes


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    events: list[bytes] | None = None  # sent with chunked transfer encoding
    delay_s: float = 0.0
    drop: bool = False
    close: bool = False
    rate: _RateState | None = None


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
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _json_reply(status: int, payload: object) -> _Reply:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Reply(status, body, {"Content-Type": "application/json"})


def _error_reply(
    status: int, message: str, *, anthropic: bool = False, kind: str | None = None, code: str | None = None
) -> _Reply:
    """A JSON error in the OpenAI shape, or the Anthropic one."""
    server_side = status >= 500
    if anthropic:
        kind = kind or _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if server_side else "invalid_request_error")
        return _json_reply(status, {"type": "error", "error": {"type": kind, "message": message}})
    kind = kind or _OPENAI_ERROR_TYPES.get(status, "server_error" if server_side else "invalid_request_error")
    return _json_reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def _status_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"mock server fault: {status} {phrase}"


def _rate_limited_reply(retry_after_ms: int, message: str, *, anthropic: bool, kind: str = "requests") -> _Reply:
    reply = _error_reply(429, message, anthropic=anthropic, kind=None if anthropic else kind,
                         code="rate_limit_exceeded")
    reply.headers["retry-after-ms"] = str(retry_after_ms)
    reply.headers["retry-after"] = str(max(1, math.ceil(retry_after_ms / 1000)))
    return reply


def _denied_reply(decision: _Decision, *, anthropic: bool) -> _Reply:
    retry_ms = max(1, math.ceil(decision.retry_after_s * 1000))
    if decision.too_large:
        message = "Request too large for the tokens per min (TPM) limit; it can never be admitted."
    else:
        message = f"Rate limit reached for {decision.limited_by} per min. Please try again in {retry_ms}ms."
    reply = _rate_limited_reply(retry_ms, message, anthropic=anthropic, kind=decision.limited_by)
    reply.rate = decision.state
    return reply


def _format_duration(seconds: float) -> str:
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


def _format_rfc3339(seconds_from_now: float) -> str:
    """UTC time ``seconds_from_now`` ahead, rounded up to the second."""
    moment = datetime.fromtimestamp(math.ceil(time.time() + seconds_from_now), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ratelimit_headers(state: _RateState, *, anthropic: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, limit in (("requests", state.requests), ("tokens", state.tokens)):
        if limit is None:
            continue
        per_minute = str(max(1, round(limit.per_minute)))
        headers[f"x-ratelimit-limit-{name}"] = per_minute
        headers[f"x-ratelimit-remaining-{name}"] = str(limit.remaining)
        headers[f"x-ratelimit-reset-{name}"] = _format_duration(limit.reset_s)
        if anthropic:
            headers[f"anthropic-ratelimit-{name}-limit"] = per_minute
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(limit.remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = _format_rfc3339(limit.reset_s)
    return headers


# --------------------------------------------------------------------------- the API


class _MockAPI:
    """Turns one request into one reply: auth, fault, answer, limiter, latency."""

    def __init__(self, config: MockServerConfig, faults: _FaultPlan, limiter: _RateLimiter) -> None:
        self._config = config
        self._faults = faults
        self._limiter = limiter
        self._jitter_rng = random.Random(config.seed)

    def respond(self, request: _Request) -> _Reply:
        route = _API_ROUTES.get(request.path)
        if route is not None:
            reply = self._serve_api(route, request) if request.method == "POST" else self._not_allowed(request)
        elif request.path in _INFO_ROUTES:
            info = _INFO_ROUTES[request.path]
            reply = _json_reply(200, info()) if request.method == "GET" else self._not_allowed(request)
        else:
            reply = _error_reply(404, f"Unknown path {request.path[:200]!r}.")
        return self._finish(reply, anthropic=route is not None and route.anthropic)

    def _not_allowed(self, request: _Request) -> _Reply:
        return _error_reply(405, f"Method {request.method} is not allowed on {request.path}.")

    def _serve_api(self, route: _ApiRoute, request: _Request) -> _Reply:
        if not self._authorized(request.headers):
            return _error_reply(401, "Incorrect API key provided.", anthropic=route.anthropic, code="invalid_api_key")
        try:
            fault = self._faults.next(request.headers.get(FAULT_HEADER))
        except ValueError as exc:
            return _error_reply(400, f"{FAULT_HEADER}: {exc}", anthropic=route.anthropic)
        if fault is not None and fault.drop:
            return _Reply(0, drop=True)
        if fault is not None and fault.status is not None:
            return self._fault_reply(fault.status, fault.retry_after_ms, anthropic=route.anthropic)
        reply = self._answer(route, request.body)
        reply.delay_s += fault.extra_delay_s if fault is not None else 0.0
        return reply

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        expected = self._config.api_key
        if expected is None:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        offered = [headers.get("x-api-key", "")]
        if scheme.lower() == "bearer":
            offered.append(token.strip())
        return any(hmac.compare_digest(o.encode(), expected.encode()) for o in offered)

    def _fault_reply(self, status: int, retry_after_ms: int | None, *, anthropic: bool) -> _Reply:
        if status != HTTPStatus.TOO_MANY_REQUESTS:
            return _error_reply(status, _status_message(status), anthropic=anthropic)
        retry_ms = DEFAULT_RETRY_AFTER_MS if retry_after_ms is None else retry_after_ms
        message = f"Rate limit reached (injected). Please try again in {retry_ms}ms."
        return _rate_limited_reply(retry_ms, message, anthropic=anthropic)

    def _answer(self, route: _ApiRoute, body: bytes) -> _Reply:
        try:
            answer = route.build(_parse_json_object(body))
        except _BadRequest as exc:
            return _error_reply(400, str(exc), anthropic=route.anthropic)
        decision = self._limiter.acquire(answer.total_tokens)
        if not decision.admitted:
            return _denied_reply(decision, anthropic=route.anthropic)
        if answer.events is not None:
            reply = _Reply(200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                           events=answer.events)
        else:
            reply = _json_reply(200, answer.payload)
        reply.rate = decision.state
        return reply

    def _finish(self, reply: _Reply, *, anthropic: bool) -> _Reply:
        request_id = _new_id("req_")
        reply.headers["x-request-id"] = request_id
        if anthropic:
            reply.headers["request-id"] = request_id
        if self._limiter.configured:
            state = reply.rate if reply.rate is not None else self._limiter.state()
            reply.headers.update(_ratelimit_headers(state, anthropic=anthropic))
        reply.delay_s += self._latency_s()
        return reply

    def _latency_s(self) -> float:
        base, jitter = self._config.latency_ms, self._config.latency_jitter_ms
        if jitter > 0:
            base += self._jitter_rng.uniform(-jitter, jitter)
        return max(0.0, base) / 1000.0


# --------------------------------------------------------------------------- HTTP plumbing


class _BadBody(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    """One TCP connection: reads requests, asks the API, writes the replies."""

    protocol_version = "HTTP/1.1"
    server_version = "apiexec-mock/1"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = _IDLE_TIMEOUT_S

    def version_string(self) -> str:
        return self.server_version

    def _httpd(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        self._httpd().connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._httpd().connection_closed(self.connection)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - overrides the base signature
        logger.debug("%s - " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        httpd = self._httpd()
        path = urlsplit(self.path).path
        body, reply = self._receive(httpd.api, path)
        httpd.stats.request_started(path, body)
        self._deliver(reply, httpd)

    def _receive(self, api: _MockAPI, path: str) -> tuple[bytes, _Reply]:
        try:
            body = self._read_body()
        except _BadBody as exc:
            reply = _error_reply(exc.status, str(exc))
            reply.close = True  # the rest of the stream cannot be trusted
            return b"", reply
        headers = {key.lower(): value for key, value in self.headers.items()}
        return body, api.respond(_Request(self.command, path, headers, body))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadBody(400, "invalid Content-Length") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise _BadBody(413, f"body must be at most {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadBody(400, "invalid chunked body") from None
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadBody(413, f"body must be at most {MAX_BODY_BYTES} bytes")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are ignored
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _deliver(self, reply: _Reply, httpd: _HTTPServer) -> None:
        """Wait out the latency, then answer or drop."""
        if reply.delay_s > 0 and httpd.stopping.wait(reply.delay_s):
            reply.drop = True  # the server is stopping: do not answer late
        # Counted before the client can see the outcome, so stats read right
        # after a response (or a dropped connection) already include it.
        httpd.stats.request_finished(None if reply.drop else reply.status)
        if reply.drop:
            self._drop()
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
        if reply.events is None:
            self._write_body(reply.body)
        else:
            self._write_chunked(reply.events)

    def _write_body(self, body: bytes) -> None:
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _write_chunked(self, events: Sequence[bytes]) -> None:
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


class _HTTPServer(ThreadingHTTPServer):
    """The socket server; tracks open connections so stop() can close them."""

    daemon_threads = True
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(
        self, address: tuple[str, int], *, api: _MockAPI, stats: _StatsRecorder, stopping: threading.Event
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api = api
        self.stats = stats
        self.stopping = stopping
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._closing = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("mock server: connection %s failed", client_address, exc_info=True)

    def connection_opened(self, sock: socket.socket) -> None:
        with self._open_lock:
            closing = self._closing
            if not closing:
                self._open.add(sock)
        if closing:
            _shutdown_socket(sock)
        else:
            self.stats.connection_opened()

    def connection_closed(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(sock)

    def close_connections(self) -> None:
        with self._open_lock:
            self._closing = True
            socks, self._open = self._open, set()
        for sock in socks:
            _shutdown_socket(sock)


def _shutdown_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer or by its handler


# --------------------------------------------------------------------------- public server


class _State(enum.Enum):
    UNSTARTED = "unstarted"
    RUNNING = "running"
    CLOSED = "closed"


class MockServer:
    """The mock API server, run in a background thread.

    Args:
        config: Behaviour; defaults to ``MockServerConfig()``.
        clock: Monotonic clock of the rate limiter (tests may pass a fake one).

    Raises:
        RuntimeError: From ``start()`` when already started or stopped, and from
            ``port``/``url`` before ``start()``.
        OSError: From ``start()`` when the address cannot be bound.

    Example::

        with MockServer(MockServerConfig(latency_ms=20)) as server:
            requests.get(f"{server.url}/health").json()  # {"status": "ok"}
    """

    def __init__(self, config: MockServerConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config if config is not None else MockServerConfig()
        self._stats = _StatsRecorder(self.config.record_bodies)
        self._faults = _FaultPlan(self.config)
        self._api = _MockAPI(self.config, self._faults, _RateLimiter(self.config, clock))
        self._lock = threading.Lock()
        self._state = _State.UNSTARTED
        self._stopping = threading.Event()  # wakes requests sleeping in latency
        self._closed = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        where = f"{self.config.host}:{self._port}" if self._port is not None else self.config.host
        return f"MockServer({where}, state={self._state.value})"

    def __enter__(self) -> MockServer:
        return self if self._state is _State.RUNNING else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (known once started)."""
        if self._port is None:
            raise RuntimeError("mock server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``"http://127.0.0.1:54321"`` (append ``/v1/...``)."""
        host = self.config.host
        if host in ("0.0.0.0", ""):
            host = DEFAULT_HOST
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def stats(self) -> MockServerStats:
        """A consistent snapshot of the counters."""
        return self._stats.snapshot()

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet applied."""
        return self._faults.pending()

    def reset_stats(self) -> None:
        """Zero the counters (``in_flight`` keeps counting live requests)."""
        self._stats.reset()

    def script(self, faults: Iterable[str]) -> None:
        """Queue faults for the next model requests, one per request, in order.

        Args:
            faults: Fault specs such as ``"500"``, ``"429:1500"``, ``"drop"``, ``"slow:200"``.

        Raises:
            ValueError: A spec is invalid; then none of them is queued.
        """
        self._faults.script(faults)

    def start(self) -> MockServer:
        """Bind, listen and serve in a daemon thread; returns self."""
        with self._lock:
            if self._state is not _State.UNSTARTED:
                raise RuntimeError(f"mock server cannot start: it is {self._state.value}")
            httpd = _HTTPServer(
                (self.config.host, self.config.port), api=self._api, stats=self._stats, stopping=self._stopping
            )
            self._port = int(httpd.server_address[1])
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"apiexec-mock-server-{self._port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread, self._state = httpd, thread, _State.RUNNING
        logger.info("mock server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections, join.

        Requests sleeping in latency are cut short and dropped. Safe to call
        twice and from several threads; every call returns once stopped.
        """
        with self._lock:
            state, self._state = self._state, _State.CLOSED
            httpd, self._httpd = self._httpd, None
            thread, self._thread = self._thread, None
        if state is _State.CLOSED:
            self._closed.wait()
            return
        try:
            if httpd is not None and thread is not None:
                self._shutdown(httpd, thread)
        finally:
            self._closed.set()

    def _shutdown(self, httpd: _HTTPServer, thread: threading.Thread) -> None:
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        thread.join()
        logger.info("mock server on port %s stopped", self._port)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server is stopped; returns False on timeout."""
        return self._closed.wait(timeout)


def serve_forever(config: MockServerConfig, *, ready: Callable[[MockServer], None] | None = None) -> None:
    """Run a mock server until Ctrl-C (or until someone calls its ``stop()``).

    Args:
        config: Behaviour of the server.
        ready: Called with the running server, e.g. to print its URL.

    Raises:
        OSError: The address cannot be bound.
    """
    server = MockServer(config).start()
    try:
        if ready is not None:
            ready(server)
        server.wait()
    except KeyboardInterrupt:
        logger.info("mock server interrupted")
    finally:
        server.stop()
