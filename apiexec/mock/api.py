"""The mock API: turns one request into one reply (route, auth, fault, answer, limiter, latency).

What happens to a request, in order:

1. Route: the path and method pick an endpoint (``404``/``405`` otherwise). The
   dialect of errors is Anthropic's for ``/v1/messages...`` and for any request
   carrying ``anthropic-version``; OpenAI's otherwise.
2. API key check on every ``/v1`` path: ``401`` unless ``Authorization: Bearer
   <key>`` or ``x-api-key: <key>`` matches an accepted key (never logged or echoed).
3. Model endpoints only: the fault (the ``x-mock-fault`` header if present, else
   the next scripted fault, else a random one); a status fault answers at once and
   consumes no rate-limit capacity. Then the body is parsed and answered (``400``
   naming the field when it is invalid) and the rate limiter decides on arrival
   (per API key with ``limits_per_key``); a denied request consumes nothing.
4. Latency (``latency_ms`` +/- ``latency_jitter_ms``, plus any ``slow:MS``
   fault), slept by the handler outside every lock.

Example:
    >>> from apiexec.mock.config import MockServerConfig
    >>> api = MockAPI(MockServerConfig(), clock=lambda: 0.0)
    >>> api.respond(Request("GET", "/health", {}, b"")).body
    b'{"status":"ok"}'
"""

from __future__ import annotations

import hmac
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qsl

from apiexec.mock.answers import MODEL_ROUTES, BadRequest, ModelRoute, parse_json_object
from apiexec.mock.answers.anthropic import anthropic_model, anthropic_models, count_tokens_answer
from apiexec.mock.answers.openai_misc import openai_model, openai_models
from apiexec.mock.batches import BatchStore
from apiexec.mock.config import DEFAULT_RETRY_AFTER_MS, FAULT_HEADER, MockServerConfig
from apiexec.mock.faults import FaultPlan
from apiexec.mock.files import FileStore, NotFound
from apiexec.mock.message_batches import MessageBatchStore
from apiexec.mock.oracle import RateLimiter
from apiexec.mock.wire import (
    Reply,
    Request,
    bytes_reply,
    denied_reply,
    error_reply,
    json_reply,
    new_id,
    rate_limited_reply,
    ratelimit_headers,
    status_message,
    with_request_id,
)

logger = logging.getLogger(__name__)

ANTHROPIC_VERSION_HEADER: Final = "anthropic-version"
JSONL: Final = "application/binary"


@dataclass(frozen=True)
class Call:
    """One routed request: the request, the path's parameters and the query."""

    request: Request
    params: Mapping[str, str]
    query: Mapping[str, str]
    anthropic: bool

    def json(self) -> dict[str, object]:
        return parse_json_object(self.request.body)

    @property
    def base_url(self) -> str:
        return f"http://{self.request.headers.get('host', 'localhost')}"


Handler = Callable[[Call], Reply]


