"""The mock API: turns one request into one reply (auth, fault, answer, limiter, latency).

What happens to a POST to a model endpoint, in order:

1. ``api_key`` check: ``401`` unless ``Authorization: Bearer <key>`` or
   ``x-api-key: <key>`` matches (the key is never logged or echoed).
2. Fault: the ``x-mock-fault`` header if present, else the next scripted fault,
   else a random one (``drop_rate``, ``fail_rate``). A status fault answers at
   once and consumes no rate-limit capacity.
3. Body parsing (``400`` when it is not a JSON object or misses a field).
4. Rate limiter, decided on arrival (see :mod:`apiexec.mock.oracle`).
5. Latency (``latency_ms`` +/- ``latency_jitter_ms``, plus any ``slow:MS``
   fault), slept by the handler outside every lock.

Example:
    >>> from apiexec.mock.config import MockServerConfig
    >>> config = MockServerConfig()
    >>> api = MockAPI(config, FaultPlan(seed=None, fail_rate=0, drop_rate=0),
    ...               RateLimiter(None, None, None, None, clock=lambda: 0.0))
    >>> api.respond(Request("GET", "/health", {}, b"")).body
    b'{"status":"ok"}'
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Mapping
from http import HTTPStatus

from apiexec.mock.answers import API_ROUTES, INFO_ROUTES, ApiRoute, BadRequest, parse_json_object
from apiexec.mock.config import DEFAULT_RETRY_AFTER_MS, FAULT_HEADER, MockServerConfig
from apiexec.mock.faults import FaultPlan
from apiexec.mock.oracle import RateLimiter
from apiexec.mock.wire import (
    Reply,
    Request,
    denied_reply,
    error_reply,
    json_reply,
    new_id,
    rate_limited_reply,
    ratelimit_headers,
    status_message,
)


class MockAPI:
    """Turns one request into one reply: auth, fault, answer, limiter, latency."""

    def __init__(self, config: MockServerConfig, faults: FaultPlan, limiter: RateLimiter) -> None:
        self._config = config
        self._faults = faults
        self._limiter = limiter
        self._jitter_rng = random.Random(config.seed)

    def respond(self, request: Request) -> Reply:
        route = API_ROUTES.get(request.path)
        if route is not None:
            reply = self._serve_api(route, request) if request.method == "POST" else self._not_allowed(request)
        elif request.path in INFO_ROUTES:
            info = INFO_ROUTES[request.path]
            reply = json_reply(200, info()) if request.method == "GET" else self._not_allowed(request)
        else:
            reply = error_reply(404, f"Unknown path {request.path[:200]!r}.")
        return self._finish(reply, anthropic=route is not None and route.anthropic)

    def _not_allowed(self, request: Request) -> Reply:
        return error_reply(405, f"Method {request.method} is not allowed on {request.path}.")

    def _serve_api(self, route: ApiRoute, request: Request) -> Reply:
        if not self._authorized(request.headers):
            return error_reply(401, "Incorrect API key provided.", anthropic=route.anthropic, code="invalid_api_key")
        try:
            fault = self._faults.next(request.headers.get(FAULT_HEADER))
        except ValueError as exc:
            return error_reply(400, f"{FAULT_HEADER}: {exc}", anthropic=route.anthropic)
        if fault is not None and fault.drop:
            return Reply(0, drop=True)
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

    def _fault_reply(self, status: int, retry_after_ms: int | None, *, anthropic: bool) -> Reply:
        if status != HTTPStatus.TOO_MANY_REQUESTS:
            return error_reply(status, status_message(status), anthropic=anthropic)
        retry_ms = DEFAULT_RETRY_AFTER_MS if retry_after_ms is None else retry_after_ms
        message = f"Rate limit reached (injected). Please try again in {retry_ms}ms."
        return rate_limited_reply(retry_ms, message, anthropic=anthropic)

    def _answer(self, route: ApiRoute, body: bytes) -> Reply:
        try:
            answer = route.build(parse_json_object(body))
        except BadRequest as exc:
            return error_reply(400, str(exc), anthropic=route.anthropic)
        decision = self._limiter.acquire(answer.total_tokens)
        if not decision.admitted:
            return denied_reply(decision, anthropic=route.anthropic)
        if answer.events is not None:
            reply = Reply(200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                           events=answer.events)
        else:
            reply = json_reply(200, answer.payload)
        reply.rate = decision.state
        return reply

    def _finish(self, reply: Reply, *, anthropic: bool) -> Reply:
        request_id = new_id("req_")
        reply.headers["x-request-id"] = request_id
        if anthropic:
            reply.headers["request-id"] = request_id
        if self._limiter.configured:
            state = reply.rate if reply.rate is not None else self._limiter.state()
            reply.headers.update(ratelimit_headers(state, anthropic=anthropic))
        reply.delay_s += self._latency_s()
        return reply

    def _latency_s(self) -> float:
        base, jitter = self._config.latency_ms, self._config.latency_jitter_ms
        if jitter > 0:
            base += self._jitter_rng.uniform(-jitter, jitter)
        return max(0.0, base) / 1000.0


