"""Queue: a bounded FIFO of events with a concurrency gate.

:class:`Queue` is a :class:`queue.Queue` (``queue_capacity`` is its
``maxsize``) with two additions the standard class lacks:

* a **concurrency gate**: ``dequeue()`` takes one of ``concurrency_limit``
  slots and ``task_done()`` gives it back, so the ``limit + 1``-th dequeue
  blocks until some work finishes;
* **stop**: ``stop()`` wakes every thread blocked in ``enqueue``/``dequeue``
  at once (they raise :class:`~apiexec.errors.QueueStopped`), so shutdown
  never waits on a timeout.

Waiting threads block on the queue's conditions. ``capacity_refresh_time``
only bounds one wait before a thread re-checks its state; it is not a polling
period, since every change of state notifies the waiters.

Example:
    >>> q = Queue(queue_capacity=10, capacity_refresh_time=1.0, concurrency_limit=2)
    >>> q.enqueue("a")
    >>> q.dequeue()
    'a'
    >>> q.task_done()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Final

from apiexec._checks import check_int, check_positive_number
from apiexec._record import Frozen
from apiexec.clock import REAL, Waiter
from apiexec.errors import QueueStopped

DEFAULT_QUEUE_CAPACITY: Final = 100
DEFAULT_CAPACITY_REFRESH_TIME: Final = 1.0


class QueueConfig(Frozen):
    """Validated, immutable settings of a :class:`Queue`.

    Attributes:
        queue_capacity: Most events the queue holds; ``enqueue`` blocks beyond.
        capacity_refresh_time: Longest single wait (seconds) of a blocked
            thread before it re-checks for shutdown.
        concurrency_limit: Most events dequeued and not yet ``task_done``;
            None for no gate.

    Raises:
        ConfigError: (a ``ValueError``) naming the invalid field.
    """

    __slots__ = ("queue_capacity", "capacity_refresh_time", "concurrency_limit")
    queue_capacity: int
    capacity_refresh_time: float
    concurrency_limit: int | None

    def __init__(
        self,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
        capacity_refresh_time: float = DEFAULT_CAPACITY_REFRESH_TIME,
        concurrency_limit: int | None = None,
    ) -> None:
        check_int("queue_capacity", queue_capacity, 1)
        check_positive_number("capacity_refresh_time", capacity_refresh_time)
        if concurrency_limit is not None:
            check_int("concurrency_limit", concurrency_limit, 1)
        self._assign(
            queue_capacity=queue_capacity,
            capacity_refresh_time=capacity_refresh_time,
            concurrency_limit=concurrency_limit,
        )


class _SlotGate:
    """Concurrency slots, counted under the queue's mutex."""

    __slots__ = ("limit", "in_use")

    def __init__(self, limit: int, in_use: int = 0) -> None:
        self.limit = limit
        self.in_use = in_use

    @property
    def full(self) -> bool:
        return self.in_use >= self.limit


