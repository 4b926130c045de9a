"""Worker turns under a ThreadFit: few threads run, parked ones hold nothing and always end."""

import gc
import threading
import time
from collections import Counter

import pytest

import apiexec.execution.executor as executor_module
from apiexec import Event, Executor, QueueConfig
from apiexec.execution.thread_fit import EPOCH, ThreadFit

pytestmark = pytest.mark.timeout(30)


class HandClocks:
    """Wall and CPU clocks for the fit, moved by the test."""

    def __init__(self):
        self.lock = threading.Lock()
        self.wall = 0.0
        self.cpu = 0.0

    def now(self):
        with self.lock:
            return self.wall

    def cpu_time(self):
        with self.lock:
            return self.cpu

    def idle_epoch(self):
        """An epoch in which the process used no CPU (it waited)."""
        with self.lock:
            self.wall += EPOCH


@pytest.fixture
def fits(monkeypatch):
    """Executors started in the test get a ThreadFit that allows ``start`` threads."""
    made = []

    def install(start, **kwargs):
        def factory(ceiling):
            fit = ThreadFit(ceiling, **kwargs)
            fit.allowed = start
            made.append(fit)
            return fit

        monkeypatch.setattr(executor_module, "ThreadFit", factory)
        return made

    return install


def concurrency_probe():
    """Events that note how many of them run at once, and on which thread."""
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    threads = Counter()

    def run(i):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            threads[threading.get_ident()] += 1
        time.sleep(0.001)  # the call's own work: gives other workers a chance to overlap
        with lock:
            state["now"] -= 1
        return i

    return run, state, threads


def test_one_allowed_thread_runs_every_call_in_turn(fits):
    clocks = HandClocks()
    fits(1, now=clocks.now, cpu=clocks.cpu_time)
    run, state, threads = concurrency_probe()
    with Executor(Event, QueueConfig(queue_capacity=64, concurrency_limit=8), fit_threads=True) as ex:
        futures = [ex.submit(Event(run, args=(i,))) for i in range(40)]
        assert [f.result(timeout=10) for f in futures] == list(range(40))
    assert state["most"] == 1
    assert len(threads) == 1  # the running worker keeps its turn: no hand-off


def test_without_fit_every_worker_runs_at_once():
    run, state, _ = concurrency_probe()
    gate = threading.Barrier(4, timeout=10)

    def together(i):
        gate.wait()  # only four threads at once can pass
        return run(i)

    with Executor(Event, QueueConfig(queue_capacity=64, concurrency_limit=4)) as ex:
        futures = [ex.submit(Event(together, args=(i,))) for i in range(8)]
        assert sorted(f.result(timeout=10) for f in futures) == list(range(8))


def test_a_stalled_call_lets_the_parked_workers_run_the_rest(fits):
    clocks = HandClocks()
    made = fits(1, now=clocks.now, cpu=clocks.cpu_time)
    release = threading.Event()
    started = threading.Event()

    def stall():
        started.set()
        release.wait(20)
        return "late"

    with Executor(Event, QueueConfig(queue_capacity=64, concurrency_limit=8), fit_threads=True) as ex:
        blocked = ex.submit(Event(stall))
        assert started.wait(10)
        quick = [ex.submit(Event(abs, args=(-i,))) for i in range(10)]
        clocks.idle_epoch()  # a whole epoch without CPU: the parked ticker lets every thread run
        assert [f.result(timeout=10) for f in quick] == list(range(10))
        assert not blocked.done()
        assert made[0].allowed == 8
        release.set()
        assert blocked.result(timeout=10) == "late"


