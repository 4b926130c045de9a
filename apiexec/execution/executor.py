"""Executor: runs events on worker threads, each exactly once.

The call path, top-down::

    submit(event) ─ append ─ forward ─▶ Queue (bounded; blocks when full)
                                          │ dequeue (takes a concurrency slot)
                                  dispatcher thread ── _admit (rate limits)
                                          │
                          ThreadPoolExecutor worker ── event.invoke() ── task_done

One dispatcher thread takes events from the queue in order, admits them (the
:class:`~apiexec.rate_limited.RateLimitedExecutor` waits there for capacity)
and hands them to a :class:`concurrent.futures.ThreadPoolExecutor` whose
size is the concurrency limit. Every accepted event gets a real
:class:`concurrent.futures.Future` and ends in exactly one terminal state.
The executor keeps its own record of each event's state, so events it cannot
inspect (mocks, foreign types) are still accounted for.

Leaving ``with executor:`` (normally, by an exception or by Ctrl-C) lets the
calls in flight finish, cancels the calls not started, joins every thread it
started and sets ``task_queue`` back to None.

Example:
    >>> with Executor(Event) as ex:
    ...     fut = ex.submit(Event(pow, {"base": 2, "exp": 10}))
    ...     fut.result()
    1024
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from apiexec.call_context import call_context
from apiexec.errors import EventFailed, ExecutorNotRunning, QueueStopped
from apiexec.execution.event import Event, Execution, ExecutionStatus, describe_error
from apiexec.execution.metrics import Metrics
from apiexec.execution.work_queue import Queue, QueueConfig

logger = logging.getLogger(__name__)

#: Worker threads (and concurrency slots) when ``concurrency_limit`` is None.
DEFAULT_CONCURRENCY: Final = 32

_CANCEL_MESSAGE: Final = "cancelled: the executor shut down before the call started"


@dataclass(frozen=True)
class _Runtime:
    """What a started executor runs on; swapped out whole at shutdown."""

    queue: Queue
    pool: cf.ThreadPoolExecutor
    dispatcher: threading.Thread


@dataclass
class _Record:
    """The executor's own view of one event (mocks cannot be trusted)."""

    future: cf.Future[Any] = field(default_factory=cf.Future)
    status: ExecutionStatus = ExecutionStatus.PENDING
    accepted: bool = False  # forwarded into the queue: counted by join()
    reserved: int = 0  # tokens taken from a limiter at admission


