"""Executor: submit/map/join, exactly-once, order, type checks, hammering."""

import concurrent.futures as cf
import threading
import time
import uuid
from unittest.mock import Mock

import pytest

from apiexec import Event, ExecutionStatus, Executor, ExecutorNotRunning, QueueConfig
from apiexec.execution.admission import Unlimited
from tests.helpers import Recorder, work


def make(concurrency=4, capacity=100):
    return Executor(
        Event,
        QueueConfig(
            queue_capacity=capacity,
            capacity_refresh_time=1.0,
            concurrency_limit=concurrency,
        ),
    )


def test_submit_returns_future_with_result():
    rec = Recorder()
    with make() as ex:
        future = ex.submit(work(rec, "a", result=42))
        assert future.result(timeout=5) == 42


def test_failed_event_sets_execution_and_future_raises():
    rec = Recorder()
    event = work(rec, "a", error=KeyError("missing"))
    with make() as ex:
        future = ex.submit(event)
        with pytest.raises(KeyError):
            future.result(timeout=5)
    assert event.execution.status is ExecutionStatus.FAILED
    assert event.execution.error == "KeyError: 'missing'"
    assert event.execution.duration is not None


def test_mock_event_that_raises_fails_once():
    event = Mock(spec=Event)
    event.id = uuid.uuid4()
    event.invoke = Mock(side_effect=RuntimeError("nope"))
    with make() as ex:
        future = ex.submit(event)
        with pytest.raises(RuntimeError):
            future.result(timeout=5)
        assert ex.join(timeout=5)
    event.invoke.assert_called_once()


def test_map_yields_in_input_order_and_pops_events():
    rec = Recorder()
    events = [work(rec, i, delay=0.01 * ((7 * i) % 5)) for i in range(30)]
    with make(concurrency=8) as ex:
        assert list(ex.map(events)) == list(range(30))
        assert not ex.events


def test_map_is_lazy_over_endless_input():
    rec = Recorder()

    def endless():
        i = 0
        while True:
            yield work(rec, i)
            i += 1

    with make(concurrency=2, capacity=4) as ex:
        results = []
        for value in ex.map(endless()):
            results.append(value)
            if value == 50:
                break
    assert results == list(range(51))
    assert max(rec.calls) < 51 + 4 + 2 + 2


def test_map_raises_the_first_failure_and_cancels_the_rest():
    rec = Recorder()
    gate = threading.Event()
    events = [work(rec, 0, error=ValueError("bad"))] + [
        work(rec, i, gate=gate) for i in range(1, 6)
    ]
    with make(concurrency=1) as ex:
        with pytest.raises(ValueError):
            list(ex.map(events))
        gate.set()
    assert sum(rec.calls.values()) <= 2


def test_submit_requires_running_executor():
    ex = make()
    with pytest.raises(ExecutorNotRunning):
        ex.submit(Event(int))
    with ex:
        pass
    with pytest.raises(ExecutorNotRunning, match="not running"):
        ex.submit(Event(int))
    with pytest.raises(ExecutorNotRunning):
        ex.forward()


def test_executor_can_be_used_twice():
    rec = Recorder()
    ex = make()
    for key in ("first", "second"):
        with ex:
            assert ex.submit(work(rec, key)).result(timeout=5) == key
        assert ex.task_queue is None
    assert rec.calls == {"first": 1, "second": 1}


def test_wrong_event_type_is_rejected():
    class Other:
        id = uuid.uuid4()

    with pytest.raises(TypeError, match="runs Event events"):
        make().append(Other())
    by_name = Executor("api_calling")
    with pytest.raises(TypeError):
        by_name.append(Event(int))


def test_duplicate_append_is_rejected():
    ex = make()
    event = Event(int)
    ex.append(event)
    with pytest.raises(ValueError, match="already"):
        ex.append(event)


def test_pop_unforwarded_event_cancels_it():
    ex = make()
    event = Event(int)
    future = ex.append(event)
    assert ex.pop(event.id) is event
    assert future.cancelled()
    assert event.execution.status is ExecutionStatus.CANCELLED
    with pytest.raises(KeyError):
        ex.pop(event.id)


def test_cancelled_future_is_never_invoked():
    rec = Recorder()
    gate = threading.Event()
    with make(concurrency=1) as ex:
        blocker = ex.submit(work(rec, "blocker", gate=gate))
        victim_event = work(rec, "victim")
        victim = ex.submit(victim_event)
        assert victim.cancel()
        gate.set()
        blocker.result(timeout=5)
        assert ex.join(timeout=5)
    assert "victim" not in rec.calls
    assert victim_event.execution.status is ExecutionStatus.CANCELLED


