"""RateLimiter on the shared FakeClock: FIFO, exact waits, wake-ups, failures; no real sleeping."""

import threading
import time

import pytest

from apiexec.errors import CapacityError, ConfigError, StorageError
from apiexec.limits.bucket import MemoryBackend
from apiexec.limits.limiter import MAX_PAUSE, RateLimiter
from apiexec.limits.rate_limits import RateLimits
from tests.helpers import FakeClock


def until(predicate, timeout=5.0):
    """Wait (really) until another thread reached a state; the test's own sync only."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "state never reached"
        time.sleep(0.001)


def limiter_on(clock, max_wait=30.0, **limits):
    backend = MemoryBackend(limits=RateLimits(**limits), clock=clock.now)
    return RateLimiter(backend, max_wait=max_wait, waiter=clock)


class Caller(threading.Thread):
    def __init__(self, limiter, clock, tokens=0, cancelled=lambda: False):
        super().__init__(daemon=True)
        self.limiter, self.clock, self.tokens, self.cancelled = limiter, clock, tokens, cancelled
        self.result = self.error = self.granted_at = None

    def run(self):
        try:
            self.result = self.limiter.acquire(self.tokens, cancelled=self.cancelled)
            self.granted_at = self.clock.now()
        except Exception as exc:  # handed to the test
            self.error = exc


def start_in_order(limiter, callers):
    for i, caller in enumerate(callers):
        caller.start()
        until(lambda i=i, caller=caller: limiter.waiting == i + 1 or caller.result is not None)


def test_waiters_are_served_first_come_first_served_exactly_when_due():
    clock = FakeClock()
    limiter = limiter_on(clock, requests=1, interval=1.0)
    assert limiter.acquire() is True  # the bucket's one unit
    callers = [Caller(limiter, clock) for _ in range(3)]
    start_in_order(limiter, callers)
    assert limiter.waiting == 3
    for expected in (1.0, 2.0, 3.0):
        clock.advance(1.0)
        until(lambda expected=expected: sum(c.granted_at == expected for c in callers) == 1)
    for caller in callers:
        caller.join(5)
    assert [c.granted_at for c in callers] == [1.0, 2.0, 3.0]  # in arrival order, on time
    assert limiter.waiting == 0
    assert 1.0 in clock.waits  # the head slept exactly until its capacity was due


def test_try_acquire_never_jumps_the_queue():
    clock = FakeClock()
    limiter = limiter_on(clock, requests=2, interval=1.0)
    assert limiter.try_acquire() and limiter.try_acquire()
    caller = Caller(limiter, clock)
    start_in_order(limiter, [caller])
    clock.advance(0.5)  # one unit is due: the waiter gets it, not try_acquire
    caller.join(5)
    assert caller.result is True and caller.granted_at == 0.5
    assert limiter.try_acquire() is False


def test_cancelled_waiter_gives_up_and_leaves_the_queue():
    clock = FakeClock()
    limiter = limiter_on(clock, requests=1, interval=3600.0)
    limiter.acquire()
    stop = threading.Event()
    caller = Caller(limiter, clock, cancelled=stop.is_set)
    start_in_order(limiter, [caller])
    stop.set()
    limiter.wake()
    caller.join(5)
    assert caller.result is False and limiter.waiting == 0


def test_a_refund_wakes_the_head_without_time_passing():
    clock = FakeClock()
    limiter = limiter_on(clock, tokens=1000, interval=60.0)
    limiter.acquire(1000)
    caller = Caller(limiter, clock, tokens=400)
    start_in_order(limiter, [caller])
    limiter.adjust(985)  # the first call used only 15 tokens
    caller.join(5)
    assert caller.result is True and caller.granted_at == 0.0


def test_a_server_pause_delays_everyone_and_is_capped():
    clock = FakeClock()
    limiter = limiter_on(clock)  # no limits at all: only the pause binds
    limiter.pause(10 ** 9)  # an absurd retry-after
    limiter.pause(float("nan"))  # ignored
    caller = Caller(limiter, clock)
    start_in_order(limiter, [caller])
    clock.advance(MAX_PAUSE - 1)
    assert caller.result is None
    clock.advance(1)
    caller.join(5)
    assert caller.granted_at == MAX_PAUSE


def test_a_call_that_can_never_fit_fails_at_once():
    clock = FakeClock()
    limiter = limiter_on(clock, tokens=100)
    with pytest.raises(CapacityError, match="101 tokens"):
        limiter.acquire(101)
    with pytest.raises(CapacityError):
        limiter.try_acquire(101)
    assert limiter.waiting == 0 and clock.waits == []


def test_a_storage_failure_reaches_the_caller_and_the_next_waiter_moves_up():
    clock = FakeClock()

    class Failing(MemoryBackend):
        fail = False

        def acquire(self, requests, tokens):
            if self.fail:
                self.fail = False
                raise StorageError("limit storage down", url="redis://limits/0")
            return super().acquire(requests, tokens)

    backend = Failing(limits=RateLimits(requests=1, interval=1.0), clock=clock.now)
    limiter = RateLimiter(backend, max_wait=30.0, waiter=clock)
    limiter.acquire()
    first, second = Caller(limiter, clock), Caller(limiter, clock)
    start_in_order(limiter, [first, second])
    backend.fail = True
    clock.advance(1.0)
    first.join(5)
    second.join(5)
    assert isinstance(first.error, StorageError)
    assert second.result is True and second.granted_at == 1.0
    assert limiter.waiting == 0


def test_max_wait_bounds_each_sleep():
    clock = FakeClock(auto_advance=True)
    limiter = limiter_on(clock, max_wait=0.25, requests=1, interval=1.0)
    limiter.acquire()
    assert limiter.acquire() is True
    assert clock.waits == [0.25, 0.25, 0.25, 0.25]  # 1 s, slept in max_wait steps
    assert clock.now() == pytest.approx(1.0)


@pytest.mark.parametrize("max_wait", [0, -1, float("inf"), None])
def test_bad_max_wait_is_a_config_error(max_wait):
    with pytest.raises(ConfigError) as info:
        RateLimiter(MemoryBackend(), max_wait=max_wait)
    assert info.value.field == "max_wait"


def test_repr_shows_the_backend_and_the_queue():
    limiter = RateLimiter(MemoryBackend(limits=RateLimits(requests=5)))
    assert repr(limiter) == (
        "RateLimiter(MemoryBackend(RateLimits(requests=5, tokens=None, interval=60.0, burst=None, "
        "token_burst=None)), waiting=0)"
    )


def test_a_deadline_ends_the_wait_exactly_on_time():
    clock = FakeClock(auto_advance=True)
    limiter = limiter_on(clock, max_wait=30.0, requests=1, interval=3600.0)
    limiter.acquire()
    assert limiter.acquire(deadline=5.0) is False  # capacity due in an hour; gave up at 5 s
    assert clock.now() == pytest.approx(5.0)
    assert limiter.waiting == 0
    clock.advance(3600)
    assert limiter.acquire(deadline=clock.now()) is True  # due now: granted, deadline or not


@pytest.mark.timeout(60)
def test_refunds_racing_with_new_waiters_never_lose_a_wake_up():
    # Capacity only ever comes back through refunds (the hour's refill is
    # negligible), and a waiter sleeps up to 30 s unless woken: a refund that
    # skipped the wake-up while a caller was joining the line would stall it.
    backend = MemoryBackend(limits=RateLimits(requests=10**9, tokens=100, interval=3600.0))
    limiter = RateLimiter(backend, max_wait=30.0)
    rounds, threads = 200, 8
    done = []

    def caller():
        for _ in range(rounds):
            assert limiter.acquire(60)  # two can never hold it at once
            time.sleep(0.0001)  # let the others join the line meanwhile
            limiter.adjust(60)
        done.append(1)

    workers = [threading.Thread(target=caller, daemon=True) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(50)
    assert len(done) == threads
    assert time.monotonic() - started < 25  # no waiter slept out its 30 s
    assert limiter.waiting == 0


def test_a_caller_that_must_wait_asks_the_storage_once_per_check():
    # A shared storage answers each ask with a round trip: the caller who finds
    # the line empty but the bucket short must not ask twice before sleeping.
    clock = FakeClock()
    backend = MemoryBackend(limits=RateLimits(requests=1, interval=1.0), clock=clock.now)
    asks = []
    real = backend.acquire

    def counting(requests, tokens):
        asks.append(clock.now())
        return real(requests, tokens)

    backend.acquire = counting
    limiter = RateLimiter(backend, max_wait=30.0, waiter=clock)
    assert limiter.acquire() is True and len(asks) == 1  # granted at once: one ask
    caller = Caller(limiter, clock)
    caller.start()
    until(lambda: limiter.waiting == 1)
    assert len(asks) == 2  # "wait 1 s": asked once, then asleep
    clock.advance(1.0)
    caller.join(5)
    assert caller.result is True and caller.granted_at == 1.0
    assert len(asks) == 3  # woken when due: the one ask that grants
