"""Limits learnt from the server: header sync, 429 pauses, gated retries, usage."""

import time

import pytest

from apiexec import APICalling, Endpoint, EndpointConfig, Event, RateLimitedExecutor
from apiexec.call_context import call_context, note_attempt
from apiexec.errors import ExecutorNotRunning
from apiexec.limits.bucket import MemoryBackend, ServerLimits, TokenBucket, sync_bucket
from apiexec.mock.server import MockServer, MockServerConfig

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def endpoint_for(server, **kw):
    return Endpoint(EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=server.url, **kw))


# -- unit: sync arithmetic ---------------------------------------------------------


def test_sync_learns_rate_and_capacity_when_no_limit_configured():
    bucket = sync_bucket(None, True, (1200, 1, 0.05), now=10.0)
    assert bucket.rate == pytest.approx(20.0)  # 1200 per minute
    assert bucket.capacity == pytest.approx(2.0)  # 1 remaining + 0.05 s * 20/s
    assert bucket.level == 1


def test_sync_never_raises_the_level_of_a_configured_bucket():
    bucket = TokenBucket.full(limit=100, interval=60.0, now=0.0)
    bucket.take(90)
    same = sync_bucket(bucket, False, (500, 400, 1.0), now=0.0)
    assert same is bucket and bucket.level == pytest.approx(10)
    assert bucket.capacity == 100 and bucket.rate == pytest.approx(100 / 60)
    sync_bucket(bucket, False, (500, 3, 1.0), now=0.0)
    assert bucket.level == 3


def test_sync_without_remaining_or_limit_changes_nothing():
    assert sync_bucket(None, True, (None, 5, 1.0), now=0.0) is None
    assert sync_bucket(None, True, (100, None, 1.0), now=0.0) is None


def test_memory_backend_sync_then_paces_at_the_learned_rate():
    clock = FakeClock()
    backend = MemoryBackend(None, None, 60.0, clock)
    backend.sync(ServerLimits(limit_requests=600, remaining_requests=0, reset_requests=0.1))
    assert backend.acquire(1, 0) == pytest.approx(0.1)  # 10/s: next one in 0.1 s
    clock.now = 0.1
    assert backend.acquire(1, 0) == 0.0
    backend.sync(ServerLimits(limit_tokens=60_000, remaining_tokens=500, reset_tokens=1.0))
    assert backend.acquire(1, 600) > 0  # learned token bucket: 500 left


def test_retry_gate_refusal_stops_the_retry():
    with call_context(retry_gate=lambda: False):
        note_attempt()  # the first attempt is not gated
        with pytest.raises(ExecutorNotRunning):
            note_attempt()


# -- integration over loopback -----------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_no_client_limit_converges_on_the_servers_pace():
    with MockServer(MockServerConfig(requests_per_minute=1200, request_burst=2)) as server:
        endpoint = endpoint_for(server, max_retries=10)
        executor = RateLimitedExecutor(concurrency_limit=8)
        start = time.monotonic()
        with endpoint, executor:
            results = list(executor.map(APICalling(endpoint, BODY) for _ in range(60)))
        elapsed = time.monotonic() - start
        rejected = server.stats.rate_limited
    ideal = (60 - 2) / 20
    assert len(results) == 60
    assert elapsed <= 1.5 * ideal, f"{elapsed:.2f}s vs ideal {ideal:.2f}s"
    assert rejected <= 15
    assert executor.metrics.snapshot()["rate_limited"] == rejected


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_429_pauses_every_worker_until_the_servers_time():
    with MockServer(MockServerConfig(record_bodies=True)) as server:
        server.script(["429:600"])
        endpoint = endpoint_for(server, max_retries=3)
        executor = RateLimitedExecutor(concurrency_limit=4)
        with endpoint, executor:
            first = executor.submit(APICalling(endpoint, BODY))
            deadline = time.monotonic() + 5
            while server.stats.rate_limited == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            paused_at = time.monotonic()
            others = [executor.submit(APICalling(endpoint, BODY)) for _ in range(4)]
            for f in others:
                f.result(timeout=10)
            waited = time.monotonic() - paused_at
            assert first.result(timeout=10)["object"] == "chat.completion"
    assert waited >= 0.45
    assert server.stats.rate_limited == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_overestimated_tokens_are_given_back():
    with MockServer(MockServerConfig()) as server:
        endpoint = endpoint_for(server)
        executor = RateLimitedExecutor(limit_tokens=5000, interval=60.0, concurrency_limit=4)
        calls = []
        for _ in range(20):
            call = APICalling(endpoint, BODY, requires_tokens=True)
            call.required_tokens = 1000
            calls.append(call)
        start = time.monotonic()
        with endpoint, executor:
            list(executor.map(calls))
        elapsed = time.monotonic() - start
    used = sum(c.used_tokens for c in calls)
    assert 0 < used < 20 * 100
    assert elapsed < 10  # without correction: 15,000 tokens over the limit, ~3 minutes
    snap = executor.metrics.snapshot()
    assert snap["tokens_reserved"] == 20_000 and snap["tokens_used"] == used


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_retries_take_capacity_from_the_bucket():
    with MockServer(MockServerConfig()) as server:
        server.script(["500", "500"])
        endpoint = endpoint_for(server, max_retries=3, backoff_base=0.001, backoff_max=0.002)
        executor = RateLimitedExecutor(limit_requests=2, interval=1.0, concurrency_limit=1)
        start = time.monotonic()
        with endpoint, executor:
            call = APICalling(endpoint, BODY)
            executor.submit(call).result(timeout=10)
        elapsed = time.monotonic() - start
    assert call.execution.attempts == 3
    assert elapsed >= 0.4  # 3 attempts against 2 per second: the third waits ~0.5 s


def test_retry_waiting_at_shutdown_fails_instead_of_hanging():
    def flaky():
        note_attempt()
        note_attempt()  # a retry: must pass the gate
        return "sent"

    executor = RateLimitedExecutor(limit_requests=1, interval=3600.0, event_type=Event)
    with executor:
        future = executor.submit(Event(flaky))
        time.sleep(0.1)
        start = time.monotonic()
    assert time.monotonic() - start < 1.0
    with pytest.raises(ExecutorNotRunning):
        future.result(timeout=0)


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_leaving_the_executor_ends_a_long_retry_backoff_at_once():
    with MockServer(MockServerConfig()) as server:
        server.script(["429:20000"])  # the server asks for a 20 s wait
        endpoint = endpoint_for(server, max_retries=3)
        executor = RateLimitedExecutor(concurrency_limit=2)
        with endpoint:
            with executor:
                future = executor.submit(APICalling(endpoint, BODY))
                deadline = time.monotonic() + 5
                while server.stats.rate_limited == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(0.05)  # the call is now in its backoff
                start = time.monotonic()
            left_after = time.monotonic() - start
    assert left_after < 2.0
    with pytest.raises(ExecutorNotRunning, match="waited to retry"):
        future.result(timeout=0)
    assert server.stats.requests == 1
