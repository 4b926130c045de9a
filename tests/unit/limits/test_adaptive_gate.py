"""The adaptive gate and its admission policy on the FakeClock; the shared stores (SQLite, Redis)."""

import logging
import threading
import time

import pytest

from apiexec.call_context import call_context, note_attempt
from apiexec.errors import DeadlineExceeded, StorageError
from apiexec.limits.adaptive import AIMD
from apiexec.limits.adaptive_gate import AdaptiveAdmission, ConcurrencyGate
from apiexec.limits.adaptive_store import MemoryAdaptiveStore, SQLiteAdaptiveStore, adaptive_store_from_url
from tests.helpers import FakeClock


def until(predicate, timeout=5.0):
    """Wait (really) until another thread reached a state; the test's own sync only."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "state never reached"
        time.sleep(0.001)


class Failed:
    """An event whose execution failed."""

    class execution:  # noqa: N801 - mimics Event.execution
        status = "failed"


def policy_on(clock, *, max_limit=8, initial=2, names_rate_limit=lambda headers: "x-ratelimit-limit-requests" in headers):
    rules = AIMD(max_limit=max_limit, initial=initial)
    return AdaptiveAdmission(MemoryAdaptiveStore(rules, clock.now), rules, waiter=clock, max_wait=30.0,
                             names_rate_limit=names_rate_limit)


def test_a_full_gate_blocks_until_a_release_then_admits_in_order():
    clock = FakeClock()
    rules = AIMD(max_limit=4, initial=1)
    gate = ConcurrencyGate(MemoryAdaptiveStore(rules, clock.now), rules, waiter=clock, max_wait=30.0)
    assert gate.acquire(lambda: False)
    order = []

    def waiter(name):
        assert gate.acquire(lambda: False)
        order.append(name)
        gate.release()

    threads = [threading.Thread(target=waiter, args=(n,), daemon=True) for n in ("a", "b")]
    threads[0].start()
    until(lambda: len(gate._waiters) == 1)
    threads[1].start()
    until(lambda: len(gate._waiters) == 2)
    assert order == []
    gate.release()  # no clock move needed: a release notifies
    for t in threads:
        t.join(5)
    assert order == ["a", "b"]


def test_a_wait_for_a_slot_ends_at_the_deadline_on_the_fake_clock():
    clock = FakeClock(auto_advance=True)
    rules = AIMD(max_limit=1)
    gate = ConcurrencyGate(MemoryAdaptiveStore(rules, clock.now), rules, waiter=clock, max_wait=30.0)
    assert gate.acquire(lambda: False)
    assert gate.acquire(lambda: False, deadline=clock.now() + 2.5) is False
    assert clock.now() == pytest.approx(2.5)


def on_another_thread(fn):
    """Run ``fn`` on a new thread (each thread holds its own call); its result or exception."""
    out = []

    def run():
        try:
            out.append(fn())
        except Exception as exc:  # handed back to the test
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    return out[0]


def test_admit_raises_deadline_exceeded_and_returns_none_on_shutdown():
    clock = FakeClock(auto_advance=True)
    policy = policy_on(clock, max_limit=1, initial=1)
    assert policy.admit(object(), stop=threading.Event(), deadline=None) == 0
    late = on_another_thread(lambda: policy.admit(object(), stop=threading.Event(), deadline=clock.now() + 1.0))
    assert isinstance(late, DeadlineExceeded)
    stop = threading.Event()
    stop.set()
    assert on_another_thread(lambda: policy.admit(object(), stop=stop, deadline=None)) is None


def test_successes_grow_the_limit_and_overloads_shrink_it():
    clock = FakeClock()
    policy = policy_on(clock, initial=2)
    stop = threading.Event()
    policy.admit(object(), stop=stop, deadline=None)
    clock.advance(0.1)
    policy.observe(200, {})
    assert policy.limit == 3.0  # slow start; used 1 of 2 slots: half, so it counts
    policy.settle(object(), 0)
    assert policy.in_flight == 0
    policy.admit(object(), stop=stop, deadline=None)
    policy.observe(503, {})
    assert policy.limit == 1.5 and policy.in_flight == 1  # halved; the slot is kept through the backoff


@pytest.mark.parametrize(("status", "headers", "overload"), [
    (503, {}, True), (529, {}, True), (502, {}, True), (504, {}, True),
    (429, {}, True),  # no rate limit named: the server is overloaded
    (429, {"x-ratelimit-limit-requests": "60"}, False),  # a rate limit: the limiter's business
    (400, {}, False), (500, {}, False),
])
def test_which_answers_are_overload(status, headers, overload):
    clock = FakeClock()
    policy = policy_on(clock, initial=4)
    policy.admit(object(), stop=threading.Event(), deadline=None)
    policy.observe(status, headers)
    assert (policy.limit < 4.0) is overload


def test_a_retry_takes_a_slot_again_and_a_silent_attempt_is_an_overload():
    clock = FakeClock()
    policy = policy_on(clock, initial=4)
    stop = threading.Event()
    policy.admit(object(), stop=stop, deadline=None)
    policy.observe(429, {"x-ratelimit-limit-requests": "60"})
    assert policy.in_flight == 0
    assert policy.admit_retry(stop)  # the retry holds a slot again
    assert policy.in_flight == 1 and policy.limit == 4.0
    assert policy.admit_retry(stop)  # that attempt got no answer at all (reset, refused, timeout)
    assert policy.limit == 2.0 and policy.in_flight == 1
    policy.settle(object(), 0)
    assert policy.in_flight == 0


def test_a_call_that_failed_without_any_answer_is_an_overload():
    clock = FakeClock()
    policy = policy_on(clock, initial=4)
    policy.admit(Failed(), stop=threading.Event(), deadline=None)
    policy.settle(Failed(), 0)
    assert policy.limit == 2.0 and policy.in_flight == 0


def test_a_retry_waiting_for_a_slot_stops_at_the_calls_deadline():
    clock = FakeClock(auto_advance=True)
    policy = policy_on(clock, max_limit=1, initial=1)
    stop = threading.Event()
    policy.admit(object(), stop=stop, deadline=None)
    policy.observe(500, {})  # not an overload: gives the slot back while it waits to retry
    assert MemoryAdaptiveStore.try_acquire(policy.gate.store)  # someone else takes it
    with call_context(deadline=clock.now() + 1.0, timeout=1.0), pytest.raises(DeadlineExceeded):
        policy.admit_retry(stop)


def test_the_gate_as_the_executors_retry_gate():
    clock = FakeClock()
    policy = policy_on(clock, initial=4)
    stop = threading.Event()
    policy.admit(object(), stop=stop, deadline=None)
    with call_context(retry_gate=lambda: policy.admit_retry(stop)):
        note_attempt()
        policy.observe(503, {})
        note_attempt()  # the retry re-takes its slot through the gate
    assert policy.in_flight == 1


def test_a_slot_leaked_by_a_call_without_settle_comes_back_at_the_next_admit():
    clock = FakeClock()
    policy = policy_on(clock, max_limit=1, initial=1)
    stop = threading.Event()
    policy.admit(object(), stop=stop, deadline=None)  # ... and the call raised: no settle
    assert policy.admit(object(), stop=stop, deadline=None) == 0  # would wait for ever otherwise
    assert policy.in_flight == 1


def test_a_release_gives_the_slot_back():
    clock = FakeClock()
    policy = policy_on(clock, max_limit=1, initial=1)
    policy.admit(object(), stop=threading.Event(), deadline=None)
    policy.release(object(), 0)
    assert policy.in_flight == 0


class BrokenStore(MemoryAdaptiveStore):
    shared = False
    broken = False

    def _fail(self):
        if self.broken:
            raise StorageError("limit storage sqlite:///x.db failed: disk I/O error", url="sqlite:///x.db")

    def update(self, change):
        self._fail()
        return super().update(change)

    def release(self):
        self._fail()
        super().release()

    def read(self):
        self._fail()
        return super().read()


def test_a_failing_store_after_the_answer_is_logged_never_raised(caplog):
    rules = AIMD(max_limit=8, initial=4)
    store = BrokenStore(rules)
    policy = AdaptiveAdmission(store, rules)
    policy.admit(object(), stop=threading.Event(), deadline=None)
    store.broken = True
    with caplog.at_level(logging.WARNING):
        policy.observe(503, {})
        policy.observe(200, {})
        policy.settle(object(), 0)
    assert "adaptive concurrency not updated" in caplog.text
    assert policy.limit == 4.0  # the last known limit while the storage fails


# -- shared stores -----------------------------------------------------------------


def sqlite_store(path, key="k", rules=None, **kw):
    return adaptive_store_from_url(f"sqlite:///{path}", key=key, rules=rules or AIMD(max_limit=8, initial=2), **kw)


def test_sqlite_stores_on_one_file_share_the_slots_and_the_limit(tmp_path):
    a, b = sqlite_store(tmp_path / "l.db"), sqlite_store(tmp_path / "l.db")
    assert isinstance(a, SQLiteAdaptiveStore) and a.shared
    assert a.try_acquire() and b.try_acquire()
    assert not a.try_acquire() and not b.try_acquire()  # 2 slots for the host, not per process
    rules = AIMD(max_limit=8, initial=2)
    a.update(lambda state, now, busy: rules.on_overload(state, now=now))
    assert b.read()[0].limit == 1.0 and b.read()[1] == 2
    b.release()
    assert a.read()[1] == 1
    other = sqlite_store(tmp_path / "l.db", key="other")
    assert other.try_acquire()  # another key, other slots


def test_a_dead_processes_slots_expire_with_its_lease(tmp_path):
    now = [1000.0]
    rules = AIMD(max_limit=8, initial=2)
    first = sqlite_store(tmp_path / "l.db", rules=rules)
    backend = first._backend
    dead = SQLiteAdaptiveStore(backend, key="k", rules=rules, lease_ttl=10.0, clock=lambda: now[0])
    live = SQLiteAdaptiveStore(backend, key="k", rules=rules, lease_ttl=10.0, clock=lambda: now[0])
    assert dead.try_acquire() and dead.try_acquire()
    assert not live.try_acquire()
    now[0] += 11  # the dead process never came back
    assert live.try_acquire()


def test_garbage_in_the_shared_row_restarts_the_limit(tmp_path):
    store = sqlite_store(tmp_path / "l.db")
    store._backend._run(lambda conn: conn.execute(
        "INSERT INTO apiexec_adaptive (key, state) VALUES ('k', 'not json')"))
    assert store.read()[0].limit == 2.0
    store._backend._run(lambda conn: conn.execute(
        "UPDATE apiexec_adaptive SET state = '{\"limit\": 500}' WHERE key = 'k'"))
    assert store.read()[0].limit == 8.0  # clamped to this process's bound


def test_redis_stores_share_the_slots_and_the_limit(redis_server):
    rules = AIMD(max_limit=8, initial=2)
    a = adaptive_store_from_url(redis_server.url, key="fit", rules=rules)
    b = adaptive_store_from_url(redis_server.url, key="fit", rules=rules)
    assert a.try_acquire() and b.try_acquire()
    assert not a.try_acquire()
    b.update(lambda state, now, busy: rules.on_success(state, latency=0.1, in_flight=busy, now=now))
    assert a.read()[0].limit == 3.0
    assert a.try_acquire()
    a.release()
    a.release()
    b.release()
    assert a.read()[1] == 0


def test_a_retry_after_an_overload_waits_below_the_shrunk_limit():
    clock = FakeClock(auto_advance=True)
    policy = policy_on(clock, max_limit=8, initial=2)
    stop = threading.Event()
    policy.admit(object(), stop=stop, deadline=None)
    assert policy.gate.store.try_acquire()  # another call in flight: 2 of 2
    policy.observe(503, {})
    assert policy.limit == 1.0 and policy.in_flight == 2  # kept through the backoff
    with call_context(deadline=clock.now() + 1.0, timeout=1.0), pytest.raises(DeadlineExceeded):
        policy.admit_retry(stop)  # 1 other call in flight, limit 1: the retry must wait its turn
    policy.gate.store.release()
    assert policy.admit_retry(stop) and policy.in_flight == 1
