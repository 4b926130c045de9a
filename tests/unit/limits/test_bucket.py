"""Token bucket math on a fake clock: continuous refill, atomic dual take."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiexec.limits.bucket import MemoryBackend, TokenBucket
from apiexec.limits.rate_limits import RateLimits
from tests.helpers import FakeClock


def test_bucket_starts_full_and_refills_continuously():
    bucket = TokenBucket.full(limit=10, interval=60.0, now=0.0)
    assert bucket.level == 10
    bucket.take(10)
    bucket.refill(6.0)  # 10/60 per second for 6 s
    assert bucket.level == pytest.approx(1.0)
    bucket.refill(1000.0)
    assert bucket.level == 10  # capped at capacity


def test_bucket_wait_for_is_exact():
    bucket = TokenBucket.full(limit=2, interval=1.0, now=0.0)
    bucket.take(2)
    assert bucket.wait_for(1) == pytest.approx(0.5)
    assert bucket.wait_for(2) == pytest.approx(1.0)


def test_clock_going_backwards_adds_nothing():
    bucket = TokenBucket.full(limit=5, interval=1.0, now=10.0)
    bucket.take(5)
    bucket.refill(9.0)
    assert bucket.level == 0


def test_dual_take_is_all_or_nothing():
    clock = FakeClock()
    backend = MemoryBackend(
        limit_requests=10, limit_tokens=100, interval=60.0, clock=clock
    )
    assert backend.acquire(1, 80) == 0.0
    wait = backend.acquire(1, 50)  # tokens short: the request must not be taken either
    assert wait == pytest.approx(30 / (100 / 60))
    assert backend.levels() == (pytest.approx(9), pytest.approx(20))


def test_request_limit_enforced_without_token_limit():
    clock = FakeClock()
    backend = MemoryBackend(
        limit_requests=2, limit_tokens=None, interval=1.0, clock=clock
    )
    assert backend.acquire(1, 999) == 0.0
    assert backend.acquire(1, 999) == 0.0
    assert backend.acquire(1, 0) == pytest.approx(0.5)
    clock.advance(0.5)
    assert backend.acquire(1, 0) == 0.0


def test_adjust_refunds_and_charges_tokens():
    clock = FakeClock()
    backend = MemoryBackend(
        limit_requests=None, limit_tokens=1000, interval=60.0, clock=clock
    )
    backend.acquire(1, 1000)
    backend.adjust(985)  # reserved 1000, used 15
    assert backend.levels()[1] == pytest.approx(985)
    backend.adjust(-1500)  # an overrun goes negative and delays later calls
    assert backend.levels()[1] == pytest.approx(-515)
    assert backend.acquire(1, 1) == pytest.approx(516 / (1000 / 60))


def test_pause_blocks_everything_until_due():
    clock = FakeClock()
    backend = MemoryBackend(
        limit_requests=100, limit_tokens=None, interval=60.0, clock=clock
    )
    backend.pause(2.0)
    backend.pause(1.0)  # a shorter pause never shortens the longer one
    assert backend.acquire(1, 0) == pytest.approx(2.0)
    clock.advance(2.0)
    assert backend.acquire(1, 0) == 0.0


def test_no_limits_always_grants():
    backend = MemoryBackend(None, None, 60.0, clock=FakeClock())
    assert all(backend.acquire(1, 10**9) == 0.0 for _ in range(1000))
    assert backend.levels() == (None, None)


def _granted_times(limit, interval, gaps, tokens=None):
    clock = FakeClock()
    backend = MemoryBackend(limit, None if tokens is None else limit, interval, clock)
    grants = []
    for i, gap in enumerate(gaps):
        clock.advance(gap)
        amount = 0 if tokens is None else tokens[i]
        if backend.acquire(1, amount) == 0.0:
            grants.append((clock.now(), 1 if tokens is None else amount))
    return grants


def _assert_window_bound(grants, limit, interval):
    # In no window of length w is more than limit + limit * w / interval granted.
    for i in range(len(grants)):
        total = 0
        for j in range(i, len(grants)):
            total += grants[j][1]
            w = grants[j][0] - grants[i][0]
            assert total <= limit + limit * w / interval + 1e-6


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=20),
    interval=st.floats(min_value=0.1, max_value=10.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=120),
)
def test_property_requests_never_exceed_window_bound(limit, interval, gaps):
    _assert_window_bound(_granted_times(limit, interval, gaps), limit, interval)


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(min_value=10, max_value=500),
    data=st.data(),
)
def test_property_tokens_never_exceed_window_bound(limit, data):
    n = data.draw(st.integers(min_value=1, max_value=80))
    gaps = data.draw(
        st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=n, max_size=n)
    )
    tokens = data.draw(
        st.lists(st.integers(min_value=0, max_value=limit), min_size=n, max_size=n)
    )
    clock = FakeClock()
    backend = MemoryBackend(None, limit, 1.0, clock)
    grants = []
    for gap, amount in zip(gaps, tokens):
        clock.advance(gap)
        if backend.acquire(1, amount) == 0.0:
            grants.append((clock.now(), amount))
    _assert_window_bound(grants, limit, 1.0)


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=50),
    interval=st.floats(min_value=0.5, max_value=120.0),
)
def test_property_steady_state_rate_is_the_limit(limit, interval):
    # Asking as fast as possible for 10 intervals grants capacity + limit * 10 (full start + refill).
    clock = FakeClock()
    backend = MemoryBackend(limit, None, interval, clock)
    capacity = RateLimits(requests=limit, interval=interval).request_capacity
    granted = 0
    step = interval / limit / 7
    for _ in range(int(10 * interval / step)):
        if backend.acquire(1, 0) == 0.0:
            granted += 1
        clock.advance(step)
    assert abs(granted - (capacity + limit * 10)) <= 2


def test_wait_answer_is_exactly_when_capacity_is_due():
    clock = FakeClock()
    backend = MemoryBackend(3, None, 3.0, clock)
    for _ in range(3):
        assert backend.acquire(1, 0) == 0.0
    wait = backend.acquire(1, 0)
    clock.advance(wait)
    assert backend.acquire(1, 0) == 0.0
    assert math.isclose(wait, 1.0)
