"""Executors as services use them: long-lived, forked, dropped, and like concurrent.futures."""

import concurrent.futures as cf
import gc
import os
import threading
import time
import weakref

import pytest

from apiexec import (
    Event,
    Executor,
    ExecutorNotRunning,
    QueueConfig,
    RateLimitedExecutor,
)
from apiexec.errors import ConfigError, DeadlineExceeded
from apiexec.execution.executor import ExecutorState


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_threads():
    return {t for t in threading.enumerate() if t.name.startswith("apiexec-worker")}


# -- bounded memory -----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_long_lived_executor_forgets_finished_calls():
    """100,000 submits with their futures dropped: nothing is kept, memory flat."""
    with Executor(queue_config=QueueConfig(queue_capacity=1000, concurrency_limit=4)) as ex:
        for _ in range(10_000):  # warm-up: threads, pools, caches
            ex.submit(int)
        assert ex.join(timeout=30)
        gc.collect()
        before = rss_bytes()
        for _ in range(100_000):
            ex.submit(int)
        assert ex.join(timeout=60)
        gc.collect()
        grown = rss_bytes() - before
        assert not ex.events and not ex.pending
        assert ex.metrics.snapshot()["completed"] == 110_000
    # ~4 KB per call kept would be 400 MB; allow allocator noise.
    assert grown < 30 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 100,000 calls"


def test_map_that_ends_early_leaves_nothing_behind():
    def boom():
        raise ValueError("bad call")

    with Executor(queue_config=QueueConfig(concurrency_limit=2)) as ex:
        calls = [Event(time.sleep, args=(0.01,)) for _ in range(5)] + [Event(boom)]
        calls += [Event(time.sleep, args=(0.01,)) for _ in range(20)]
        with pytest.raises(ValueError):
            list(ex.map(calls))
        assert ex.join(timeout=10)
        assert not ex.events


# -- concurrent.futures compatibility ------------------------------------------------


def test_submit_a_plain_callable_with_arguments():
    with Executor() as ex:
        assert ex.submit(pow, 2, 10).result(timeout=5) == 1024
        assert ex.submit(int, "ff", base=16).result(timeout=5) == 255
        assert ex.submit(sorted, [3, 1, 2], reverse=True).result(timeout=5) == [3, 2, 1]


def test_submit_refuses_what_is_neither_event_nor_callable():
    with Executor() as ex, pytest.raises(TypeError, match="event or a callable"):
        ex.submit(42)


def test_event_takes_positional_arguments():
    event = Event(divmod, args=(17, 5))
    event.invoke()
    assert event.execution.result == (3, 2)
    assert event.event_invoke_args == (17, 5)


def test_rate_limited_executor_takes_plain_events_and_callables():
    ex = RateLimitedExecutor(limit_requests=100, limit_tokens=1000)
    with ex:
        assert ex.submit(Event(abs, args=(-4,), tokens=300)).result(timeout=5) == 4
        assert ex.submit(max, 3, 9).result(timeout=5) == 9
    assert ex.available_token <= 700 + 1  # the event's tokens were taken (plus refill)
    assert ex.metrics.snapshot()["tokens_reserved"] == 300


def test_event_tokens_are_validated():
    with pytest.raises(ConfigError, match="required_tokens"):
        Event(abs, tokens=-1)


def test_map_return_exceptions_yields_every_outcome_and_cancels_nothing():
    ran = []

    def call(i):
        ran.append(i)
        if i % 10 == 3:
            raise ValueError(f"context too long: {i}")
        return i

    with Executor(queue_config=QueueConfig(concurrency_limit=4)) as ex:
        out = list(ex.map((Event(call, args=(i,)) for i in range(50)), return_exceptions=True))
    assert len(out) == 50 and sorted(ran) == list(range(50))
    failures = [i for i, value in enumerate(out) if isinstance(value, ValueError)]
    assert failures == [3, 13, 23, 33, 43]
    assert [v for v in out if not isinstance(v, Exception)] == [i for i in range(50) if i % 10 != 3]


