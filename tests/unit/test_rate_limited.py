"""RateLimitedExecutor and RateLimiter: limits held, FIFO, no polling, corrections."""

import threading
import time
from unittest.mock import Mock

import pytest

from apiexec import APICalling, CapacityError, ConfigError, Event, RateLimitedExecutor
from apiexec.call_context import note_response
from apiexec.limits.bucket import MemoryBackend, ServerLimits
from apiexec.limits.limiter import RateLimiter
from tests.helpers import Recorder, work


class TokenEvent(Event):
    """An event that reserves tokens and reports usage like an API response."""

    def __init__(self, fn, required_tokens=None, used=None):
        super().__init__(fn)
        self.required_tokens = required_tokens
        self._used = used

    @property
    def used_tokens(self):
        return self._used


@pytest.mark.parametrize(
    "kwargs, field",
    [({"limit_requests": 0}, "limit_requests"), ({"limit_tokens": -5}, "limit_tokens"), ({"interval": 0}, "interval"),
     ({"limit_requests": float("nan")}, "limit_requests"), ({"queue_capacity": 0}, "queue_capacity")],
)
def test_invalid_limits_raise_value_error_naming_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RateLimitedExecutor(**kwargs)


def test_no_limits_means_none_available_levels():
    ex = RateLimitedExecutor()
    assert ex.available_request is None
    assert ex.available_token is None


def test_oversized_call_fails_at_once_naming_both_numbers():
    ex = RateLimitedExecutor(limit_tokens=100, event_type=Event)
    with ex:
        future = ex.submit(TokenEvent(lambda: "never", required_tokens=101))
        with pytest.raises(CapacityError, match=r"101 tokens.*limit_tokens is 100"):
            future.result(timeout=2)
    with pytest.raises(CapacityError):
        ex.request_permission(TokenEvent(int, required_tokens=500))


def test_denied_calls_wait_in_fifo_order_and_are_never_dropped():
    rec = Recorder()
    ex = RateLimitedExecutor(limit_requests=4, interval=0.4, concurrency_limit=4, event_type=Event)
    with ex:
        futures = [ex.submit(work(rec, i)) for i in range(12)]
        assert [f.result(timeout=10) for f in futures] == list(range(12))
    # 4 at once, then one every 0.1 s: 8 more take ~0.8 s.
    span = rec.start_times[-1] - rec.start_times[0]
    assert 0.6 <= span < 3.0
    starts = sorted(rec.calls)
    assert starts == list(range(12))


def test_wake_latency_is_small():
    rec = Recorder()
    ex = RateLimitedExecutor(limit_requests=1, interval=0.5, concurrency_limit=2, event_type=Event)
    with ex:
        ex.submit(work(rec, 0)).result(timeout=5)
        t0 = rec.start_times[0]
        ex.submit(work(rec, 1)).result(timeout=5)
    lateness = rec.start_times[1] - (t0 + 0.5)
    assert -0.01 <= lateness < 0.1  # due at +0.5 s: starts within a few ms (generous margin)


def test_request_limit_holds_over_a_window():
    rec = Recorder()
    ex = RateLimitedExecutor(limit_requests=5, interval=0.5, concurrency_limit=8, event_type=Event)
    with ex:
        for i in range(15):
            ex.submit(work(rec, i))
        assert ex.join(timeout=10)
    times = rec.start_times
    for i in range(len(times)):
        in_window = sum(1 for t in times if times[i] <= t < times[i] + 0.5)
        assert in_window <= 5 + 5 * 0.5 / 0.5 + 1


def test_usage_correction_keeps_overestimated_runs_fast():
    # Each call reserves 1000 tokens and reports 15: without correction 20 calls
    # against 5000 tokens/min would take ~3 minutes.
    ex = RateLimitedExecutor(limit_tokens=5000, interval=60.0, concurrency_limit=4, event_type=Event)
    start = time.monotonic()
    with ex:
        futures = [ex.submit(TokenEvent(lambda: {"ok": 1}, required_tokens=1000, used=15)) for _ in range(20)]
        for f in futures:
            f.result(timeout=20)
    assert time.monotonic() - start < 5
    assert ex.available_token >= 5000 - 20 * 15 - 1


def test_usage_overrun_is_charged():
    ex = RateLimitedExecutor(limit_tokens=1000, interval=60.0, event_type=Event)
    with ex:
        ex.submit(TokenEvent(lambda: {}, required_tokens=100, used=400)).result(timeout=5)
    assert ex.available_token == pytest.approx(600, abs=2)


def test_server_429_pauses_every_call():
    rec = Recorder()

    def throttled():
        rec.note("429")
        note_response(429, {"retry-after-ms": "400"})
        return "after-429"

    ex = RateLimitedExecutor(concurrency_limit=4, event_type=Event)
    with ex:
        ex.submit(Event(throttled)).result(timeout=5)
        t0 = time.monotonic()
        futures = [ex.submit(work(rec, i)) for i in range(4)]
        for f in futures:
            f.result(timeout=5)
    waited = min(rec.start_times[1:]) - t0
    assert 0.3 <= waited < 2.0


def test_process_event_respects_the_limit():
    ex = RateLimitedExecutor(limit_requests=1, interval=0.3, event_type=Event)
    rec = Recorder()
    ex.process_event(work(rec, 0))
    ex.process_event(work(rec, 1))
    assert rec.start_times[1] - rec.start_times[0] >= 0.25