class Queue(queue.Queue[Any]):
    """Bounded FIFO of events with a concurrency gate and a prompt stop.

    Args:
        queue_capacity: Bound of the queue (``maxsize``).
        capacity_refresh_time: Longest single wait of a blocked thread.
        concurrency_limit: Slots for dequeued, unfinished events; None: no gate.
        waiter: Clock and blocking (default :data:`apiexec.clock.REAL`;
            tests pass a fake one).

    Raises:
        ConfigError: For invalid settings (see :class:`QueueConfig`).
    """

    def __init__(
        self,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
        capacity_refresh_time: float = DEFAULT_CAPACITY_REFRESH_TIME,
        concurrency_limit: int | None = None,
        *,
        waiter: Waiter = REAL,
    ) -> None:
        self.config = QueueConfig(queue_capacity, capacity_refresh_time, concurrency_limit)
        self._waiter = waiter
        super().__init__(maxsize=queue_capacity)
        self._concurrency_sem = _SlotGate(concurrency_limit) if concurrency_limit else None
        self._stopped = False

    @property
    def queue_capacity(self) -> int:
        """The bound of the queue."""
        return self.config.queue_capacity

    @property
    def capacity_refresh_time(self) -> float:
        """Longest single wait before a blocked thread re-checks its state."""
        return self.config.capacity_refresh_time

    @property
    def concurrency_limit(self) -> int | None:
        """Slots of the concurrency gate, or None."""
        return self.config.concurrency_limit

    # -- life-cycle ---------------------------------------------------------

    def start(self) -> None:
        """Open the queue for work (a new queue is already open).

        Raises:
            QueueStopped: The queue was stopped; build a new one instead.
        """
        with self.mutex:
            if self._stopped:
                raise QueueStopped("a stopped Queue cannot be restarted")

    def stop(self) -> None:
        """Stop the queue and wake every blocked thread. Safe to call twice."""
        with self.mutex:
            self._stopped = True
            self.not_empty.notify_all()
            self.not_full.notify_all()

    def is_stopped(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stopped

    # -- work ---------------------------------------------------------------

    def enqueue(self, event: Any, timeout: float | None = None) -> None:
        """Add an event, blocking while the queue is full.

        Raises:
            queue.Full: Still full after ``timeout`` seconds.
            QueueStopped: The queue is (or gets) stopped.
        """
        self.put(event, timeout=timeout)

    def dequeue(self, timeout: float | None = None) -> Any:
        """Take the oldest event and one concurrency slot.

        Blocks while the queue is empty or every slot is taken.

        Raises:
            queue.Empty: Nothing could be taken within ``timeout`` seconds.
            QueueStopped: The queue is (or gets) stopped.
        """
        return self.get(timeout=timeout)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """``queue.Queue.put`` that raises :class:`QueueStopped` once stopped."""
        with self.not_full:
            if self._stopped or self._qsize() >= self.maxsize:  # the common case skips the wait set-up
                self._wait(self.not_full, lambda: self._qsize() >= self.maxsize, block, timeout, queue.Full)
            self._put(item)
            self.unfinished_tasks += 1
            if self.not_empty._waiters:  # type: ignore[attr-defined]  # skip a Python-level no-op notify
                self.not_empty.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """``queue.Queue.get`` that also takes a concurrency slot."""
        gate = self._concurrency_sem
        with self.not_empty:
            if self._stopped or not self._qsize() or (gate is not None and gate.full):
                self._wait(
                    self.not_empty,
                    lambda: not self._qsize() or (gate is not None and gate.full),
                    block,
                    timeout,
                    queue.Empty,
                )
            if gate is not None:
                gate.in_use += 1
            item = self._get()
            if self.not_full._waiters:  # type: ignore[attr-defined]
                self.not_full.notify()
            return item

    def task_done(self) -> None:
        """Mark one dequeued event finished and give its slot back.

        Raises:
            ValueError: Called more times than events were enqueued.
        """
        with self.mutex:  # one acquisition for the slot and the task count
            gate = self._concurrency_sem
            if gate is not None and gate.in_use > 0:
                was_full = gate.full
                gate.in_use -= 1
                # A waiter blocks while the queue is empty or the gate full: a freed
                # slot lets one go only if the gate was full and an event is queued.
                # (Waking an idle worker to an empty queue costs two context switches.)
                if was_full and self._qsize():
                    self.not_empty.notify()
            unfinished = self.unfinished_tasks - 1
            if unfinished < 0:
                raise ValueError("task_done() called too many times")
            self.unfinished_tasks = unfinished
            if not unfinished:
                self.all_tasks_done.notify_all()

    def drain(self) -> list[Any]:
        """Remove and return every queued event (for cancelling at shutdown).

        The drained events count as done: they take no slot.
        """
        with self.mutex:
            items = [self._get() for _ in range(self._qsize())]
            self.unfinished_tasks -= len(items)
            if self.unfinished_tasks == 0:
                self.all_tasks_done.notify_all()
            self.not_full.notify_all()
        return items

    def _wait(
        self,
        cond: threading.Condition,
        blocked: Callable[[], bool],
        block: bool,
        timeout: float | None,
        error: type[Exception],
    ) -> None:
        """Wait on ``cond`` (held) while ``blocked()``; raise on stop or timeout."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        waiter = self._waiter
        deadline = None if timeout is None else waiter.now() + timeout
        while True:
            if self._stopped:
                raise QueueStopped("the queue is stopped")
            if not blocked():
                return
            if not block:
                raise error
            wait = self.capacity_refresh_time
            if deadline is not None:
                left = deadline - waiter.now()
                if left <= 0:
                    raise error
                wait = min(wait, left)
            waiter.wait(cond, wait)