def test_join_and_is_all_processed():
    rec = Recorder()
    gate = threading.Event()
    with make() as ex:
        ex.submit(work(rec, "a", gate=gate))
        assert not ex.is_all_processed
        assert ex.join(timeout=0.05) is False
        gate.set()
        assert ex.join(timeout=5) is True
        assert ex.is_all_processed


def test_process_event_runs_on_calling_thread_and_resolves_future():
    seen = []
    event = Event(lambda: seen.append(threading.current_thread().name) or "done")
    ex = make()
    future = ex.append(event)
    ex.process_event(event)
    assert seen == [threading.current_thread().name]
    assert future.result(timeout=0) == "done"
    assert not ex.pending
    with pytest.raises(ValueError, match="already"):
        ex.process_event(event)


def test_concurrency_limit_is_respected():
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def run():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1

    with make(concurrency=3) as ex:
        futures = [ex.submit(Event(run)) for _ in range(40)]
        cf.wait(futures, timeout=10)
    assert peak[0] == 3


def test_backpressure_submit_blocks_while_queue_full():
    rec = Recorder()
    gate = threading.Event()
    with make(concurrency=1, capacity=2) as ex:
        ex.submit(work(rec, 0, gate=gate))  # running (after dispatch)
        while not rec.calls:
            time.sleep(0.005)
        ex.submit(work(rec, 1))
        ex.submit(
            work(rec, 2)
        )  # the queue is now full (1 is held by the dispatcher or queued)
        blocked = threading.Thread(
            target=lambda: [ex.submit(work(rec, k)) for k in (3, 4)]
        )
        blocked.start()
        blocked.join(0.2)
        assert blocked.is_alive()
        gate.set()
        blocked.join(5)
        assert not blocked.is_alive()
        assert ex.join(timeout=5)
    assert sorted(rec.calls) == [0, 1, 2, 3, 4]


