"""The shared backends (SQLite, Redis) honour burst= and the default rule like memory does."""

import time

import pytest

from apiexec.errors import CapacityError, ConfigError, StorageError
from apiexec.limits.breaker import CircuitBreaker
from apiexec.limits.bucket import MemoryBackend, ServerLimits
from apiexec.limits.rate_limits import RateLimits
from apiexec.limits.sqlite import SQLiteBackend
from apiexec.limits.storage import backend_from_url, parse_storage_url
from tests.helpers import FakeClock

PACED = RateLimits.per_minute(requests=12_000)


def granted_at_once(backend):
    count = 0
    while backend.acquire(1, 0) == 0.0:
        count += 1
        assert count < 100_000
    return count


def assert_burst(backend, capacity, rate):
    """Exactly ``capacity`` on a fake clock; on Redis (the server's clock) plus what refilled meanwhile."""
    started = time.monotonic()
    count = granted_at_once(backend)
    if isinstance(backend, (MemoryBackend, SQLiteBackend)):
        assert count == capacity
    else:
        assert capacity <= count <= capacity + rate * (time.monotonic() - started) + 1


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def make(request, tmp_path):
    """A factory of backends on one shared place (for memory: one backend per call)."""
    clock = FakeClock(1_000_000.0)
    if request.param == "memory":
        return lambda limits, key="k": MemoryBackend(limits=limits, clock=clock)
    if request.param == "sqlite":
        return lambda limits, key="k": SQLiteBackend(tmp_path / "l.db", key=key, limits=limits, clock=clock)
    server = request.getfixturevalue("redis_server")
    prefix = f"{request.node.name}-{time.monotonic_ns()}"
    return lambda limits, key="k": backend_from_url(server.url, key=f"{prefix}-{key}", limits=limits)


def test_default_burst_caps_a_large_limit(make):
    backend = make(PACED)
    assert_burst(backend, 180, 200)
    for _ in range(3):
        wait = backend.acquire(1, 0)
        if wait > 0 or isinstance(backend, (MemoryBackend, SQLiteBackend)):
            break
        # Redis keeps the server's real clock: a 5 ms stall of a loaded machine
        # (seen in a full CI run) refilled one request meanwhile; ask again.
    assert 0 < wait <= 1 / 200 + 0.001


def test_explicit_burst(make):
    assert_burst(make(RateLimits.per_second(requests=200, burst=20)), 20, 200)


def test_small_limits_keep_the_whole_limit(make):
    backend = make(RateLimits(requests=2, tokens=1000, interval=2.0))
    assert backend.levels() == (2, 1000)


def test_learnt_limits_follow_the_same_rule(make):
    learner = make(RateLimits())
    learner.sync(ServerLimits(limit_requests=12_000, remaining_requests=12_000, reset_requests=0.0))
    assert_burst(learner, 180, 200)
    capped = make(RateLimits(burst=20), key="capped")
    capped.sync(ServerLimits(limit_requests=12_000, remaining_requests=12_000, reset_requests=0.0))
    assert_burst(capped, 20, 200)


def test_a_call_bigger_than_the_burst_leaves_debt_and_one_bigger_than_the_limit_fails(make):
    backend = make(RateLimits.per_minute(tokens=60_000, token_burst=1000))
    assert backend.acquire(1, 5000) == 0.0
    assert backend.levels()[1] == pytest.approx(-4000, abs=5)
    assert backend.acquire(1, 1) == pytest.approx(4.001, abs=0.01)
    with pytest.raises(CapacityError):
        backend.acquire(1, 60_001)


def test_absurd_usage_charges_at_most_one_interval_of_debt(make):
    backend = make(RateLimits.per_minute(tokens=60_000))
    backend.adjust(-1e18)  # a hostile server's usage figure
    assert backend.levels()[1] == pytest.approx(-60_000, abs=5)
    assert backend.acquire(1, 1) == pytest.approx(60.0 + 1 / 1000, abs=0.05)  # one interval, not 30 million years
    for nonsense in (float("nan"), float("inf"), float("-inf")):
        backend.adjust(nonsense)  # ignored
    assert backend.levels()[1] == pytest.approx(-60_000, abs=5)


