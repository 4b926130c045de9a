"""The official SDKs under a RateLimitedExecutor's limits, over loopback.

Both ``openai`` and ``anthropic`` clients are given ``http_client(sdk)``
(apiexec.llm.sdk) and talk to apiexec's built-in mock server. The limiter is
watched through spies on its public methods (``acquire``, ``adjust``,
``pause``, ``backend.sync``): every first attempt is admitted with its
estimated tokens, every retry passes the gate (``acquire(0)``), every
response's headers reach the buckets, a 429 pauses them, and the reported
usage corrects the token bucket.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from apiexec import RateLimitedExecutor
from apiexec.errors import DeadlineExceeded, ExecutorNotRunning
from apiexec.llm.sdk import SDKCall, http_client, sdk_call
from apiexec.mock.server import MockServer, MockServerConfig
from tests.helpers import ScriptedServer, http_response

pytestmark = pytest.mark.integration

KEY = "sk-sdk-adapter-test"
USER = [{"role": "user", "content": "Say hello to the rate limiter."}]


@dataclass
class Flavour:
    """What differs between the two SDKs in these tests."""

    name: str
    make: Callable[..., Any]  # (server, **client options) -> SDK client
    create: Callable[[Any], Callable[..., Any]]  # client -> its create method
    stream: Callable[[Any], Callable[..., Any]]  # client -> a function returning the final message
    kind: type
    model: str

    def request(self, **more: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": USER, "max_tokens": 40, **more}

    def usage(self, result: Any) -> int:
        usage = result.usage
        if self.name == "openai":
            return usage.total_tokens
        return usage.input_tokens + usage.output_tokens


def _openai(server: MockServer, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{server.url}/v1", http_client=http_client(openai), **options)


def _anthropic(server: MockServer, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=server.url, http_client=http_client(anthropic), **options)


def _openai_stream(client: openai.OpenAI) -> Callable[..., Any]:
    def run(**request: Any) -> Any:
        with client.chat.completions.stream(stream_options={"include_usage": True}, **request) as stream:
            return stream.get_final_completion()

    return run


def _anthropic_stream(client: anthropic.Anthropic) -> Callable[..., Any]:
    def run(**request: Any) -> Any:
        with client.messages.stream(**request) as stream:
            return stream.get_final_message()

    return run


FLAVOURS = [
    Flavour("openai", _openai, lambda c: c.chat.completions.create, _openai_stream, ChatCompletion, "gpt-4o-mini"),
    Flavour("anthropic", _anthropic, lambda c: c.messages.create, _anthropic_stream, Message, "claude-sonnet-4-6"),
]


@pytest.fixture(params=FLAVOURS, ids=lambda f: f.name)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param


@pytest.fixture
def server() -> Iterator[MockServer]:
    # Server limits far above what the tests use: only their headers matter.
    config = MockServerConfig(api_key=KEY, requests_per_minute=60_000, tokens_per_minute=10_000_000)
    with MockServer(config) as running:
        yield running


class Spy:
    """Records every call of one method of an object, then calls through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
                 after: Callable[..., None] | None = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()
        real = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append((args, kwargs))
            result = real(*args, **kwargs)
            if after is not None:
                after(*args, **kwargs)
            return result

        monkeypatch.setattr(owner, name, spy)

    def first_args(self) -> list[Any]:
        with self._lock:
            return [args[0] if args else None for args, _ in self.calls]


def limited(**kwargs: Any) -> RateLimitedExecutor:
    settings = {"limit_requests": 10_000, "limit_tokens": 1_000_000, "interval": 60.0, "concurrency_limit": 4}
    settings.update(kwargs)
    return RateLimitedExecutor(**settings)


# -- admission, usage, headers --------------------------------------------------------


