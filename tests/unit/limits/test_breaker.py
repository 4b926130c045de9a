"""CircuitBreaker: closed → open → half-open (one probe) → closed, on a fake clock."""

import threading

import pytest

from apiexec.errors import ConfigError, StorageError
from apiexec.limits.breaker import MAX_COOLDOWN, CircuitBreaker
from tests.helpers import FakeClock

URL = "redis://limits:6379/0"


def failure(text="connection refused"):
    return StorageError(f"limit storage {URL} (key 'k') failed: {text}", url=URL)


def fail(breaker, times=1, trip=False):
    for _ in range(times):
        breaker.before_call()
        breaker.record_failure(failure(), trip=trip)


def test_opens_after_the_threshold_of_consecutive_failures():
    clock = FakeClock()
    breaker = CircuitBreaker(URL, threshold=3, cooldown=2.0, clock=clock)
    fail(breaker, 2)
    assert breaker.state == "closed" and breaker.failures == 2
    breaker.before_call()
    breaker.record_success()  # an answer resets the count
    assert breaker.failures == 0
    fail(breaker, 3)
    assert breaker.state == "open"
    with pytest.raises(StorageError) as info:
        breaker.before_call()
    message = str(info.value)
    assert message == (
        f"limit storage {URL} unavailable after 3 failures in a row (last: connection refused); next try in 2s"
    )
    assert "\n" not in message and info.value.url == URL


def test_one_timeout_opens_at_once():
    breaker = CircuitBreaker(URL, clock=FakeClock())
    fail(breaker, trip=True)
    assert breaker.state == "open"


def test_half_open_lets_exactly_one_probe_through():
    clock = FakeClock()
    breaker = CircuitBreaker(URL, threshold=1, cooldown=1.0, clock=clock)
    fail(breaker)
    clock.advance(1.0)
    assert breaker.state == "half-open"
    breaker.before_call()  # the probe
    with pytest.raises(StorageError):
        breaker.before_call()  # everyone else still fails fast while it is out
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_call()


def test_a_failed_probe_doubles_the_cooldown_up_to_a_cap():
    clock = FakeClock()
    breaker = CircuitBreaker(URL, threshold=1, cooldown=1.0, clock=clock)
    fail(breaker)
    waits = []
    for _ in range(8):
        wait = 0.0
        while breaker.state == "open":
            clock.advance(0.5)
            wait += 0.5
        waits.append(wait)
        fail(breaker)  # the probe fails
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(waits) == MAX_COOLDOWN
    clock.advance(MAX_COOLDOWN)
    breaker.before_call()
    breaker.record_success()
    fail(breaker)
    clock.advance(1.0)
    assert breaker.state == "half-open"  # success reset the cool-down to its start


def test_only_one_thread_probes():
    clock = FakeClock()
    breaker = CircuitBreaker(URL, threshold=1, cooldown=1.0, clock=clock)
    fail(breaker)
    clock.advance(1.0)
    let_through = []
    barrier = threading.Barrier(8)

    def call():
        barrier.wait()
        try:
            breaker.before_call()
            let_through.append(1)
        except StorageError:
            pass

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(let_through) == 1


@pytest.mark.parametrize("kwargs, field", [({"threshold": 0}, "threshold"), ({"cooldown": 0}, "cooldown")])
def test_bad_settings_are_config_errors(kwargs, field):
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(URL, **kwargs)
    assert info.value.field == field


def test_repr_has_the_state_and_no_secret():
    breaker = CircuitBreaker("redis://:***@limits/0")
    assert repr(breaker) == "CircuitBreaker('redis://:***@limits/0', state='closed', failures=0)"
