"""Admission policies: the chain releases what it took; cancelled calls give back capacity."""

import threading

import pytest

from apiexec import Event, Executor, QueueConfig, RateLimitedExecutor
from apiexec.execution.admission import Chain, Unlimited


class Counting(Unlimited):
    """Takes ``units`` per call; records admits, settles and releases."""

    blocking = True

    def __init__(self, units, refuse=False, explode=False):
        self.units, self.refuse, self.explode = units, refuse, explode
        self.log = []

    def admit(self, event, *, stop, deadline):
        if self.explode:
            raise RuntimeError("storage down")
        self.log.append("admit")
        return None if self.refuse else self.units

    def settle(self, event, reserved):
        self.log.append(("settle", reserved))

    def release(self, event, reserved):
        self.log.append(("release", reserved))


def test_chain_admits_through_all_and_settles_each_own_share():
    first, second = Counting(7), Counting(3)
    with Executor(admission=Chain(first, second)) as ex:
        assert ex.submit(abs, -1).result(timeout=5) == 1
    assert first.log == ["admit", ("settle", 7)]
    assert second.log == ["admit", ("settle", 3)]


@pytest.mark.parametrize("second", [Counting(3, refuse=True), Counting(3, explode=True)])
def test_chain_releases_earlier_policies_when_a_later_one_refuses(second):
    first = Counting(7)
    chain = Chain(first, second)
    stop = threading.Event()
    event = Event(abs, args=(1,))
    if second.explode:
        with pytest.raises(RuntimeError):
            chain.admit(event, stop=stop, deadline=None)
    else:
        assert chain.admit(event, stop=stop, deadline=None) is None
    assert first.log == ["admit", ("release", 7)]


def test_chain_blocking_when_any_policy_blocks():
    assert Chain(Unlimited(), Counting(1)).blocking
    assert not Chain(Unlimited()).blocking


def test_a_call_cancelled_while_waiting_for_admission_gives_its_tokens_back():
    ex = RateLimitedExecutor(limit_requests=100, limit_tokens=1000, concurrency_limit=1)
    gate = threading.Event()
    admitted = threading.Event()
    original = ex.admission.admit

    def slow_admit(event, *, stop, deadline):
        reserved = original(event, stop=stop, deadline=deadline)
        if getattr(event, "slow", False):
            admitted.set()
            gate.wait(5)
        return reserved

    ex.admission.admit = slow_admit
    with ex:
        event = Event(abs, args=(-1,), tokens=400)
        event.slow = True
        future = ex.submit(event)
        assert admitted.wait(5)
        before = ex.available_token
        assert future.cancel()
        gate.set()
        assert ex.join(timeout=5)
        assert ex.available_token >= before + 400 - 1  # refunded (plus a little refill)
    assert future.cancelled()


def test_queue_config_for_chain_executor():
    with Executor(queue_config=QueueConfig(concurrency_limit=2), admission=Chain(Counting(1))) as ex:
        assert list(ex.map(Event(abs, args=(-i,)) for i in range(5))) == [0, 1, 2, 3, 4]


def test_calls_cancelled_while_waiting_for_capacity_end_cancelled_not_failed():
    """map stopping on a failure cancels calls that wait at the rate limit: they end CANCELLED."""

    def fail():
        raise ValueError("context too long")

    calls = [Event(abs, args=(-i,)) for i in range(8)]
    calls[1] = Event(fail)  # calls 0 and 1 take the bucket of 2; call 2 waits there when map gives up
    with RateLimitedExecutor(limit_requests=2, interval=0.5, concurrency_limit=4) as ex:
        with pytest.raises(ValueError):
            list(ex.map(calls))
        assert ex.join(timeout=10)
    statuses = [c.execution.status.name for c in calls]
    failed = [c.execution.error for c in calls if c.execution.status.name == "FAILED"]
    assert failed == ["ValueError: context too long"]
    assert "CANCELLED" in statuses and set(statuses) <= {"COMPLETED", "FAILED", "CANCELLED"}