@pytest.mark.timeout(60)
def test_64_threads_submitting_at_once_lose_nothing_and_run_nothing_twice():
    rec = Recorder()
    n_threads, per_thread = 64, 40
    barrier = threading.Barrier(n_threads)
    futures = []
    flock = threading.Lock()
    with make(concurrency=8, capacity=16) as ex:

        def submitter(t):
            barrier.wait()
            mine = [ex.submit(work(rec, (t, i))) for i in range(per_thread)]
            with flock:
                futures.extend(mine)

        threads = [
            threading.Thread(target=submitter, args=(t,)) for t in range(n_threads)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert ex.join(timeout=30)
    assert len(futures) == n_threads * per_thread
    assert all(f.done() and not f.cancelled() for f in futures)
    assert len(rec.calls) == n_threads * per_thread
    assert set(rec.calls.values()) == {1}


def test_fifo_start_order_with_one_worker():
    rec = Recorder()
    with make(concurrency=1) as ex:
        for i in range(50):
            ex.submit(work(rec, i))
        assert ex.join(timeout=10)
    assert rec.order == list(range(50))


def test_idle_executor_uses_no_cpu():
    with make(concurrency=8):
        time.sleep(0.1)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(1.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
    assert cpu / wall < 0.05


def test_worker_threads_are_joined_on_exit():
    before = {t.ident for t in threading.enumerate()}
    rec = Recorder()
    with make(concurrency=4) as ex:
        for i in range(8):
            ex.submit(work(rec, i))
    leftover = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("apiexec")
    ]
    assert leftover == []


def test_process_event_skips_a_cancelled_event():
    rec = Recorder()
    ex = make()
    event = work(rec, "x")
    future = ex.append(event)
    assert future.cancel()
    ex.process_event(event)
    assert rec.calls == {}
    assert event.execution.status is ExecutionStatus.CANCELLED


def test_map_timeout_is_honoured_even_with_a_full_pipeline():
    rec = Recorder()
    gate = threading.Event()
    with make(concurrency=1, capacity=1) as ex:
        start = time.monotonic()
        with pytest.raises(cf.TimeoutError):
            list(ex.map((work(rec, i, gate=gate) for i in range(5)), timeout=0.3))
        assert time.monotonic() - start < 2.0
        gate.set()


def test_join_returns_only_after_futures_and_their_callbacks():
    seen = []
    with make(concurrency=4) as ex:
        for i in range(50):
            future = ex.submit(Event(lambda i=i: i))
            future.add_done_callback(lambda f: seen.append(f.result()))
        assert ex.join(timeout=10)
        assert sorted(seen) == list(range(50))


def test_start_is_idempotent():
    ex = make()
    ex.start()
    queue = ex.task_queue
    ex.start()
    assert ex.task_queue is queue
    ex.shutdown()


def test_shutdown_while_submit_waits_on_a_full_queue_cancels_that_event():
    rec = Recorder()
    gate = threading.Event()
    ex = make(concurrency=1, capacity=1)
    ex.start()
    ex.submit(work(rec, 0, gate=gate))
    while not rec.calls:
        time.sleep(0.005)
    ex.submit(work(rec, 1))  # queued: the queue is full now
    blocked_event = work(rec, 2)
    outcome = []

    def blocked_submit():
        try:
            ex.submit(blocked_event)
        except ExecutorNotRunning as exc:
            outcome.append(exc)

    t = threading.Thread(target=blocked_submit)
    t.start()
    time.sleep(0.1)
    threading.Timer(0.1, gate.set).start()
    ex.shutdown()
    t.join(5)
    assert outcome and "while forwarding" in str(outcome[0])
    assert blocked_event.execution.status is ExecutionStatus.CANCELLED
    assert 2 not in rec.calls


def test_process_event_refuses_a_queued_event():
    gate = threading.Event()
    rec = Recorder()
    with make(concurrency=1) as ex:
        ex.submit(work(rec, "blocker", gate=gate))
        queued = work(rec, "queued")
        ex.submit(queued)
        with pytest.raises(ValueError, match="already queued"):
            ex.process_event(queued)
        gate.set()


def test_a_dispatch_failure_fails_that_event_and_the_loop_goes_on():
    class Exploding(BaseException):
        pass

    class Fragile(Unlimited):
        def admit(self, event, *, stop, deadline):
            if getattr(event, "explode", False):
                raise Exploding()
            return 0

    bad = Event(lambda: "never")
    bad.explode = True
    with Executor(Event, QueueConfig(concurrency_limit=2), admission=Fragile()) as ex:
        bad_future = ex.submit(bad)
        good_future = ex.submit(Event(lambda: "fine"))
        assert good_future.result(timeout=5) == "fine"
        with pytest.raises(RuntimeError, match="admission failed"):
            bad_future.result(timeout=5)
    assert bad.execution.status is ExecutionStatus.FAILED


def test_ctrl_c_inside_process_event_is_recorded_and_reraised():
    def interrupted():
        raise KeyboardInterrupt

    ex = make()
    event = Event(interrupted)
    future = ex.append(event)
    with pytest.raises(KeyboardInterrupt):
        ex.process_event(event)
    assert event.execution.status is ExecutionStatus.CANCELLED
    assert isinstance(future.exception(timeout=0), KeyboardInterrupt)


def test_foreign_events_without_an_execution_are_still_accounted_for():
    class Foreign:
        event_type = "foreign"

        def __init__(self):
            self.id = uuid.uuid4()
            self.ran = 0

        def invoke(self):
            self.ran += 1
            return "foreign result"

    ex = Executor("foreign", QueueConfig(concurrency_limit=1))
    done, never = Foreign(), Foreign()
    with ex:
        assert ex.submit(done).result(timeout=5) == "foreign result"
        ex.append(never)  # not forwarded: cancelled at exit
    assert done.ran == 1 and never.ran == 0
    assert ex.is_all_processed


@pytest.mark.timeout(30)
@pytest.mark.parametrize("error", [RuntimeError("can't start new thread"), KeyboardInterrupt()])
def test_a_worker_that_cannot_start_leaves_no_queued_call_to_run_later(monkeypatch, error):
    """submit raising means not sent: a call queued before the failure is cancelled, never run."""
    import apiexec.execution.runtime as rt

    ran = []

    def no_thread(self, take):
        raise error

    monkeypatch.setattr(rt.Runtime, "ensure_worker", no_thread)
    ex = make()
    ex.start()
    with pytest.raises(type(error)):
        ex.submit(Event(ran.append, args=("ran",)))
    monkeypatch.undo()
    later = ex.submit(Event(ran.append, args=("later",)))  # starts a worker: it meets the cancelled call first
    later.result(timeout=10)
    ex.shutdown(wait=True)
    assert ran == ["later"]


@pytest.mark.timeout(30)
def test_a_failed_thread_start_after_a_worker_took_the_call_lets_it_run(monkeypatch, caplog):
    import apiexec.execution.runtime as rt

    started = threading.Event()
    real = rt.Runtime.ensure_worker

    def start_then_fail(self, take):
        real(self, take)
        assert started.wait(10)  # the worker took the call
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(rt.Runtime, "ensure_worker", start_then_fail)
    with make() as ex:
        future = ex.submit(Event(lambda: started.set() or "done"))
        assert future.result(timeout=10) == "done"
    assert "starting a worker thread failed" in caplog.text