class Executor:
    """Runs events of one type on worker threads.

    Args:
        event_type: The event class accepted (or an ``event_type`` string).
        queue_config: Queue bound, refresh time and concurrency limit.

    Raises:
        TypeError: ``append``/``submit`` of an event of another type.

    Example:
        >>> config = QueueConfig(queue_capacity=100, capacity_refresh_time=1.0,
        ...                      concurrency_limit=8)
        >>> with Executor(Event, config) as ex:
        ...     results = list(ex.map(Event(pow, {"base": i, "exp": 2}) for i in range(3)))
        >>> results
        [0, 1, 4]
    """

    def __init__(self, event_type: type | str = Event, queue_config: QueueConfig | None = None) -> None:
        self.event_type = event_type
        self.queue_config = queue_config or QueueConfig()
        self.events: dict[Any, Any] = {}
        self.pending: dict[Any, Any] = {}
        self._records: dict[Any, _Record] = {}
        self._lock = threading.RLock()
        self._all_done = threading.Condition(self._lock)
        self._unfinished = 0
        self._closing = False
        self._stop = threading.Event()  # set at shutdown: ends retry backoffs at once
        self._runtime: _Runtime | None = None
        self.metrics = Metrics()

    @property
    def task_queue(self) -> Queue | None:
        """The queue while the executor runs; None before start and after exit."""
        runtime = self._runtime
        return None if runtime is None else runtime.queue

    @property
    def _dispatcher(self) -> threading.Thread | None:
        runtime = self._runtime
        return None if runtime is None else runtime.dispatcher

    @property
    def max_workers(self) -> int:
        """Worker threads: the concurrency limit, or DEFAULT_CONCURRENCY."""
        return self.queue_config.concurrency_limit or DEFAULT_CONCURRENCY

    # -- life-cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the queue, the dispatcher and the worker pool (idempotent)."""
        with self._lock:
            if self._runtime is not None:
                return
            queue = Queue(
                self.queue_config.queue_capacity,
                self.queue_config.capacity_refresh_time,
                self.max_workers,
            )
            pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="apiexec-worker")
            dispatcher = threading.Thread(
                target=self._dispatch_loop, args=(queue, pool), name="apiexec-dispatcher", daemon=True
            )
            self._runtime = _Runtime(queue, pool, dispatcher)
            self._closing = False
            self._stop = threading.Event()
            dispatcher.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop: finish calls in flight, cancel calls not started. Safe twice.

        Args:
            wait: Wait for the calls in flight and join the worker threads.
        """
        with self._lock:
            runtime = self._runtime
            if runtime is None:
                return
            self._closing = True
            self._stop.set()
        runtime.queue.stop()
        self._wake_admission()
        runtime.dispatcher.join()
        for event in runtime.queue.drain():
            self._cancel(event)
        for event in self._take_pending():
            self._cancel(event)
        runtime.pool.shutdown(wait=wait)
        with self._lock:
            self._runtime = None
            self._closing = False
        logger.debug("executor shut down")

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=True)

    # -- bookkeeping --------------------------------------------------------

    def append(self, event: Any) -> cf.Future[Any]:
        """Record an event as pending (not yet queued).

        Returns:
            The event's future.

        Raises:
            TypeError: The event is not of ``event_type``.
            ValueError: The event is already recorded.
        """
        self._check_type(event)
        with self._lock:
            if event.id in self.events or event.id in self._records:
                raise ValueError(f"event {event.id} is already recorded")
            record = _Record()
            self._records[event.id] = record
            self.events[event.id] = event
            self.pending[event.id] = event
            return record.future

    def pop(self, event_id: Any) -> Any:
        """Forget an event; one not yet forwarded is cancelled.

        Raises:
            KeyError: No such event.
        """
        with self._lock:
            event = self.events.pop(event_id)
            unforwarded = self.pending.pop(event_id, None) is not None
        if unforwarded:
            self._cancel(event)
        return event

    def forward(self) -> None:
        """Move every pending event into the queue, oldest first.

        Returns as soon as they are queued; blocks only while the queue is
        full (backpressure).

        Raises:
            ExecutorNotRunning: The executor is not started, or shut down.
        """
        while True:
            with self._lock:
                queue = self._running_queue()
                if not self.pending:
                    return
                event_id = next(iter(self.pending))
                event = self.pending.pop(event_id)
                record = self._records[event_id]
                record.accepted = True
                self._unfinished += 1
            try:
                queue.enqueue(event)
            except QueueStopped:
                self._cancel(event)
                raise ExecutorNotRunning("the executor shut down while forwarding") from None
            except BaseException:  # Ctrl-C while blocked on a full queue
                self._cancel(event)
                raise

    def submit(self, event: Any) -> cf.Future[Any]:
        """Append and forward one event.

        Returns:
            A future with the call's result, or its exception.

        Raises:
            ExecutorNotRunning: The executor is not started, or shut down.
        """
        with self._lock:  # no shutdown between the check and the append
            self._running_queue()
            future = self.append(event)
        self.forward()
        return future

    def map(self, events: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
        """Submit events and yield their results in input order.

        Events are submitted lazily, a queue's worth ahead of the results
        yielded, so an endless iterable is fine. A failed event raises its
        exception here; events not yet started are then cancelled.

        Args:
            events: Events of ``event_type``.
            timeout: Seconds from this call until every result is due.

        Raises:
            TimeoutError: A result was not ready in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        window = self.queue_config.queue_capacity + self.max_workers
        inflight: deque[tuple[Any, cf.Future[Any]]] = deque()
        try:
            for event in events:
                if len(inflight) >= window:  # never block in submit on a full pipeline
                    yield self._result(*inflight.popleft(), deadline)
                inflight.append((event, self.submit(event)))
            while inflight:
                yield self._result(*inflight.popleft(), deadline)
        finally:
            for _, future in inflight:
                future.cancel()

    def _result(self, event: Any, future: cf.Future[Any], deadline: float | None) -> Any:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(remaining)
        finally:
            if future.done():
                with self._lock:
                    self.events.pop(event.id, None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every forwarded event is in a terminal state.

        Returns:
            True when all are terminal; False on timeout.
        """
        with self._all_done:
            return self._all_done.wait_for(lambda: self._unfinished == 0, timeout)

    @property
    def is_all_processed(self) -> bool:
        """True when nothing is pending, queued or running."""
        with self._lock:
            return not self.pending and self._unfinished == 0

    def process_event(self, event: Any) -> None:
        """Run one event now, on the calling thread (admission included).

        The event must not also be queued. Its outcome is in its execution
        (and its future, when it was appended).
        """
        with self._lock:
            record = self._records.get(event.id)
            if record is None and event.id in self.events:
                raise ValueError(f"event {event.id} has already run")
            if record is not None and (record.accepted or record.status is not ExecutionStatus.PENDING):
                raise ValueError(f"event {event.id} is already queued or running")
            record = record or _Record()
            self.pending.pop(event.id, None)
            record.status = ExecutionStatus.PROCESSING
        if record.future.cancelled():
            self._cancel(event, record)
            return
        try:
            reserved = self._admit(event)
        except Exception as exc:  # e.g. CapacityError: the event fails, the caller hears
            self._finish(event, ExecutionStatus.FAILED, error=exc, record=record)
            raise
        if reserved is None or not record.future.set_running_or_notify_cancel():
            self._cancel(event, record)
            return
        record.reserved = reserved
        self._invoke(event, record)

    # -- the data path ------------------------------------------------------

    def _dispatch_loop(self, queue: Queue, pool: cf.ThreadPoolExecutor) -> None:
        while True:
            try:
                event = queue.dequeue()
            except QueueStopped:
                return
            try:
                self._dispatch(event, queue, pool)
            except BaseException:  # never lose an event, never kill the loop silently
                logger.exception("dispatching event %s failed", event.id)
                self._finish(event, ExecutionStatus.FAILED, error=RuntimeError("dispatch failed"))
                queue.task_done()

    def _dispatch(self, event: Any, queue: Queue, pool: cf.ThreadPoolExecutor) -> None:
        record = self._record_of(event)
        if record is None or record.future.cancelled():
            self._cancel(event)
            queue.task_done()
            return
        try:
            reserved = self._admit(event)
        except Exception as exc:  # e.g. CapacityError: fails now rather than hang
            self._finish(event, ExecutionStatus.FAILED, error=exc)
            queue.task_done()
            return
        if reserved is None or not record.future.set_running_or_notify_cancel():
            self._cancel(event)
            queue.task_done()
            return
        with self._lock:
            record.status = ExecutionStatus.PROCESSING
            record.reserved = reserved
        pool.submit(self._work, event, record, queue)

    def _work(self, event: Any, record: _Record, queue: Queue) -> None:
        try:
            self._invoke(event, record)
        finally:
            queue.task_done()

    def _invoke(self, event: Any, record: _Record) -> None:
        try:
            with call_context(self._observe_response, self._retry_gate(), self._stop):
                value = event.invoke()
        except BaseException as exc:
            self._finish(event, ExecutionStatus.FAILED, error=exc, record=record)
            if not isinstance(exc, Exception):
                raise
            return
        try:
            self._settle(event, record.reserved)  # before join() can see the call as done
        except Exception:  # bookkeeping must never lose the call's outcome
            logger.exception("settling limits after event %s failed", event.id)
        execution = getattr(event, "execution", None)
        if isinstance(execution, Execution) and execution.status is ExecutionStatus.FAILED:
            error = execution.exception or EventFailed(execution.error or "the event failed")
            self._finish(event, ExecutionStatus.FAILED, error=error, record=record)
        else:
            result = execution.result if isinstance(execution, Execution) else value
            self._finish(event, ExecutionStatus.COMPLETED, result=result, record=record)

    # -- hooks for RateLimitedExecutor ----------------------------------------

    def _admit(self, event: Any) -> int | None:
        """Admit an event; return tokens reserved, or None to cancel it."""
        return 0

    def _settle(self, event: Any, reserved: int) -> None:
        """Called after a call completed, with what admission reserved."""

    def _observe_response(self, status_code: int, headers: Any) -> None:
        """Told of every HTTP response of every call."""
        self.metrics.record_response(status_code)

    def _retry_gate(self) -> Callable[[], bool] | None:
        """What a call's retry waits on before it is sent (None: nothing)."""
        return None

    def _wake_admission(self) -> None:
        """Wake a dispatcher waiting in ``_admit`` (at shutdown)."""

    # -- state changes --------------------------------------------------------

    def _record_of(self, event: Any) -> _Record | None:
        with self._lock:
            return self._records.get(event.id)

    def _running_queue(self) -> Queue:
        runtime = self._runtime
        if runtime is None or self._closing:
            raise ExecutorNotRunning(
                "the executor is not running: use `with executor:` or call executor.start()"
            )
        return runtime.queue

    def _take_pending(self) -> list[Any]:
        with self._lock:
            events = list(self.pending.values())
            self.pending.clear()
            return events

    def _cancel(self, event: Any, record: _Record | None = None) -> None:
        _set_execution(event, ExecutionStatus.CANCELLED, error=_CANCEL_MESSAGE)
        self._finish(event, ExecutionStatus.CANCELLED, record=record)

    def _finish(
        self,
        event: Any,
        status: ExecutionStatus,
        *,
        result: Any = None,
        error: BaseException | None = None,
        record: _Record | None = None,
    ) -> None:
        """Move an event to a terminal state exactly once.

        The future is resolved (and its callbacks run) before ``join()`` can
        see the event as finished.
        """
        with self._lock:
            record = record or self._records.get(event.id)
            if record is None or record.status.is_terminal:
                return
            record.status = status
            if self._records.get(event.id) is record:
                del self._records[event.id]
        self._record_metrics(event, status)
        if status is ExecutionStatus.CANCELLED:
            record.future.cancel()
        elif status is ExecutionStatus.FAILED:
            assert error is not None
            if isinstance(event, Event) and not event.execution.status.is_terminal:
                _set_execution(event, status, error=describe_error(error))
            _resolve(record.future, error=error)
        else:
            _resolve(record.future, result=result)
        if record.accepted:
            with self._lock:
                self._unfinished -= 1
                if self._unfinished == 0:
                    self._all_done.notify_all()

    def _record_metrics(self, event: Any, status: ExecutionStatus) -> None:
        execution = getattr(event, "execution", None)
        if isinstance(execution, Execution):
            self.metrics.record_finish(status.value, latency=execution.duration, attempts=execution.attempts)
        else:
            self.metrics.record_finish(status.value)

    def _check_type(self, event: Any) -> None:
        expected = self.event_type
        if isinstance(expected, str):
            ok = getattr(event, "event_type", None) == expected
        else:
            ok = isinstance(event, expected)
        if not ok:
            name = expected if isinstance(expected, str) else expected.__name__
            raise TypeError(f"this executor runs {name} events, not {type(event).__name__}")


def _set_execution(event: Any, status: ExecutionStatus, *, error: str) -> None:
    """Record a status on the event's execution, where it has one."""
    execution = getattr(event, "execution", None)
    if execution is None:
        return
    try:
        execution.status = status
        execution.error = error
    except AttributeError:  # a read-only foreign execution object
        pass


def _resolve(future: cf.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Complete a future that may still be PENDING (process_event path)."""
    if not future.running() and not future.done() and not future.set_running_or_notify_cancel():
        return
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
