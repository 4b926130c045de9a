"""The threads a started executor runs on, and what ends them.

Like CPython's ``concurrent/futures/thread.py``: worker threads block on the
executor's bounded queue and hold only a **weak reference** to the executor,
so an executor dropped without ``shutdown()`` (a re-run notebook cell) is
collected and its threads end. Workers are started lazily, one per queued
call while none is idle, up to the concurrency limit, so a large limit costs
nothing until it is used. With a :class:`~apiexec.execution.thread_fit.ThreadFit`
only as many workers as it allows take calls (:class:`Turns`); the others
wait, parked, holding nothing.

Three things end a runtime besides ``shutdown()``:

* the executor being garbage-collected (a :func:`weakref.finalize`),
* the interpreter exiting (an ``atexit`` hook: calls in flight finish, calls
  not started are cancelled),
* ``fork()``: the child gets none of the parent's threads, so every live
  executor is told to start afresh there (see ``Executor._after_fork``).

Example:
    >>> from apiexec.execution.work_queue import Queue
    >>> rt = Runtime(Queue(10, 1.0, 2), max_workers=2)
    >>> rt.stop()
    []
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from apiexec.errors import QueueStopped
from apiexec.execution.outcome import cancel_future, set_execution
from apiexec.execution.thread_fit import ThreadFit
from apiexec.execution.work_queue import Queue

logger = logging.getLogger(__name__)

#: The executors alive in this process: told about fork() and exit.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
_LIVE_RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


class WorkItem:
    """One call on its way: submit → queue → worker → future.

    The future is the call's state machine; the item carries what the
    executor needs beside it.

    Attributes:
        event: The event to invoke.
        future: Resolved exactly once with the call's outcome.
        deadline: ``time.monotonic()`` the call must end by, or None.
        timeout: The deadline as seconds from submission (for messages).
        accepted: Forwarded into the queue (counted by ``join()``).
        reserved: Units the admission policy took for the call.
        finished: Reached its terminal state (set once, under the executor's lock).
    """

    # A plain slotted class (not a dataclass): ``import apiexec`` does not pay for one.
    __slots__ = ("event", "future", "deadline", "timeout", "accepted", "reserved", "finished")

    def __init__(
        self,
        event: Any,
        future: cf.Future[Any] | None = None,
        deadline: float | None = None,
        timeout: float | None = None,
        accepted: bool = False,
        reserved: int = 0,
        finished: bool = False,
    ) -> None:
        self.event = event
        self.future: cf.Future[Any] = cf.Future() if future is None else future
        self.deadline = deadline
        self.timeout = timeout
        self.accepted = accepted
        self.reserved = reserved
        self.finished = finished

    def __repr__(self) -> str:
        return f"WorkItem(event={self.event!r}, future={self.future!r}, accepted={self.accepted}, finished={self.finished})"


#: Runs one dequeued item on a worker thread (the executor's method).
RunItem = Callable[[WorkItem], None]


class Runtime:
    """The queue, the workers and the stop signal of one started executor.

    Args:
        queue: The bounded queue of :class:`WorkItem` s.
        max_workers: Most worker threads (the concurrency limit).
        head: Held by the worker taking the next item when admission may
            block, so calls are admitted strictly in order; None otherwise.
        fit: Decides how many workers take calls at once; None: all of them.
    """

    def __init__(
        self, queue: Queue, max_workers: int, head: threading.Lock | None = None, fit: ThreadFit | None = None
    ) -> None:
        self.queue = queue
        self.max_workers = max_workers
        self.head = head
        #: One worker step (take, admit, run an item); set by the executor.
        self.step: Callable[[], bool] = _no_step
        #: Set at shutdown: ends admission waits and retry backoffs at once.
        self.stop_event = threading.Event()
        #: Which workers may take calls now.
        self.turns = Turns(fit, self.stop_event, grow=self._grow)
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._spawn_lock = threading.Lock()
        _LIVE_RUNTIMES.add(self)

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads started so far (a copy)."""
        with self._spawn_lock:
            return list(self._threads)

    def ensure_worker(self, take: Callable[[], bool]) -> None:
        """Start a worker if none is idle and the limit allows (after a put).

        Args:
            take: One worker step: take, admit and run an item (False: exit).
        """
        if len(self._threads) >= self.max_workers:  # all started (a racy read is harmless)
            return
        if not self.turns.needs_ticker() and self._idle.acquire(blocking=False):
            return
        self._spawn(take)

    def _spawn(self, take: Callable[[], bool]) -> bool:
        """Start one more worker thread; False at the limit or after a stop."""
        with self._spawn_lock:
            if len(self._threads) >= self.max_workers or self.stop_event.is_set():
                return False
            thread = threading.Thread(
                target=_worker,
                args=(take, self._idle, self._all_started, self.turns),
                name=f"apiexec-worker-{len(self._threads)}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
            return True

    def _all_started(self) -> bool:
        return len(self._threads) >= self.max_workers

    def _grow(self, allowed: int) -> None:
        """Start the workers missing: for the calls waiting, and a parked one to keep time.

        Never raises (it runs on workers): a thread that cannot start is logged.
        """
        missing = min(allowed - len(self._threads), self.queue.qsize())
        if self.turns.needs_ticker():  # held back, and nobody parked to decide when the calls stall
            missing = max(missing, 0) + 1
        try:
            for _ in range(missing):
                if not self._spawn(self.step):
                    return
        except Exception:  # e.g. "can't start new thread": the workers running go on
            logger.exception("could not start another apiexec worker")

    def stop(self) -> list[WorkItem]:
        """Stop taking work; wake every waiter; return the items not started."""
        self.stop_event.set()
        self.turns.wake_all()
        self.queue.stop()
        return self.queue.drain()

    def join(self) -> None:
        """Wait for every worker thread to end (never from a worker itself)."""
        current = threading.current_thread()
        for thread in self.threads:
            if thread is not current:
                thread.join()


def _no_step() -> bool:
    return False


class Turns:
    """Which workers may take calls now: all, or as many as a :class:`ThreadFit` allows.

    A worker holds a turn from its start to its exit and keeps it from one
    call to the next (no hand-off while the count stays); over the count, it
    gives its turn back after its call and parks. While workers are parked,
    one of them (the *ticker*) waits only until the end of the fit's epoch,
    so a decision comes on time even when every running call is stalled.

    Args:
        fit: The controller, or None (every worker always has a turn).
        stop: Set at shutdown: parked workers exit.
        grow: Called with the new count when the fit allows more workers.
    """

    def __init__(self, fit: ThreadFit | None, stop: threading.Event, *, grow: Callable[[int], None]) -> None:
        self.fit = fit
        self._stop = stop
        self._grow = grow
        # Reentrant: a garbage collection inside a locked section may run a dropped
        # executor's finalizer on this thread, whose stop() wakes the parked workers.
        self._cond = threading.Condition(threading.RLock())
        self.active = 0  # workers holding a turn
        self.parked = 0
        self._ticker = False
        self._count = itertools.count(1)
        self._done = 0  # calls finished (the last value of the count seen)

    def take(self) -> bool:
        """Wait for a turn and take it; False once the runtime stopped.

        The turn is taken either way: :meth:`give` hands it back.
        """
        fit = self.fit
        if fit is None:
            return True
        grown = 0
        with self._cond:
            self.parked += 1
            try:
                while self.active >= fit.allowed:
                    if self._stop.is_set():
                        self.active += 1
                        return False
                    if self._ticker:
                        self._cond.wait()
                        continue
                    self._ticker = True
                    try:
                        self._cond.wait(fit.left(fit.now()))
                    finally:
                        self._ticker = False
                    grown = max(grown, self._decide())
                self.active += 1
                if self.parked > 1:
                    self._cond.notify()  # another parked worker becomes the ticker
                elif fit.allowed < fit.ceiling:
                    grown = grown or fit.allowed  # none left parked: start one to keep time
            finally:
                self.parked -= 1
        if grown:
            self._grow(grown)
        return True

    def after_call(self) -> bool:
        """A worker finished a step: keep its turn, or park; False once stopped.

        The worker holds a turn either way (:meth:`give` it back at exit).
        """
        fit = self.fit
        if fit is None:
            return True
        self._done = next(self._count)
        if self.active <= fit.allowed and not fit.due(fit.now()):  # racy reads: decided under the lock
            return True
        with self._cond:
            grown = self._decide() if fit.due(fit.now()) else 0
            if self.active <= fit.allowed:
                keep = True
            else:
                keep = False
                self.active -= 1
        if grown:
            self._grow(grown)
        return keep or self.take()

    def give(self) -> None:
        """A worker exits: its turn goes to a parked one."""
        if self.fit is None:
            return
        with self._cond:
            self.active -= 1
            self._cond.notify()

    def needs_ticker(self) -> bool:
        """True when workers are held back and none is parked to watch the time."""
        fit = self.fit
        return fit is not None and fit.allowed < fit.ceiling and not self.parked

    def wake_all(self) -> None:
        """Wake every parked worker (shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def _decide(self) -> int:
        """Let the fit decide (lock held); the new count if it grew, else 0."""
        assert self.fit is not None
        before = self.fit.allowed
        allowed = self.fit.decide(self._done)
        if allowed <= before:
            return 0
        self._cond.notify(allowed - before)
        return allowed


def _worker(take: Callable[[], bool], idle: threading.Semaphore, all_started: Callable[[], bool], turns: Turns) -> None:
    """A worker thread: take an item, run it, repeat until told to exit.

    ``take`` holds only a weak reference to the executor while it blocks,
    so a dropped executor can be collected (its finalizer stops the queue).
    """
    running = turns.take()
    try:
        while running:
            try:
                more = take()
            except QueueStopped:
                return
            except BaseException:  # never die silently: the queue would stall
                logger.exception("an apiexec worker failed; it exits")
                return
            if not more:
                return
            if not all_started():  # once every worker exists, nobody asks who is idle
                idle.release()
            running = turns.after_call()
    finally:
        turns.give()


def cancel_items(items: list[WorkItem]) -> None:
    """Cancel items that never started (their executor is gone or exiting)."""
    for item in items:
        set_execution(item.event, "cancelled", error="cancelled: the executor was dropped or the process is exiting")
        cancel_future(item.future)


def worker_step(ref: weakref.ref[Any], runtime: Runtime) -> bool:
    """A worker's step: take the next item, admit it, run it.

    Holds only a weak reference to the executor while it blocks on the
    queue. Returns False when the worker should exit (executor gone).

    Raises:
        QueueStopped: The queue was stopped (shutdown).
    """
    if runtime.head is None:
        item = runtime.queue.dequeue()
        executor = ref()
        admitted = _admit_guarded(executor, item, runtime)
    else:
        with runtime.head:  # one worker at a time admits: strict submission order
            item = runtime.queue.dequeue()
            executor = ref()
            admitted = _admit_guarded(executor, item, runtime)
    try:
        if executor is None:
            cancel_items([item])
            return False
        if admitted:
            executor._invoke(item, runtime.stop_event)
        return True
    finally:
        runtime.queue.task_done()


def _admit_guarded(executor: Any, item: WorkItem, runtime: Runtime) -> bool:
    """Admit on a worker; a policy failing past ``Exception`` fails that call only."""
    if executor is None:
        return False
    try:
        return executor._admit(item, runtime.stop_event)
    except BaseException as exc:  # e.g. SystemExit from a policy: the worker must go on
        logger.exception("admission of event %s failed", getattr(item.event, "id", "?"))
        executor._fail(item, RuntimeError(f"admission failed: {exc!r}"))
        return False


def register(executor: Any) -> None:
    """Track a live executor for fork() and interpreter exit."""
    _LIVE.add(executor)


def finalize_runtime(runtime: Runtime) -> None:
    """A dropped executor's runtime: cancel what never started, end threads."""
    cancel_items(runtime.stop())


def _after_fork_in_child() -> None:
    # The parent's runtimes (and their locks, maybe held at fork time) are
    # not this process's: forget them before anything could touch them.
    for runtime in list(_LIVE_RUNTIMES):
        _LIVE_RUNTIMES.discard(runtime)
    for executor in list(_LIVE):
        try:
            executor._after_fork()
        except Exception:  # the child must go on whatever one executor does
            logger.exception("resetting an executor after fork failed")


def _at_exit() -> None:
    """Interpreter exit: finish calls in flight, cancel calls not started."""
    runtimes = list(_LIVE_RUNTIMES)
    for runtime in runtimes:
        cancel_items(runtime.stop())
    for runtime in runtimes:
        runtime.join()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
