"""RateLimits and pacing: the burst rule, big calls, learnt limits, on a fake clock."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiexec.errors import CapacityError, ConfigError
from apiexec.limits.bucket import MemoryBackend, ServerLimits, TokenBucket, sync_bucket
from apiexec.limits.rate_limits import (
    MIN_REQUEST_BURST,
    MIN_TOKEN_BURST,
    RateLimits,
    default_capacity,
    resolve_limits,
)
from tests.helpers import FakeClock

# -- the value object ------------------------------------------------------------------


def test_rate_limits_is_a_frozen_value_with_a_readable_repr():
    limits = RateLimits.per_minute(requests=500, tokens=200_000)
    assert repr(limits) == "RateLimits(requests=500, tokens=200000, interval=60.0, burst=None, token_burst=None)"
    assert limits == RateLimits(requests=500, tokens=200_000, interval=60.0)
    with pytest.raises(AttributeError):
        limits.requests = 1
    assert RateLimits.per_second(requests=200, burst=20).interval == 1.0
    assert RateLimits().request_capacity is None and RateLimits().token_capacity is None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"requests": 0}, "requests"),
        ({"requests": -5}, "requests"),
        ({"tokens": float("nan")}, "tokens"),
        ({"tokens": True}, "tokens"),
        ({"interval": 0}, "interval"),
        ({"interval": float("inf")}, "interval"),
        ({"requests": 10, "burst": 0.5}, "burst"),
        ({"requests": 10, "burst": "20"}, "burst"),
        ({"tokens": 10, "token_burst": 0}, "token_burst"),
        ({"requests": 1e30}, "requests"),  # a typo, and overflowing arithmetic
        ({"interval": 1e-9}, "interval"),
        ({"interval": 1e12}, "interval"),
        ({"requests": 10, "burst": 1e300}, "burst"),
    ],
)
def test_bad_values_are_config_errors_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        RateLimits(**kwargs)
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")


def test_positional_arguments_are_refused():
    with pytest.raises(TypeError):
        RateLimits(10, 100)  # which is which? keyword-only


def test_one_spelling_or_the_other_not_both():
    limits = RateLimits(requests=5)
    assert resolve_limits(limits) is limits
    assert resolve_limits(None, limit_requests=5, interval=1.0) == RateLimits(requests=5, interval=1.0)
    with pytest.raises(ConfigError) as info:
        resolve_limits(limits, limit_requests=5)
    assert info.value.field == "limits"
    with pytest.raises(ConfigError):
        resolve_limits(limits, interval=1.0)
    with pytest.raises(ConfigError):
        resolve_limits({"requests": 5})
    with pytest.raises(ConfigError):
        MemoryBackend(5, limits=limits)


# -- the default burst rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    "limit, interval, floor, capacity",
    [
        (12_000, 60.0, MIN_REQUEST_BURST, 180),  # enforced as ~200/s: never more at once (less 10 %)
        (60_000, 60.0, MIN_REQUEST_BURST, 900),  # OpenAI's own example: 1,000/s
        (600, 60.0, MIN_REQUEST_BURST, 10),  # one second's worth is the floor
        (100, 60.0, MIN_REQUEST_BURST, 10),
        (10, 2.0, MIN_REQUEST_BURST, 10),  # the seed's small limits: the whole limit
        (2, 60.0, MIN_REQUEST_BURST, 2),
        (0.5, 60.0, MIN_REQUEST_BURST, 1),  # below one: still one unit
        (20, 0.1, MIN_REQUEST_BURST, 20),  # short interval: never more than the limit
        (2_000_000, 60.0, MIN_TOKEN_BURST, 30_000),
        (30_000, 60.0, MIN_TOKEN_BURST, 10_000),
        (1000, 2.0, MIN_TOKEN_BURST, 1000),
    ],
)
def test_default_capacity_is_one_seconds_worth_within_floor_and_limit(limit, interval, floor, capacity):
    assert default_capacity(limit, interval, floor) == pytest.approx(capacity)


def test_explicit_burst_wins_over_the_default():
    assert RateLimits.per_minute(requests=12_000, burst=500).request_capacity == 500
    assert RateLimits.per_minute(requests=10, burst=30).request_capacity == 30
    assert RateLimits.per_minute(tokens=90_000, token_burst=1234).token_capacity == 1234


def test_seed_semantics_hold_for_small_limits():
    clock = FakeClock()
    backend = MemoryBackend(limits=RateLimits(requests=10, tokens=1000, interval=2.0), clock=clock)
    assert backend.levels() == (10, 1000)  # available_request == limit_requests at start
    pair = MemoryBackend(limits=RateLimits(requests=2, interval=60.0), clock=clock)
    assert [pair.acquire(1, 0), pair.acquire(1, 0)] == [0.0, 0.0]  # two of two at once
    assert pair.acquire(1, 0) == pytest.approx(30.0)


def test_a_large_per_minute_limit_never_sends_more_than_a_seconds_worth_at_once():
    clock = FakeClock()
    backend = MemoryBackend(limits=RateLimits.per_minute(requests=12_000), clock=clock)
    granted = 0
    while backend.acquire(1, 0) == 0.0:
        granted += 1
    assert granted == 180
    assert backend.acquire(1, 0) == pytest.approx(1 / 200)


# -- against a model of the server: nginx limit_req ------------------------------------------


class LimitReq:
    """nginx ``limit_req rate=R burst=B nodelay`` (ngx_http_limit_req_module): 'excess'
    grows by one per request and drains at R/s; a request is refused if it would
    exceed B."""

    def __init__(self, rate, burst):
        self.rate, self.burst = rate, burst
        self.excess, self.last = None, None
        self.accepted = self.rejected = 0

    def offer(self, now):
        excess = 0.0 if self.excess is None else max(0.0, self.excess - self.rate * (now - self.last) + 1)
        if excess > self.burst + 1e-9:
            self.rejected += 1
            return
        self.excess, self.last = excess, now
        self.accepted += 1


def run_against(server, limits, calls=1000, first_delay=0.0):
    """Send as fast as the bucket allows; nothing arrives before ``first_delay`` (connection set-up)."""
    clock = FakeClock()
    backend = MemoryBackend(limits=limits, clock=clock)
    sent = 0
    arrivals = []
    while sent < calls:
        wait = backend.acquire(1, 0)
        if wait:
            clock.advance(wait)
            continue
        arrivals.append(max(clock.now(), first_delay))
        sent += 1
    for arrival in sorted(arrivals):
        server.offer(arrival)
    return server, clock.now()


@pytest.mark.parametrize(
    "limits, burst",
    [
        (RateLimits.per_minute(requests=12_000), 200),  # "12,000 per minute" vs a 1 s burst window
        (RateLimits.per_second(requests=200, burst=20), 20),  # "200/s, burst 20" vs burst=20
    ],
)
def test_pacing_matches_an_nginx_style_server(limits, burst):
    server, elapsed = run_against(LimitReq(rate=200, burst=burst), limits)
    assert server.rejected == 0
    assert (1000 - burst) / elapsed >= 0.95 * 200  # after the server's burst, its rate is the best


def test_the_default_headroom_absorbs_a_slow_first_call():
    # The server's window opens when the first call arrives, 50 ms after the client's opened.
    limits = RateLimits.per_minute(requests=12_000)
    assert run_against(LimitReq(rate=200, burst=200), limits, first_delay=0.05)[0].rejected == 0
    exact = RateLimits.per_minute(requests=12_000, burst=200)  # a bucket of exactly one second
    assert run_against(LimitReq(rate=200, burst=200), exact, first_delay=0.05)[0].rejected == 9


def test_the_old_full_minute_bucket_would_be_rejected_en_masse():
    # The model discriminates: a bucket holding the whole minute sends 1,000 at once.
    server, _ = run_against(LimitReq(rate=200, burst=200), RateLimits.per_minute(requests=12_000, burst=12_000))
    assert server.rejected > 700


# -- calls bigger than the burst ---------------------------------------------------------------


def test_a_call_larger_than_the_burst_waits_for_a_full_bucket_then_leaves_debt():
    clock = FakeClock()
    backend = MemoryBackend(limits=RateLimits.per_minute(tokens=60_000, token_burst=1000), clock=clock)
    assert backend.acquire(1, 5000) == 0.0  # full: the big call goes
    assert backend.levels()[1] == pytest.approx(-4000)
    assert backend.acquire(1, 1) == pytest.approx(4.001)  # the debt is paid at 1000/s
    clock.advance(5.0)
    assert backend.acquire(1, 5000) == 0.0
    with pytest.raises(CapacityError, match="60001 tokens"):
        backend.acquire(1, 60_001)  # more than the limit itself: never


@settings(max_examples=80, deadline=None)
@given(
    limit=st.integers(min_value=50, max_value=2000),
    burst=st.integers(min_value=1, max_value=50),
    data=st.data(),
)
def test_property_tokens_stay_inside_limit_plus_rate_with_a_small_burst(limit, burst, data):
    n = data.draw(st.integers(min_value=1, max_value=60))
    gaps = data.draw(st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=n, max_size=n))
    amounts = data.draw(st.lists(st.integers(min_value=1, max_value=limit), min_size=n, max_size=n))
    clock = FakeClock()
    backend = MemoryBackend(limits=RateLimits(tokens=limit, interval=1.0, token_burst=burst), clock=clock)
    grants = []
    for gap, amount in zip(gaps, amounts):
        clock.advance(gap)
        if backend.acquire(1, amount) == 0.0:
            grants.append((clock.now(), amount))
    for i in range(len(grants)):
        total = 0
        for j in range(i, len(grants)):
            total += grants[j][1]
            window = grants[j][0] - grants[i][0]
            # at most one call's debt (<= the limit) beyond what the rate allows
            assert total <= limit + limit * window + 1e-6


# -- learnt limits follow the same rule -------------------------------------------------------


def test_learnt_limits_follow_the_burst_rule():
    full = (12_000, 12_000, 0.0)  # limit, remaining, reset: the server's bucket is full
    bucket = sync_bucket(None, True, full, now=0.0)
    assert bucket.rate == pytest.approx(200) and bucket.capacity == pytest.approx(180)
    assert bucket.level == pytest.approx(180)  # the server's 12,000 left, but 180 at most at once
    capped = sync_bucket(None, True, full, now=0.0, limits=RateLimits(burst=20))
    assert capped.capacity == 20
    small = sync_bucket(None, True, (1200, 1, 0.05), now=0.0)
    assert small.capacity == pytest.approx(2.0)  # the server's own bucket is smaller still
    tokens = sync_bucket(None, True, (2_000_000, 2_000_000, 0.0), now=0.0, tokens=True)
    assert tokens.capacity == pytest.approx(30_000) and tokens.ceiling == 2_000_000


def test_memory_backend_learns_a_paced_bucket_from_headers():
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    backend.sync(ServerLimits(limit_requests=12_000, remaining_requests=12_000, reset_requests=0.0))
    granted = 0
    while backend.acquire(1, 0) == 0.0:
        granted += 1
    assert granted == 180  # the learnt level is capped by the learnt capacity at once
    configured = MemoryBackend(limits=RateLimits(requests=12_000, burst=50), clock=clock)
    configured.sync(ServerLimits(limit_requests=99_999, remaining_requests=30, reset_requests=0.0))
    assert configured.levels()[0] == 30  # a configured bucket keeps its shape; the level follows


def test_token_bucket_full_keeps_its_plain_meaning():
    bucket = TokenBucket.full(limit=100, interval=60.0, now=0.0)
    assert bucket.capacity == bucket.ceiling == 100
    paced = TokenBucket.full(limit=100, interval=60.0, now=0.0, capacity=10)
    assert (paced.capacity, paced.ceiling, paced.level) == (10, 100, 10)