class MockAPI:
    """Routes requests to the model answers and the stateful resources (files, batches).

    Args:
        config: The server's behaviour.
        clock: Monotonic clock of the rate limiter and of batch progress.
    """

    def __init__(self, config: MockServerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._faults = FaultPlan(seed=config.seed, fail_rate=config.fail_rate, drop_rate=config.drop_rate)
        self._faults.script(config.faults)
        self._limiter = self._new_limiter()
        self._key_limiters: dict[str, RateLimiter] = {}
        self._key_lock = threading.Lock()
        self._jitter_rng = random.Random(config.seed)
        self._jitter_lock = threading.Lock()
        self._files = FileStore()
        self._batches = BatchStore(self._files, scale=config.batch_time_scale, clock=clock)
        self._message_batches = MessageBatchStore(scale=config.batch_time_scale, clock=clock)
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            (method, re.compile(pattern), handler) for method, pattern, handler in self._route_table()
        ]

    @property
    def faults(self) -> FaultPlan:
        """The fault plan: scripted faults queue here."""
        return self._faults

    def _route_table(self) -> list[tuple[str, str, Handler]]:
        files, batches, message_batches = self._files, self._batches, self._message_batches
        wall = _wall_seconds
        return [
            ("GET", "/health", lambda call: json_reply(200, {"status": "ok"})),
            ("POST", "/v1/messages/count_tokens", lambda call: json_reply(200, count_tokens_answer(call.json()))),
            ("GET", "/v1/models", lambda call: json_reply(200, anthropic_models(call.query) if call.anthropic
                                                          else openai_models())),
            ("GET", "/v1/models/(?P<id>[^/]+)", lambda call: json_reply(200, anthropic_model(call.params["id"])
                                                                        if call.anthropic
                                                                        else openai_model(call.params["id"]))),
            ("POST", "/v1/files", lambda call: json_reply(200, files.upload(
                call.request.headers.get("content-type", ""), call.request.body, created_at=wall()))),
            ("GET", "/v1/files", lambda call: json_reply(200, files.listing(call.query))),
            ("GET", "/v1/files/(?P<id>[^/]+)", lambda call: json_reply(200, files.get(call.params["id"]))),
            ("DELETE", "/v1/files/(?P<id>[^/]+)", lambda call: json_reply(200, files.delete(call.params["id"]))),
            ("GET", "/v1/files/(?P<id>[^/]+)/content",
             lambda call: bytes_reply(files.content(call.params["id"]), "application/octet-stream")),
            ("POST", "/v1/batches", lambda call: json_reply(200, batches.create(call.json()))),
            ("GET", "/v1/batches", lambda call: json_reply(200, batches.listing(call.query))),
            ("GET", "/v1/batches/(?P<id>[^/]+)", lambda call: json_reply(200, batches.get(call.params["id"]))),
            ("POST", "/v1/batches/(?P<id>[^/]+)/cancel",
             lambda call: json_reply(200, batches.cancel(call.params["id"]))),
            ("POST", "/v1/messages/batches",
             lambda call: json_reply(200, message_batches.create(call.json(), call.base_url))),
            ("GET", "/v1/messages/batches", lambda call: json_reply(200, message_batches.listing(call.query))),
            ("GET", "/v1/messages/batches/(?P<id>[^/]+)",
             lambda call: json_reply(200, message_batches.get(call.params["id"]))),
            ("DELETE", "/v1/messages/batches/(?P<id>[^/]+)",
             lambda call: json_reply(200, message_batches.delete(call.params["id"]))),
            ("POST", "/v1/messages/batches/(?P<id>[^/]+)/cancel",
             lambda call: json_reply(200, message_batches.cancel(call.params["id"]))),
            ("GET", "/v1/messages/batches/(?P<id>[^/]+)/results",
             lambda call: bytes_reply(message_batches.results(call.params["id"]), JSONL)),
        ]

    # ----------------------------------------------------------------- one request

    def respond(self, request: Request) -> Reply:
        """The reply to ``request`` (headers, latency and all)."""
        path = request.path
        anthropic = path.startswith("/v1/messages") or ANTHROPIC_VERSION_HEADER in request.headers
        try:
            reply = self._route(request, path, dict(parse_qsl(request.query)), anthropic)
        except Exception:  # a bug in the mock must still answer, not hang or drop the client
            logger.exception("mock server: %s %s failed", request.method, path[:200])
            reply = error_reply(500, "The mock server failed to handle this request.", anthropic=anthropic)
        return self._finish(reply, anthropic=anthropic)

    def _route(self, request: Request, path: str, query: Mapping[str, str], anthropic: bool) -> Reply:
        if path.startswith("/v1/") and not self._authorized(request.headers):
            message = "invalid x-api-key" if anthropic else "Incorrect API key provided."
            return error_reply(401, message, anthropic=anthropic, code="invalid_api_key")
        route = MODEL_ROUTES.get(path)
        if route is not None:
            return self._serve_model(route, request) if request.method == "POST" else self._not_allowed(request)
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method != request.method:
                allowed = True
                continue
            return self._call(handler, Call(request, match.groupdict(), query, anthropic))
        if allowed:
            return self._not_allowed(request)
        return error_reply(404, f"Invalid URL ({request.method} {path[:200]})", anthropic=anthropic)

    def _call(self, handler: Handler, call: Call) -> Reply:
        try:
            return handler(call)
        except BadRequest as exc:
            return error_reply(400, str(exc), anthropic=call.anthropic, param=exc.param)
        except NotFound as exc:
            return error_reply(404, str(exc), anthropic=call.anthropic)

    def _not_allowed(self, request: Request) -> Reply:
        return error_reply(405, f"Method {request.method} is not allowed on {request.path[:200]}.")

    def _serve_model(self, route: ModelRoute, request: Request) -> Reply:
        try:
            fault = self._faults.next(request.headers.get(FAULT_HEADER))
        except ValueError as exc:
            return error_reply(400, f"{FAULT_HEADER}: {exc}", anthropic=route.anthropic)
        if fault is not None and fault.drop:
            return Reply(0, drop=True)
        if fault is not None and fault.status is not None:
            return self._fault_reply(fault.status, fault.retry_after_ms, anthropic=route.anthropic)
        reply = self._answer(route, request)
        if fault is not None:
            reply.delay_s += fault.extra_delay_s
            if reply.status == HTTPStatus.OK:
                reply.cut_after = fault.cut_after
        return reply

    def _offered_keys(self, headers: Mapping[str, str]) -> list[str]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        offered = [headers.get("x-api-key", "").strip(), headers.get("api-key", "").strip()]
        if scheme.lower() == "bearer":
            offered.append(token.strip())
        return [key for key in offered if key]

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        accepted = self._config.accepted_keys
        if not accepted:
            return True
        return any(hmac.compare_digest(o.encode(), key.encode()) for o in self._offered_keys(headers)
                   for key in accepted)

    def _limiter_for(self, headers: Mapping[str, str]) -> RateLimiter:
        if not self._config.limits_per_key:
            return self._limiter
        offered = self._offered_keys(headers)
        key = offered[0] if offered else ""
        with self._key_lock:
            limiter = self._key_limiters.get(key)
            if limiter is None:
                limiter = self._key_limiters[key] = self._new_limiter()
            return limiter

    def _new_limiter(self) -> RateLimiter:
        c = self._config
        return RateLimiter(c.requests_per_minute, c.request_burst, c.tokens_per_minute, c.token_burst,
                           clock=self._clock)

    def _fault_reply(self, status: int, retry_after_ms: int | None, *, anthropic: bool) -> Reply:
        if status != HTTPStatus.TOO_MANY_REQUESTS:
            return error_reply(status, status_message(status), anthropic=anthropic)
        retry_ms = DEFAULT_RETRY_AFTER_MS if retry_after_ms is None else retry_after_ms
        message = f"Rate limit reached (injected). Please try again in {retry_ms}ms."
        return rate_limited_reply(retry_ms, message, anthropic=anthropic)

    def _answer(self, route: ModelRoute, request: Request) -> Reply:
        try:
            answer = route.build(parse_json_object(request.body))
        except BadRequest as exc:
            return error_reply(400, str(exc), anthropic=route.anthropic, param=exc.param)
        limiter = self._limiter_for(request.headers)
        decision = limiter.acquire(answer.total_tokens)
        if not decision.admitted:
            return denied_reply(decision, anthropic=route.anthropic)
        if answer.events is not None:
            reply = Reply(200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                          events=answer.events)
        else:
            reply = json_reply(200, answer.payload)
        reply.rate = decision.state
        reply.limiter = limiter
        return reply

    def _finish(self, reply: Reply, *, anthropic: bool) -> Reply:
        request_id = new_id("req_")
        reply.headers["x-request-id"] = request_id
        if anthropic:
            reply.headers["request-id"] = request_id
            if reply.status >= 400:
                with_request_id(reply, request_id)
        limiter = reply.limiter or self._limiter
        if limiter.configured:
            state = reply.rate if reply.rate is not None else limiter.state()
            reply.headers.update(ratelimit_headers(state, anthropic=anthropic))
        reply.delay_s += self._latency_s()
        return reply

    def _latency_s(self) -> float:
        base, jitter = self._config.latency_ms, self._config.latency_jitter_ms
        if jitter > 0:
            with self._jitter_lock:
                base += self._jitter_rng.uniform(-jitter, jitter)
        return max(0.0, base) / 1000.0


def _wall_seconds() -> int:
    return int(time.time())