def test_map_timeout_says_which_result_and_how_long():
    gate = threading.Event()
    with Executor(queue_config=QueueConfig(concurrency_limit=2)) as ex:
        results = ex.map([Event(abs, args=(-1,)), Event(gate.wait, args=(10,))], timeout=0.2)
        assert next(results) == 1
        with pytest.raises(TimeoutError, match=r"result 1 .* within the timeout of 0.2s"):
            next(results)
        gate.set()


def test_a_call_failing_with_timeout_error_is_not_a_map_timeout():
    def slow_server():
        raise TimeoutError("read timed out")

    with Executor() as ex:
        out = list(ex.map([Event(slow_server)], timeout=5, return_exceptions=True))
    assert isinstance(out[0], TimeoutError) and "read timed out" in str(out[0])


def test_futures_cancelled_at_shutdown_are_seen_by_wait_and_as_completed():
    gate = threading.Event()
    ex = Executor(queue_config=QueueConfig(queue_capacity=50, concurrency_limit=1))
    ex.start()
    running = ex.submit(gate.wait, 10)
    queued = [ex.submit(abs, -i) for i in range(10)]
    threading.Timer(0.2, gate.set).start()
    ex.shutdown(wait=True)
    done, not_done = cf.wait(queued + [running], timeout=5)
    assert not not_done
    assert all(f.cancelled() for f in queued)
    assert len(list(cf.as_completed(queued, timeout=5))) == 10
    assert running.result(timeout=0) is True


def test_a_future_the_caller_cancels_is_seen_by_wait():
    gate = threading.Event()
    with Executor(queue_config=QueueConfig(concurrency_limit=1)) as ex:
        blocker = ex.submit(gate.wait, 10)
        victim = ex.submit(abs, -1)
        assert victim.cancel()
        gate.set()
        blocker.result(timeout=5)
        assert ex.join(timeout=5)
        done, _ = cf.wait([victim], timeout=5)
    assert victim in done


def test_absurd_concurrency_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="concurrency_limit"):
        Executor(queue_config=QueueConfig(concurrency_limit=100_000_000))


def test_workers_start_lazily():
    with Executor(queue_config=QueueConfig(concurrency_limit=1000)) as ex:
        ex.submit(abs, -1).result(timeout=5)
        assert ex.join(timeout=5)
        assert len(ex._runtime.threads) <= 2


# -- per-call deadlines -------------------------------------------------------------------


def test_deadline_passes_while_queued():
    gate = threading.Event()
    with Executor(queue_config=QueueConfig(concurrency_limit=1)) as ex:
        ex.submit(gate.wait, 10)
        late = ex.submit(Event(abs, args=(-1,), timeout=0.05))
        time.sleep(0.1)
        gate.set()
        with pytest.raises(DeadlineExceeded, match="waiting in the queue") as caught:
            late.result(timeout=5)
    assert caught.value.phase == "queued" and caught.value.timeout == 0.05


def test_deadline_passes_while_waiting_for_rate_limit_capacity():
    ex = RateLimitedExecutor(limit_requests=1, interval=3600.0)
    with ex:
        assert ex.submit(abs, -1).result(timeout=5) == 1
        started = time.monotonic()
        future = ex.submit(Event(abs, args=(-2,), timeout=0.3))
        with pytest.raises(DeadlineExceeded, match="rate-limit capacity") as caught:
            future.result(timeout=5)
        assert time.monotonic() - started < 2.0
    assert caught.value.phase == "admission"


def test_deadline_is_visible_to_the_call():
    from apiexec.call_context import time_left

    with Executor() as ex:
        left = ex.submit(Event(time_left, timeout=30)).result(timeout=5)
        assert 25 < left <= 30
        assert ex.submit(time_left).result(timeout=5) is None


