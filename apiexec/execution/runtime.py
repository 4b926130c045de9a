"""The threads a started executor runs on, and what ends them.

Like CPython's ``concurrent/futures/thread.py``: worker threads block on the
executor's bounded queue and hold only a **weak reference** to the executor,
so an executor dropped without ``shutdown()`` (a re-run notebook cell) is
collected and its threads end. Workers are started lazily, one per queued
call while none is idle, up to the concurrency limit, so a large limit costs
nothing until it is used.

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
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from apiexec.errors import QueueStopped
from apiexec.execution.outcome import cancel_future, set_execution
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
    """

    def __init__(self, queue: Queue, max_workers: int, head: threading.Lock | None = None) -> None:
        self.queue = queue
        self.max_workers = max_workers
        self.head = head
        #: One worker step (take, admit, run an item); set by the executor.
        self.step: Callable[[], bool] = _no_step
        #: Set at shutdown: ends admission waits and retry backoffs at once.
        self.stop_event = threading.Event()
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
        if self._idle.acquire(blocking=False):
            return
        with self._spawn_lock:
            if len(self._threads) >= self.max_workers or self.stop_event.is_set():
                return
            thread = threading.Thread(
                target=_worker,
                args=(take, self._idle, self._all_started),
                name=f"apiexec-worker-{len(self._threads)}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _all_started(self) -> bool:
        return len(self._threads) >= self.max_workers

    def stop(self) -> list[WorkItem]:
        """Stop taking work; wake every waiter; return the items not started."""
        self.stop_event.set()
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


def _worker(take: Callable[[], bool], idle: threading.Semaphore, all_started: Callable[[], bool]) -> None:
    """A worker thread: take an item, run it, repeat until told to exit.

    ``take`` holds only a weak reference to the executor while it blocks,
    so a dropped executor can be collected (its finalizer stops the queue).
    """
    while True:
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
