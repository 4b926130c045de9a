"""The seed design's bookkeeping names, as a thin front over the executor core.

``append`` records a call as pending, ``forward`` moves pending calls into
the queue, ``pop`` forgets one, ``process_event`` runs one on the calling
thread. ``submit`` (in :mod:`apiexec.execution.executor`) is append and
forward in one step; most code needs nothing else.

Example:
    >>> from apiexec.execution.event import Event
    >>> from apiexec.execution.executor import Executor
    >>> ex = Executor()
    >>> ev = Event(abs, args=(-2,))
    >>> future = ex.append(ev)
    >>> ex.process_event(ev)
    >>> future.result()
    2
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import TYPE_CHECKING, Any

from apiexec.execution.event import Execution

if TYPE_CHECKING:
    from apiexec.execution.runtime import Runtime, WorkItem


class SeedFront:
    """``append``/``pop``/``forward``/``process_event`` (mixed into Executor)."""

    # What the executor core provides (see apiexec.execution.executor).
    _lock: threading.RLock
    _items: dict[int, WorkItem]
    _pending: dict[int, WorkItem]
    _unfinished: int
    _count_lock: threading.Lock
    _runtime: Runtime | None

    if TYPE_CHECKING:

        def _add(self, event: Any, *, pending: bool = True) -> WorkItem: ...
        def _admit(self, item: WorkItem, stop: threading.Event, *, reraise: bool = False) -> bool: ...
        def _cancel(self, item: WorkItem) -> None: ...
        def _check_type(self, event: Any) -> None: ...
        def _enqueue(self, runtime: Runtime, item: WorkItem) -> None: ...
        def _invoke(self, item: WorkItem, stop: threading.Event) -> None: ...
        def _running(self) -> Runtime: ...

    def append(self, event: Any) -> cf.Future[Any]:
        """Record an event as pending (not yet queued).

        Returns:
            The event's future.

        Raises:
            TypeError: The event is not of ``event_type``.
            ValueError: The event is already recorded.
        """
        self._check_type(event)
        return self._add(event).future

    def pop(self, event_id: Any) -> Any:
        """Forget an event; one not yet forwarded is cancelled.

        Raises:
            KeyError: No such event.
        """
        with self._lock:
            key = next((k for k, item in self._items.items() if item.event.id == event_id), None)
            if key is None:
                raise KeyError(event_id)
            item = self._items.pop(key)
            unforwarded = self._pending.pop(key, None) is not None
        if unforwarded:
            self._cancel(item)
        return item.event

    def forward(self) -> None:
        """Move every pending event into the queue, oldest first.

        Returns as soon as they are queued; blocks only while the queue is
        full (backpressure).

        Raises:
            ExecutorNotRunning: The executor is not started, or shut down.
        """
        while True:
            with self._lock:
                runtime = self._running()
                if not self._pending:
                    return
                key = next(iter(self._pending))
                item = self._pending.pop(key)
                item.accepted = True
                with self._count_lock:
                    self._unfinished += 1
            self._enqueue(runtime, item)

    def process_event(self, event: Any) -> None:
        """Run one event now, on the calling thread (admission included).

        The event must not also be queued. Its outcome is in its execution
        (and its future, when it was appended).

        Raises:
            ValueError: The event is already queued or running.
            CapacityError: The event can never fit inside the limits.
        """
        with self._lock:
            item = self._items.get(id(event))
            if item is not None and id(event) not in self._pending:
                raise ValueError(f"event {event.id} is already queued or running")
            execution = getattr(event, "execution", None)
            if item is None and isinstance(execution, Execution) and execution.status.is_terminal:
                raise ValueError(f"event {event.id} has already run")
            if item is None:
                item = self._add(event, pending=False)
            else:
                del self._pending[id(event)]
        stop = self._runtime.stop_event if self._runtime is not None else threading.Event()
        if self._admit(item, stop, reraise=True):
            self._invoke(item, stop)