def test_api_calling_token_estimate_is_reserved():
    class FakeEndpoint:
        def call(self, request, cache_control=False):
            return {"usage": {"total_tokens": 7}}

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi " * 40}], "max_tokens": 50}
    ex = RateLimitedExecutor(limit_tokens=10_000, interval=3600.0)
    call = APICalling(FakeEndpoint(), body, requires_tokens=True)
    reserved = call.required_tokens
    assert reserved > 50
    with ex:
        ex.submit(call).result(timeout=5)
    assert call.used_tokens == 7
    assert ex.available_token == pytest.approx(10_000 - 7, abs=1)


def test_limiter_fifo_among_threads():
    limiter = RateLimiter(MemoryBackend(1, None, 0.1), max_wait=5.0)
    assert limiter.acquire()
    order = []
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: limiter.acquire() and order.append(i))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 2
        while limiter.waiting < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_try_acquire_respects_waiters_turn():
    limiter = RateLimiter(MemoryBackend(1, None, 0.2), max_wait=5.0)
    assert limiter.try_acquire()
    t = threading.Thread(target=limiter.acquire)
    t.start()
    while not limiter.waiting:
        time.sleep(0.001)
    time.sleep(0.25)  # capacity is due now, but the waiter is first in line
    assert limiter.try_acquire() is False
    t.join(5)


def test_cancelled_acquire_returns_false_at_once():
    limiter = RateLimiter(MemoryBackend(1, None, 3600.0), max_wait=30.0)
    limiter.acquire()
    flag = threading.Event()
    result = []
    t = threading.Thread(target=lambda: result.append(limiter.acquire(cancelled=flag.is_set)))
    t.start()
    time.sleep(0.05)
    start = time.monotonic()
    flag.set()
    limiter.wake()
    t.join(2)
    assert result == [False]
    assert time.monotonic() - start < 0.5
    assert not limiter.waiting


def test_hammering_try_acquire_never_overgrants():
    backend = MemoryBackend(100, 1000, 3600.0)
    limiter = RateLimiter(backend)
    start_requests, start_tokens = backend.levels()  # the buckets' capacities (burst rule)
    granted = []
    lock = threading.Lock()
    barrier = threading.Barrier(32)

    def hammer():
        barrier.wait()
        mine = 0
        for _ in range(50):
            if limiter.try_acquire(7):
                mine += 1
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=hammer) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(granted) == min(int(start_requests), int(start_tokens) // 7)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_process_event_that_can_never_fit_fails_and_raises():
    ex = RateLimitedExecutor(limit_tokens=10, event_type=Event)
    event = TokenEvent(lambda: "never", required_tokens=11)
    future = ex.append(event)
    with pytest.raises(CapacityError):
        ex.process_event(event)
    with pytest.raises(CapacityError):
        future.result(timeout=0)


def test_request_limit_below_one_per_interval_still_runs():
    ex = RateLimitedExecutor(limit_requests=0.5, interval=60.0, event_type=Event)
    with ex:
        assert ex.submit(Event(lambda: "first")).result(timeout=5) == "first"
    assert ex.available_request == 0


def test_a_huge_retry_after_pauses_at_most_max_pause():
    from apiexec.limits.limiter import MAX_PAUSE

    clock_now = [0.0]
    backend = MemoryBackend(None, None, 60.0, clock=lambda: clock_now[0])
    limiter = RateLimiter(backend)
    limiter.pause(86_400.0)
    assert backend.acquire(1, 0) == pytest.approx(MAX_PAUSE)
    limiter.pause(float("nan"))
    limiter.pause(-5)
    assert backend.acquire(1, 0) == pytest.approx(MAX_PAUSE)


def test_a_learnt_token_limit_smaller_than_the_call_fails_fast():

    ex = RateLimitedExecutor(event_type=Event)
    ex.limiter.backend.sync(ServerLimits(limit_tokens=10_000, remaining_tokens=9_000, reset_tokens=6.0))
    with ex:
        future = ex.submit(TokenEvent(lambda: "never", required_tokens=12_000))
        with pytest.raises(CapacityError, match="12000 tokens"):
            future.result(timeout=5)
        assert ex.submit(TokenEvent(lambda: "fits", required_tokens=10)).result(timeout=5) == "fits"


def test_usage_is_charged_even_when_nothing_was_reserved():
    ex = RateLimitedExecutor(limit_tokens=1000, interval=3600.0, event_type=Event)
    with ex:
        for _ in range(3):
            ex.submit(TokenEvent(lambda: {}, required_tokens=None, used=300)).result(timeout=5)
    assert ex.available_token == pytest.approx(100, abs=2)


def test_usage_is_settled_before_join_returns():
    ex = RateLimitedExecutor(limit_tokens=1000, interval=3600.0, event_type=Event)
    with ex:
        ex.submit(TokenEvent(lambda: {}, required_tokens=500, used=100))
        assert ex.join(timeout=5)
        assert ex.available_token == pytest.approx(900, abs=2)


def test_a_failing_settlement_does_not_lose_the_result(caplog):
    ex = RateLimitedExecutor(event_type=Event)
    ex.admission.settle = Mock(side_effect=RuntimeError("bookkeeping broke"))
    with ex:
        assert ex.submit(Event(lambda: "kept")).result(timeout=5) == "kept"
    assert "bookkeeping broke" in caplog.text


def test_burst_sets_the_request_bucket_capacity():
    ex = RateLimitedExecutor(limit_requests=12_000, interval=60.0, burst=20)
    assert ex.available_request == 20
    assert ex.rate_limits.request_capacity == 20


def test_default_burst_is_about_one_second_for_large_per_minute_limits():
    ex = RateLimitedExecutor(limit_requests=12_000, interval=60.0)
    assert 150 <= ex.available_request <= 200  # not the whole minute's 12,000


def test_absurd_burst_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="burst"):
        RateLimitedExecutor(limit_requests=100, burst=0)