def test_event_timeout_is_validated():
    with pytest.raises(ConfigError, match="timeout"):
        Event(abs, timeout=0)
    with pytest.raises(ConfigError, match="timeout"):
        Event(abs, timeout=1e30)


# -- dropped executors ---------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_dropped_executor_ends_its_threads():
    before = worker_threads()
    for _ in range(3):  # a notebook cell run three times
        ex = Executor(queue_config=QueueConfig(concurrency_limit=4))
        ex.start()
        for f in [ex.submit(time.sleep, 0.01) for _ in range(8)]:
            f.result(timeout=5)
        ref = weakref.ref(ex)
        del ex, f
        gc.collect()
        assert ref() is None
    deadline = time.monotonic() + 10
    while worker_threads() - before and time.monotonic() < deadline:
        for thread in worker_threads() - before:
            thread.join(0.5)
    assert not worker_threads() - before


def test_a_dropped_executor_cancels_what_never_started():
    gate = threading.Event()
    ex = Executor(queue_config=QueueConfig(concurrency_limit=1))
    ex.start()
    first = ex.submit(gate.wait, 10)
    queued = [ex.submit(abs, -i) for i in range(3)]
    del ex
    gc.collect()
    gate.set()
    assert first.result(timeout=5) is True
    done, _ = cf.wait(queued, timeout=5)
    assert len(done) == 3 and all(f.cancelled() for f in queued)


# -- fork -------------------------------------------------------------------------------------


