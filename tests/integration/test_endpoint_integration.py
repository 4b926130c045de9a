"""Endpoint over real loopback sockets: pooling, retries, timeouts, concurrency."""

import time

import pytest

from apiexec import APICalling, APITimeoutError, Endpoint, EndpointConfig, ExecutionStatus, RateLimitedExecutor
from apiexec.mock.server import MockServer, MockServerConfig

pytestmark = pytest.mark.integration

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def config(server, **kw):
    base = dict(provider="mock", endpoint="v1/chat/completions", base_url=server.url,
                backoff_base=0.01, backoff_max=0.05)
    base.update(kw)
    return EndpointConfig(**base)


@pytest.mark.timeout(120)
def test_300_calls_through_20_percent_failures_lose_nothing_and_reuse_connections():
    concurrency = 8
    with MockServer(MockServerConfig(fail_rate=0.15, drop_rate=0.05, latency_ms=2, seed=3)) as server:
        endpoint = Endpoint(config(server, max_retries=10, pool_maxsize=concurrency))
        executor = RateLimitedExecutor(concurrency_limit=concurrency)
        calls = [APICalling(endpoint, BODY) for _ in range(300)]
        with endpoint, executor:
            for call in calls:
                executor.submit(call)
            assert executor.join(timeout=90)
        stats = server.stats
    assert all(c.execution.status is ExecutionStatus.COMPLETED for c in calls)
    attempts = sum(c.execution.attempts for c in calls)
    assert attempts == stats.requests  # every attempt reached the server, none was hidden
    failures = stats.requests - 300
    assert 30 <= failures <= 120  # ~20 % of attempts were failed on purpose
    assert stats.max_in_flight <= concurrency
    assert stats.max_in_flight >= 2
    # Connections are reused: new ones only where the server dropped one.
    assert stats.connections <= concurrency + stats.dropped
    assert executor.metrics.snapshot()["retries"] == failures


def test_read_timeout_over_a_real_socket_is_retried_then_reported():
    with MockServer(MockServerConfig()) as server:
        server.script(["slow:800", "slow:800"])
        endpoint = Endpoint(config(server, timeout=0.2, max_retries=1))
        with endpoint:
            start = time.monotonic()
            with pytest.raises(APITimeoutError):
                endpoint.call(BODY)
            elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 1.5
    assert server.stats.requests == 2


def test_retry_after_ms_is_honoured_over_the_wire():
    with MockServer(MockServerConfig()) as server:
        server.script(["429:300"])
        endpoint = Endpoint(config(server, max_retries=2))
        with endpoint:
            start = time.monotonic()
            answer = endpoint.call(BODY)
            elapsed = time.monotonic() - start
    assert answer["object"] == "chat.completion"
    assert elapsed >= 0.28
    assert server.stats.rate_limited == 1


def test_one_session_serves_many_threads_with_one_pool():
    with MockServer(MockServerConfig(latency_ms=20)) as server:
        endpoint = Endpoint(config(server, pool_maxsize=4))
        executor = RateLimitedExecutor(concurrency_limit=4)
        with endpoint, executor:
            list(executor.map(APICalling(endpoint, BODY) for _ in range(40)))
            session = endpoint.client
        assert endpoint.client is None
        stats = server.stats
    assert session is not None
    assert stats.connections <= 4
    assert stats.max_in_flight == 4