def test_shutdown_ends_parked_workers(fits):
    clocks = HandClocks()
    fits(1, now=clocks.now, cpu=clocks.cpu_time)
    run, _, _ = concurrency_probe()
    ex = Executor(Event, QueueConfig(queue_capacity=64, concurrency_limit=8), fit_threads=True)
    ex.start()
    futures = [ex.submit(Event(run, args=(i,))) for i in range(30)]
    threads = ex._runtime.threads
    assert len(threads) > 1  # some started, then parked
    assert futures[0].result(timeout=10) == 0  # one ran before the shutdown, on a slow machine too
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert sum(not f.cancelled() for f in futures) >= 1
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def test_a_dropped_executor_ends_its_parked_workers(fits):
    clocks = HandClocks()
    fits(1, now=clocks.now, cpu=clocks.cpu_time)
    ex = Executor(Event, QueueConfig(queue_capacity=64, concurrency_limit=8), fit_threads=True)
    ex.start()
    futures = [ex.submit(Event(abs, args=(-i,))) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == list(range(20))
    threads = ex._runtime.threads
    del ex, futures
    gc.collect()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def test_hammered_while_the_count_flaps_every_call_runs_exactly_once(fits):
    """Eight submitters; the process turns busy and idle every 100 calls: threads park and wake.

    The fit's clocks move with the calls (25 per epoch), not with the
    machine's speed, so the count flaps the same way on a slow CI runner.
    """
    clocks = HandClocks()
    made = fits(8, now=clocks.now, cpu=clocks.cpu_time)
    ran = Counter()
    counts = []  # the allowed count each time it changed, as the calls saw it
    most_parked = [0]
    lock = threading.Lock()
    step = EPOCH / 25

    def note(key):
        with lock:
            ran[key] += 1
            if not counts or counts[-1] != made[0].allowed:
                counts.append(made[0].allowed)
            most_parked[0] = max(most_parked[0], turns.parked)
            busy = (sum(ran.values()) // 100) % 2 == 0
        with clocks.lock:
            clocks.wall += step
            clocks.cpu += step if busy else step / 10
        return key

    results = {}
    with Executor(Event, QueueConfig(queue_capacity=32, concurrency_limit=8), fit_threads=True) as ex:

        def submitter(n):
            futures = [(f"{n}-{i}", ex.submit(Event(note, args=(f"{n}-{i}",)))) for i in range(300)]
            for key, future in futures:
                results[key] = future.result(timeout=20)

        turns = ex._runtime.turns
        workers = [threading.Thread(target=submitter, args=(n,)) for n in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(25)
            assert not worker.is_alive()
    assert len(results) == 2400 and all(results[key] == key for key in results)
    assert set(ran.values()) == {1} and len(ran) == 2400
    assert 1 in counts and 8 in counts[counts.index(1) :]  # down to one thread, then back up to all
    assert most_parked[0] >= 1  # workers over the count did park
    assert turns.active == 0 and turns.parked == 0  # every turn given back, none counted twice


def test_workers_park_when_the_count_drops(fits):
    clocks = HandClocks()
    made = fits(8, now=clocks.now, cpu=clocks.cpu_time)
    spans = []
    lock = threading.Lock()
    pair = threading.Barrier(2, timeout=10)

    def timed(i, together=False):
        if together:
            pair.wait()  # proves two workers run at once before the drop
        start = time.monotonic()
        time.sleep(0.002)
        with lock:
            spans.append((start, time.monotonic()))
        return i

    with Executor(Event, QueueConfig(queue_capacity=64, concurrency_limit=8), fit_threads=True) as ex:
        turns = ex._runtime.turns
        first = [ex.submit(Event(timed, args=(i, True))) for i in range(2)]
        assert [f.result(timeout=10) for f in first] == [0, 1]
        made[0].allowed = 1
        spans.clear()
        later = [ex.submit(Event(timed, args=(i,))) for i in range(40)]
        assert [f.result(timeout=10) for f in later] == list(range(40))
    settled = sorted(spans)[8:]  # workers idle at the drop may each run one call before parking
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(settled, settled[1:]))
    assert turns.active == 0 and turns.parked == 0  # every turn given back


def test_a_stop_wakes_the_parked_workers_at_once(fits):
    """No parked worker waits for its timer (an epoch of 30 s here) or for another to exit."""
    fits(1, epoch=30.0)
    release = threading.Event()
    started = threading.Event()
    running = {}

    def stall():
        running["thread"] = threading.get_ident()
        started.set()
        release.wait(20)

    ex = Executor(Event, QueueConfig(queue_capacity=64, concurrency_limit=8), fit_threads=True)
    ex.start()
    try:
        stuck = ex.submit(Event(stall))
        rest = [ex.submit(Event(abs, args=(-i,))) for i in range(10)]
        threads = ex._runtime.threads
        turns = ex._runtime.turns
        assert len(threads) > 1
        assert started.wait(10)  # the stalled call holds the one turn before the stop
        deadline = time.monotonic() + 10
        while turns.parked < len(threads) - 1:  # every other worker parked (a slow runner starts them late)
            assert time.monotonic() < deadline, f"{turns.parked} of {len(threads) - 1} workers parked"
            time.sleep(0.001)
        ex.shutdown(wait=False)
        parked = [t for t in threads if t.ident != running.get("thread")]
        for thread in parked:
            thread.join(5)
            assert not thread.is_alive()
        assert not stuck.done() and all(f.done() for f in rest)
    finally:
        release.set()
    assert stuck.result(timeout=10) is None
    for thread in threads:
        thread.join(10)
    assert turns.active == 0


def test_the_last_parked_worker_taking_a_turn_asks_for_another_to_keep_time():
    """Else, with fewer threads than the ceiling, stalled calls would wait with nobody deciding."""
    from apiexec.execution.runtime import Turns

    fit = ThreadFit(8, now=lambda: 0.0, cpu=lambda: 0.0)
    fit.allowed = 2
    asked = []
    turns = Turns(fit, threading.Event(), grow=asked.append)
    assert turns.take() is True  # a turn free: taken at once, and nobody is left parked
    assert asked == [2]
    assert turns.needs_ticker() is True
    turns.give()
    assert turns.active == 0