def test_every_call_is_admitted_with_its_tokens_and_its_usage_corrects_the_bucket(
    flavour: Flavour, server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 8
    with flavour.make(server, max_retries=0) as client, limited() as ex:
        acquire = Spy(monkeypatch, ex.limiter, "acquire")
        adjust = Spy(monkeypatch, ex.limiter, "adjust")
        sync = Spy(monkeypatch, ex.limiter.backend, "sync")
        calls = [sdk_call(flavour.create(client), **flavour.request()) for _ in range(n)]
        reserved = [call.required_tokens for call in calls]
        results = list(ex.map(calls))
        snapshot = ex.metrics.snapshot()

    assert all(r > 40 for r in reserved)  # prompt + the 40 tokens max_tokens allows
    for result in results:  # the SDK's own types, valid against its schema
        assert isinstance(result, flavour.kind)
        assert flavour.kind.model_validate(result.model_dump()) == result
    used = [flavour.usage(r) for r in results]
    assert [c.used_tokens for c in calls] == used
    # One admission per call, with the estimate; no retries.
    assert sorted(acquire.first_args()) == sorted(reserved)
    assert server.stats.requests == n
    # Each call gave back what it reserved beyond its usage.
    assert sorted(adjust.first_args()) == sorted(r - u for r, u in zip(reserved, used))
    assert snapshot["tokens_reserved"] == sum(reserved)
    assert snapshot["tokens_used"] == sum(used)
    assert snapshot["completed"] == n and snapshot["responses"] == n
    # Every response's rate-limit headers reached the buckets.
    assert len(sync.calls) == n
    assert all(args[0].limit_requests == 60_000 for args, _ in sync.calls)


def test_plain_sdk_calls_through_submit_are_admitted_and_observed(flavour: Flavour, server: MockServer) -> None:
    with flavour.make(server, max_retries=0) as client, limited() as ex:
        result = ex.submit(flavour.create(client), **flavour.request()).result(timeout=10)
        snapshot = ex.metrics.snapshot()
    assert isinstance(result, flavour.kind)
    assert snapshot["responses"] == 1 and snapshot["completed"] == 1
    assert snapshot["tokens_reserved"] == 0  # a plain callable says no tokens: use SDKCall


def test_streamed_calls_report_the_final_usage(flavour: Flavour, server: MockServer) -> None:
    with flavour.make(server, max_retries=0) as client, limited() as ex:
        call = SDKCall(flavour.stream(client), flavour.request())
        final = ex.submit(call).result(timeout=10)
        snapshot = ex.metrics.snapshot()
    assert final.usage is not None
    assert call.used_tokens == flavour.usage(final) > 0
    assert snapshot["tokens_used"] == call.used_tokens and snapshot["responses"] == 1


def test_raw_responses_report_usage_and_request_id(server: MockServer) -> None:
    with _openai(server, max_retries=0) as client, limited() as ex:
        call = sdk_call(client.chat.completions.with_raw_response.create, **FLAVOURS[0].request())
        raw = ex.submit(call).result(timeout=10)
    assert call.used_tokens == raw.parse().usage.total_tokens
    assert call.request_id == raw.headers["x-request-id"]
    assert call.response_status == 200


# -- 429s and the SDK's retries -------------------------------------------------------------


def test_a_429_pauses_the_limiter_and_the_sdk_retry_passes_the_gate(
    flavour: Flavour, server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(["429:300"])  # retry-after-ms: 300
    with flavour.make(server, max_retries=2) as client, limited() as ex:
        acquire = Spy(monkeypatch, ex.limiter, "acquire")
        paused_now: list[bool] = []
        # Right after the pause, no request may be taken: the pause is real.
        Spy(monkeypatch, ex.limiter, "pause", after=lambda *_: paused_now.append(ex.limiter.try_acquire(0)))
        call = sdk_call(flavour.create(client), **flavour.request())
        started = time.monotonic()
        result = ex.submit(call).result(timeout=10)
        elapsed = time.monotonic() - started
        snapshot = ex.metrics.snapshot()
    assert isinstance(result, flavour.kind)
    assert paused_now == [False]
    # First attempt admitted with its tokens; the retry took a request (0 tokens) at the gate.
    assert acquire.first_args() == [call.required_tokens, 0]
    assert call.execution.attempts == 2
    assert server.stats.by_status[429] == 1 and server.stats.by_status[200] == 1
    assert snapshot["rate_limited"] == 1 and snapshot["retries"] == 1
    assert elapsed >= 0.25  # the server's retry-after was honoured


def test_sdk_retries_wait_for_the_limiters_capacity(flavour: Flavour, server: MockServer) -> None:
    # Two requests per second: the first attempt takes the bucket's whole
    # burst; the SDK's retry must wait for a refill instead of going at once.
    server.script(["429:10"])
    with flavour.make(server, max_retries=2) as client, limited(limit_requests=2, interval=1.0) as ex:
        ex.limiter.try_acquire(0)  # leave one request: the first attempt's
        started = time.monotonic()
        call = sdk_call(flavour.create(client), **flavour.request())
        ex.submit(call).result(timeout=10)
        elapsed = time.monotonic() - started
    assert call.execution.attempts == 2
    assert elapsed >= 0.3, f"the retry went after {elapsed:.3f}s, not gated by the limiter"


def test_every_sdk_retry_is_counted_and_gated(
    flavour: Flavour, server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(["429:20", "503"])
    with flavour.make(server, max_retries=2) as client, limited() as ex:
        acquire = Spy(monkeypatch, ex.limiter, "acquire")
        call = sdk_call(flavour.create(client), **flavour.request())
        ex.submit(call).result(timeout=15)
    assert call.execution.attempts == 3 == server.stats.requests
    assert acquire.first_args() == [call.required_tokens, 0, 0]


def test_a_shutdown_during_the_sdk_backoff_sends_no_retry(flavour: Flavour, server: MockServer) -> None:
    server.script(["429:500"])
    with flavour.make(server, max_retries=2) as client:
        ex = limited()
        ex.start()
        got_429 = threading.Event()
        original = ex.admission.observe

        def observe(status: int, headers: Any) -> None:
            original(status, headers)
            if status == 429:
                got_429.set()

        ex.admission.observe = observe  # type: ignore[method-assign]
        future = ex.submit(sdk_call(flavour.create(client), **flavour.request()))
        assert got_429.wait(10)
        ex.shutdown(wait=True)  # the SDK is sleeping its backoff now
        error = future.exception(timeout=10)
    assert isinstance(error, ExecutorNotRunning), repr(error)
    assert server.stats.requests == 1  # the retry was never sent


def test_a_call_that_exhausts_the_sdk_retries_fails_with_the_sdk_error(flavour: Flavour, server: MockServer) -> None:
    server.script(["429:10", "429:10"])
    with flavour.make(server, max_retries=1) as client, limited() as ex:
        future = ex.submit(sdk_call(flavour.create(client), **flavour.request()))
        error = future.exception(timeout=10)
        snapshot = ex.metrics.snapshot()
    sdk = openai if flavour.name == "openai" else anthropic
    assert isinstance(error, sdk.RateLimitError)
    assert snapshot["failed"] == 1 and snapshot["rate_limited"] == 2


# -- deadlines -----------------------------------------------------------------------------


def test_the_call_deadline_caps_an_sdk_attempt(flavour: Flavour, server: MockServer) -> None:
    server.script(["slow:3000"])
    with flavour.make(server, max_retries=2) as client, limited() as ex:
        call = SDKCall(flavour.create(client), flavour.request(), timeout=0.5)
        started = time.monotonic()
        error = ex.submit(call).exception(timeout=10)
        elapsed = time.monotonic() - started
    assert isinstance(error, DeadlineExceeded), repr(error)
    assert error.phase == "response" and error.timeout == 0.5
    assert "0.5s" in str(error)
    assert elapsed < 2.5  # not the 3 s the server took, nor the SDK's retries
    assert server.stats.requests == 1


def test_a_body_trickling_past_the_deadline_ends_the_call(flavour: Flavour) -> None:
    # A hostile server: the headers at once, then one byte every 0.1 s, so
    # no single read ever times out.
    def trickle(conn: Any, request: dict[str, Any]) -> None:
        body = b'{"id": "x", "padding": "' + b"." * 100 + b'"}'
        conn.sendall(http_response(200, b"", {"Content-Type": "application/json"})
                     .replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
        for byte in body:
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    with ScriptedServer(trickle) as hostile:
        server = type("Server", (), {"url": hostile.url})()
        with flavour.make(server, max_retries=2) as client, limited() as ex:
            call = SDKCall(flavour.create(client), flavour.request(), timeout=0.8)
            started = time.monotonic()
            error = ex.submit(call).exception(timeout=15)
            elapsed = time.monotonic() - started
        assert isinstance(error, DeadlineExceeded), repr(error)
        assert error.phase == "response"
        assert elapsed < 2.5, f"the call took {elapsed:.2f}s past its 0.8s deadline"
        assert len(hostile.requests) == 1  # the SDK did not retry a call the executor ended


# -- many threads, one client --------------------------------------------------------------


def test_one_client_shared_by_every_worker(flavour: Flavour, server: MockServer) -> None:
    n = 40
    with flavour.make(server, max_retries=0) as client, limited(concurrency_limit=8) as ex:
        futures = [ex.submit(sdk_call(flavour.create(client), **flavour.request())) for _ in range(n)]
        done, not_done = cf.wait(futures, timeout=30)
        snapshot = ex.metrics.snapshot()
    assert not not_done
    assert all(isinstance(f.result(), flavour.kind) for f in done)
    assert snapshot["completed"] == n == server.stats.requests
    assert server.stats.connections <= 8  # the pool keeps its connections alive


def test_outside_an_executor_the_client_is_an_ordinary_client(flavour: Flavour, server: MockServer) -> None:
    with flavour.make(server, max_retries=1) as client:
        server.script(["429:10"])
        result = flavour.create(client)(**flavour.request())
    assert isinstance(result, flavour.kind)
    assert server.stats.requests == 2