def test_nonsense_from_a_server_changes_nothing(make):
    configured = make(RateLimits(requests=10, interval=1.0))
    configured.sync(ServerLimits(limit_requests=600, remaining_requests=-1, reset_requests=1.0))  # Azure: unknown
    configured.sync(ServerLimits(limit_requests=600, remaining_requests=float("nan")))
    assert configured.levels()[0] == pytest.approx(10, abs=0.5)
    learner = make(RateLimits(), key="learner")
    learner.sync(ServerLimits(limit_requests=float("inf"), remaining_requests=5, reset_requests=1.0))
    learner.sync(ServerLimits(limit_requests=-600, remaining_requests=5, reset_requests=1.0))
    assert learner.levels() == (None, None)  # no limit learnt from nonsense
    learner.sync(ServerLimits(limit_requests=600, remaining_requests=0, reset_requests=-5.0))
    assert learner.acquire(1, 0) == pytest.approx(0.1, abs=0.02)  # a negative reset read as 0


def test_repr_names_the_limits(make):
    assert "RateLimits(requests=12000" in repr(make(PACED))


# -- SQLite specifics --------------------------------------------------------------------


def test_sqlite_processes_with_different_bursts_share_one_level(tmp_path):
    clock = FakeClock(1_000_000.0)
    wide = SQLiteBackend(tmp_path / "l.db", key="k", limits=RateLimits.per_second(requests=100, burst=50), clock=clock)
    narrow = SQLiteBackend(tmp_path / "l.db", key="k", limits=RateLimits.per_second(requests=100, burst=5), clock=clock)
    assert narrow.levels()[0] == 5  # the shared level is fresh (50), capped at narrow's own burst
    assert granted_at_once(wide) == 50
    assert narrow.levels()[0] == pytest.approx(0)


def test_sqlite_busy_timeout_is_bounded(tmp_path):
    with pytest.raises(ConfigError) as info:
        SQLiteBackend(tmp_path / "l.db", key="k", busy_timeout=3600)
    assert info.value.field == "busy_timeout"
    with pytest.raises(ConfigError, match="timeout must be seconds in"):
        parse_storage_url("sqlite:///x.db?timeout=3600")


def test_a_capacity_error_during_the_probe_closes_the_breaker(tmp_path):
    clock = FakeClock()
    breaker = CircuitBreaker("sqlite:///l.db", threshold=1, cooldown=1.0, clock=clock)
    backend = SQLiteBackend(tmp_path / "l.db", key="k", limits=RateLimits(tokens=10), breaker=breaker)
    breaker.record_failure(StorageError("limit storage x failed: boom", url="u"), trip=True)
    clock.advance(1.0)
    with pytest.raises(CapacityError):
        backend.acquire(1, 11)  # the probe: the file answered, with a refusal
    assert breaker.state == "closed"
    assert backend.acquire(1, 10) == 0.0


def test_sqlite_relative_path_is_fixed_at_start_despite_a_later_chdir(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    backend = SQLiteBackend("limits.db", key="k", limits=RateLimits(requests=3, interval=60.0), clock=FakeClock())
    backend.acquire(1, 0)
    monkeypatch.chdir(tmp_path / "b")
    assert backend.acquire(1, 0) == 0.0  # still the file in a/, not "removed"
    assert backend.levels()[0] == pytest.approx(1)
    assert not (tmp_path / "b" / "limits.db").exists()


def test_keys_on_one_file_share_its_breaker(tmp_path):
    path = tmp_path / "l.db"
    first = SQLiteBackend(path, key="gpt", limits=RateLimits(requests=5))
    second = SQLiteBackend(str(path), key="claude", limits=RateLimits(requests=5))
    assert first.breaker is second.breaker
    path.chmod(0o444)
    try:
        with pytest.raises(StorageError, match="the file was made read-only"):
            first.acquire(1, 0)
        with pytest.raises(StorageError, match="unavailable after 1 failure"):
            second.acquire(1, 0)  # told at once, without its own try
    finally:
        path.chmod(0o644)
    other = SQLiteBackend(tmp_path / "other.db", key="gpt", limits=RateLimits(requests=5))
    assert other.breaker is not first.breaker and other.acquire(1, 0) == 0.0