def in_forked_child(child):
    """Run ``child()`` in a forked child; return its exit code and the text it returned."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            status = child()
        except BaseException as exc:  # pragma: no cover - reported to the parent
            status = f"error {exc!r}"
        os.write(write, status.encode())
        os._exit(0)
    os.close(write)
    try:
        _, code = os.waitpid(pid, 0)
        return code, os.read(read, 1000).decode()
    finally:
        os.close(read)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.timeout(30)
def test_a_started_executor_works_in_a_forked_child():
    gate = threading.Event()
    ex = Executor(queue_config=QueueConfig(concurrency_limit=2))
    ex.start()
    assert ex.submit(pow, 3, 3).result(timeout=5) == 27
    started = threading.Event()

    def hold():
        started.set()
        return gate.wait(10)

    in_flight = ex.submit(hold)
    assert started.wait(5)  # running in the parent at fork time
    def child():  # never runs the parent's call
        result = ex.submit(pow, 2, 5).result(timeout=5)
        ended = cf.wait([in_flight], timeout=5).done == {in_flight}  # never a hang in the child
        return f"{result} {ended} {ex.state.value}"

    try:
        code, report = in_forked_child(child)
    finally:
        gate.set()
        ex.shutdown()
    assert code == 0
    assert report == "32 True running"
    assert in_flight.result(timeout=5) is True  # the parent's own call is untouched


def test_state_enum_and_clear_errors():
    ex = Executor()
    assert ex.state is ExecutorState.IDLE
    with pytest.raises(ExecutorNotRunning, match="not running"):
        ex.submit(abs, 1)
    with ex:
        assert ex.state is ExecutorState.RUNNING
    assert ex.state is ExecutorState.IDLE
    with ex:  # restartable
        assert ex.submit(abs, -5).result(timeout=5) == 5


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_snapshot_has_the_service_figures():
    with RateLimitedExecutor(limit_requests=1000, concurrency_limit=2) as ex:
        for f in [ex.submit(Event(abs, args=(-i,), tokens=5)) for i in range(10)]:
            f.result(timeout=5)
        assert ex.join(timeout=5)
        snap = ex.metrics.snapshot()
    assert snap["completed"] == 10 and snap["in_flight"] == 0
    assert snap["queue_depth"] == 0
    assert snap["tokens_reserved"] == 50
    assert snap["admission_wait_p50"] is not None and snap["admission_wait_total"] >= 0
    for key in ("latency_p50", "latency_p99", "rate_limited", "retries", "failed", "cancelled"):
        assert key in snap


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.timeout(30)
def test_a_rate_limited_executor_works_in_a_forked_child_with_its_own_buckets():
    ex = RateLimitedExecutor(limit_requests=100, limit_tokens=10_000, concurrency_limit=2)
    ex.start()
    assert ex.submit(Event(abs, args=(-1,), tokens=10)).result(timeout=5) == 1
    def child():
        result = ex.submit(Event(abs, args=(-2,), tokens=10)).result(timeout=5)
        return f"{result} {ex.limiter.waiting}"

    try:
        code, report = in_forked_child(child)
    finally:
        ex.shutdown()
    assert (code, report) == (0, "2 0")


def test_a_retry_waiting_for_capacity_ends_at_the_call_deadline():
    from apiexec.call_context import note_attempt

    def two_attempts():
        note_attempt()
        note_attempt()  # the retry waits for a request from the bucket
        return "sent"

    with RateLimitedExecutor(limit_requests=1, interval=30.0) as ex:
        started = time.monotonic()
        future = ex.submit(Event(two_attempts, timeout=0.5))
        with pytest.raises(DeadlineExceeded) as caught:
            future.result(timeout=10)
        assert time.monotonic() - started < 3.0
    assert caught.value.phase == "retry"


def test_map_return_exceptions_does_not_swallow_a_signal_handlers_exception():
    import signal

    class Stop(Exception):
        pass

    def handler(signum, frame):
        raise Stop("SIGUSR1")

    previous = signal.signal(signal.SIGUSR1, handler)
    gate = threading.Event()
    try:
        with Executor(queue_config=QueueConfig(concurrency_limit=1)) as ex:
            threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
            with pytest.raises(Stop):
                list(ex.map([Event(gate.wait, args=(10,))], return_exceptions=True))
            gate.set()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_after_fork_bookkeeping_in_process():
    """What the fork hook does, run in this process (a forked child's coverage is not recorded)."""
    gate = threading.Event()
    started = threading.Event()

    def hold():
        started.set()
        return gate.wait(10)

    ex = Executor(queue_config=QueueConfig(concurrency_limit=1))
    ex.start()
    running = ex.submit(hold)
    assert started.wait(5)
    queued = ex.submit(abs, -1)
    ex._after_fork()  # as the child would see it: both calls belong to the parent
    with pytest.raises(cf.CancelledError, match="parent process"):
        running.result(timeout=0)
    assert queued.cancelled()
    assert ex.state is ExecutorState.RUNNING and not ex.events
    assert ex.submit(pow, 2, 3).result(timeout=5) == 8
    gate.set()  # the "parent's" worker finishes; it must not disturb the new bookkeeping
    assert ex.join(timeout=5)
    ex.shutdown()
    idle = Executor()
    idle._after_fork()  # a stopped executor stays stopped
    assert idle.state is ExecutorState.IDLE


def test_shutdown_without_waiting_returns_at_once():
    gate = threading.Event()
    ex = Executor(queue_config=QueueConfig(concurrency_limit=1))
    ex.start()
    running = ex.submit(gate.wait, 10)
    started = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - started < 1.0 and ex.state is ExecutorState.IDLE
    gate.set()
    assert running.result(timeout=5) is True


def test_a_failing_release_is_logged_and_the_call_still_cancelled(caplog):
    from apiexec.execution.admission import Unlimited

    class Grabby(Unlimited):
        def admit(self, event, *, stop, deadline):
            return 5

        def release(self, event, reserved):
            raise RuntimeError("storage down")

    ex = Executor(admission=Grabby())
    item_event = Event(abs, args=(-1,))
    future = ex.append(item_event)
    future.cancel()
    item = ex._items[id(item_event)]
    ex._release(item, 5)
    assert "releasing the admission" in caplog.text
