"""Executor: runs events on worker threads, each exactly once.

The call path, top-down::

    submit(event) ─▶ WorkItem(event, future) ─▶ Queue (bounded; blocks when full)
                                                 │ a worker takes it (in order)
                                     admission.admit (rate limits; may wait)
                                                 │
                                   event.invoke() ─▶ future resolved ─▶ forgotten

One :class:`~apiexec.execution.runtime.WorkItem` carries each call from
``submit`` to its future, as in CPython's ``ThreadPoolExecutor``; the future
is the call's state machine. Workers take items from the queue themselves
and ask the **admission policy** (:mod:`apiexec.execution.admission`) before
running them — one worker at a time when the policy may wait, so calls are
admitted strictly in submission order. A finished call is forgotten at once:
a long-lived executor holds only calls not yet finished.

Leaving ``with executor:`` (normally, by an exception or by Ctrl-C) lets the
calls in flight finish, cancels the calls not started (their futures are
seen by ``concurrent.futures.wait``) and sets ``task_queue`` back to None.

Example:
    >>> with Executor() as ex:
    ...     ex.submit(pow, 2, 10).result()
    1024
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import functools
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Final

import apiexec.execution.runtime as rt
from apiexec._checks import check_at_most
from apiexec.call_context import call_context
from apiexec.errors import DeadlineExceeded, EventFailed, ExecutorNotRunning, QueueStopped
from apiexec.execution.admission import Admission, Unlimited
from apiexec.execution.event import Event, Execution, ExecutionStatus, describe_error
from apiexec.execution.mapping import map_results
from apiexec.execution.metrics import Metrics
from apiexec.execution.outcome import CANCEL_MESSAGE, cancel_future, is_event, resolve, set_execution, start_running
from apiexec.execution.runtime import Runtime, WorkItem
from apiexec.execution.seed_front import SeedFront
from apiexec.execution.thread_fit import ThreadFit
from apiexec.execution.work_queue import Queue, QueueConfig

logger = logging.getLogger(__name__)

#: Worker threads (and concurrency slots) when ``concurrency_limit`` is None.
DEFAULT_CONCURRENCY: Final = 32

#: Most worker threads an executor may have: beyond this, threads cost more
#: than they bring (use processes or several hosts).
MAX_CONCURRENCY: Final = 10_000


_FORKED_MESSAGE: Final = "the call was running in the parent process when this process forked"


class ExecutorState(enum.Enum):
    """Where an executor is in its life-cycle (like httpx's ``ClientState``)."""

    IDLE = "idle"  # not started, or shut down: start() (again) to use it
    RUNNING = "running"
    CLOSING = "closing"  # shutdown() under way: no new calls


class Executor(SeedFront):
    """Runs events of one type on worker threads.

    Args:
        event_type: The event class accepted (or an ``event_type`` string).
            Plain callables given to :meth:`submit` are always accepted.
        queue_config: Queue bound, refresh time and concurrency limit.
        admission: The policy asked before each call runs (default
            :class:`~apiexec.execution.admission.Unlimited`).
        fit_threads: Let only as many workers take calls as keep the pace
            (see :mod:`apiexec.execution.thread_fit`): fewer threads, less
            CPU, when the client itself is the bottleneck. Only for calls
            that never wait for one another (each worker may be parked).

    Raises:
        TypeError: ``append``/``submit`` of an event of another type.
        ConfigError: The concurrency limit is absurd (above 10,000).

    Example:
        >>> config = QueueConfig(queue_capacity=100, capacity_refresh_time=1.0,
        ...                      concurrency_limit=8)
        >>> with Executor(Event, config) as ex:
        ...     results = list(ex.map(Event(abs, args=(-i,)) for i in range(3)))
        >>> results
        [0, 1, 2]
    """

    def __init__(
        self,
        event_type: type | str = Event,
        queue_config: QueueConfig | None = None,
        *,
        admission: Admission | None = None,
        fit_threads: bool = False,
    ) -> None:
        self.event_type = event_type
        self.fit_threads = fit_threads
        self.queue_config = queue_config or QueueConfig()
        check_at_most("concurrency_limit", self.max_workers, MAX_CONCURRENCY)
        self.admission: Admission = admission or Unlimited()
        self.metrics = Metrics()
        self._items: dict[int, WorkItem] = {}  # every call not yet finished, by id(event)
        self._pending: dict[int, WorkItem] = {}  # appended, not yet forwarded (in order)
        self._unfinished = 0  # forwarded and not yet finished: what join() waits for
        self._lock = threading.RLock()  # life-cycle and the seed's pending list
        self._count_lock = threading.Lock()  # guards _unfinished (a plain lock: the hot path)
        self._all_done = threading.Condition(self._count_lock)
        self._state = ExecutorState.IDLE
        self._runtime: Runtime | None = None
        self._finalizer: weakref.finalize | None = None
        rt.register(self)

    # -- views ----------------------------------------------------------------

    @property
    def state(self) -> ExecutorState:
        """IDLE, RUNNING or CLOSING."""
        return self._state

    @property
    def events(self) -> dict[Any, Any]:
        """Calls not yet finished (pending, queued or running), by event id."""
        items = list(self._items.values())  # one C-level copy: safe while calls finish
        return {item.event.id: item.event for item in items}

    @property
    def pending(self) -> dict[Any, Any]:
        """Calls appended but not yet forwarded into the queue, by event id."""
        with self._lock:
            return {item.event.id: item.event for item in self._pending.values()}

    @property
    def task_queue(self) -> Queue | None:
        """The queue while the executor runs; None before start and after exit."""
        runtime = self._runtime
        return None if runtime is None else runtime.queue

    @property
    def max_workers(self) -> int:
        """Worker threads: the concurrency limit, or DEFAULT_CONCURRENCY."""
        return self.queue_config.concurrency_limit or DEFAULT_CONCURRENCY

    @property
    def is_all_processed(self) -> bool:
        """True when nothing is pending, queued or running."""
        return not self._pending and self._unfinished == 0

    # -- life-cycle -------------------------------------------------------------

    def start(self) -> None:
        """Open the queue; workers start as calls arrive (idempotent)."""
        with self._lock:
            if self._state is ExecutorState.RUNNING:
                return
            if self._state is ExecutorState.CLOSING:
                raise ExecutorNotRunning("the executor is shutting down; start it again afterwards")
            config = self.queue_config
            queue = Queue(config.queue_capacity, config.capacity_refresh_time, self.max_workers)
            head = threading.Lock() if self.admission.blocking else None
            fit = ThreadFit(self.max_workers) if self.fit_threads else None
            runtime = Runtime(queue, self.max_workers, head, fit)
            runtime.step = functools.partial(rt.worker_step, weakref.ref(self), runtime)
            self._finalizer = weakref.finalize(self, rt.finalize_runtime, runtime)
            self._finalizer.atexit = False  # the runtime module's exit hook handles exit
            self.metrics.gauge("queue_depth", queue.qsize)
            self._runtime = runtime
            self._state = ExecutorState.RUNNING

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = True) -> None:
        """Stop: finish calls in flight, cancel calls not started. Safe twice.

        Args:
            wait: Wait for the calls in flight and join the worker threads.
            cancel_futures: Cancel calls not started (the only behaviour:
                accepted for ``concurrent.futures`` compatibility).
        """
        with self._lock:
            runtime = self._runtime
            if runtime is None or self._state is not ExecutorState.RUNNING:
                return
            self._state = ExecutorState.CLOSING
        not_started = runtime.stop()  # sets the stop event first: waits end at once
        self.admission.wake()
        for item in not_started + self._take_pending():
            self._cancel(item)
        if wait:
            runtime.join()
            self.join()
        with self._lock:
            assert self._finalizer is not None  # set by start() with the runtime
            self._finalizer.detach()
            self._runtime = None
            self._state = ExecutorState.IDLE
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

    def _after_fork(self) -> None:
        """In a forked child: the parent's threads are gone; start afresh.

        Calls the parent had queued or running belong to the parent: their
        futures here are cancelled (never run twice). A running executor
        stays usable: new workers start on the next ``submit``.
        """
        self._lock = threading.RLock()
        self._count_lock = threading.Lock()
        self._all_done = threading.Condition(self._count_lock)
        self.admission.after_fork()
        self.metrics.after_fork()
        items = list(self._items.values())
        self._items, self._pending, self._unfinished = {}, {}, 0
        for item in items:  # queued ones are cancelled; running ones ended with a clear error
            item.finished = True  # no bookkeeping of this process may count it again
            if item.future.running():
                item.future.set_exception(cf.CancelledError(_FORKED_MESSAGE))
            else:
                cancel_future(item.future)
        was_running = self._state is ExecutorState.RUNNING
        self._state, self._runtime = ExecutorState.IDLE, None
        if self._finalizer is not None:
            self._finalizer.detach()
        if was_running:
            self.start()

    # -- running calls ---------------------------------------------------------------

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run an event, or ``fn(*args, **kwargs)`` as ``concurrent.futures`` does.

        Returns:
            A future with the call's result, or its exception.

        Raises:
            ExecutorNotRunning: The executor is not started, or shut down.
            TypeError: An event of another type than ``event_type``.
        """
        if args or kwargs or not is_event(fn):
            if not callable(fn):
                raise TypeError(f"submit needs an event or a callable, not {type(fn).__name__}")
            event = Event(fn, kwargs, args=args)
        else:
            event = fn
            self._check_type(event)
        runtime = self._running()  # a shutdown racing us stops the queue: _enqueue then cancels
        item = self._add(event, pending=False)
        item.accepted = True
        with self._count_lock:
            self._unfinished += 1
        self._enqueue(runtime, item)
        return item.future

    def map(
        self,
        events: Iterable[Any],
        timeout: float | None = None,
        *,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """Submit events and yield their results in input order.

        Events are submitted lazily, a queue's worth ahead of the results
        yielded, so an endless iterable is fine.

        Args:
            events: Events of ``event_type``.
            timeout: Seconds from this call until every result is due.
            return_exceptions: Yield a failed call's exception (and a
                cancelled one's ``CancelledError``) in its place and go on;
                nothing is cancelled. Otherwise the first failure is raised
                here and the calls not yet started are cancelled.

        Raises:
            TimeoutError: A result was not ready in time (the message says
                which and after how long).
        """
        window = self.queue_config.queue_capacity + self.max_workers
        return map_results(self.submit, events, window, timeout, return_exceptions)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every forwarded event is in a terminal state.

        Returns:
            True when all are terminal; False on timeout.
        """
        with self._all_done:
            return self._all_done.wait_for(lambda: self._unfinished == 0, timeout)

    # -- the data path -------------------------------------------------------------

    def _enqueue(self, runtime: Runtime, item: WorkItem) -> None:
        try:
            runtime.queue.enqueue(item)
        except QueueStopped:
            self._cancel(item)
            raise ExecutorNotRunning("the executor shut down while forwarding the call to its queue") from None
        except BaseException:  # Ctrl-C while blocked on a full queue
            self._cancel(item)
            raise
        try:
            runtime.ensure_worker(runtime.step)
        except BaseException as exc:  # no thread could start, or Ctrl-C while one started
            # Queued already: a call that has not started never will (submit raises,
            # so its caller takes it for not sent); one a worker took runs on.
            if item.future.cancel() or not isinstance(exc, Exception):
                raise
            logger.exception("starting a worker thread failed; the workers running take the call")

    def _admit(self, item: WorkItem, stop: threading.Event, *, reraise: bool = False) -> bool:
        """Ask the admission policy; False when the call must not run."""
        if item.future.cancelled():
            self._cancel(item)
            return False
        try:
            if item.deadline is not None and time.monotonic() >= item.deadline:
                raise DeadlineExceeded("queued", item.timeout or 0.0)
            started = time.perf_counter()
            reserved = self.admission.admit(item.event, stop=stop, deadline=item.deadline)
            waited = time.perf_counter() - started
        except Exception as exc:  # CapacityError, DeadlineExceeded, StorageError: fail, never hang
            self._finish(item, ExecutionStatus.FAILED, error=exc)
            if reraise:
                raise
            return False
        if reserved is None:
            self._cancel(item)
            return False
        if not start_running(item.future):  # cancelled while it waited
            self._release(item, reserved)
            self._cancel(item)
            return False
        item.reserved = reserved
        self.metrics.record_start(waited)
        return True

    def _invoke(self, item: WorkItem, stop: threading.Event) -> None:
        event = item.event
        gate = functools.partial(self.admission.admit_retry, stop)
        try:
            with call_context(self._observe, gate, stop, item.deadline, item.timeout):
                value = event.invoke()
        except BaseException as exc:
            self._finish(item, ExecutionStatus.FAILED, error=exc)
            if not isinstance(exc, Exception):
                raise
            return
        try:
            self.admission.settle(event, item.reserved)  # before join() can see the call as done
        except Exception:  # bookkeeping must never lose the call's outcome
            logger.exception("settling limits after event %s failed", event.id)
        execution = getattr(event, "execution", None)
        if isinstance(execution, Execution) and execution.status is ExecutionStatus.FAILED:
            error = execution.exception or EventFailed(execution.error or "the event failed")
            self._finish(item, ExecutionStatus.FAILED, error=error)
        else:
            result = execution.result if isinstance(execution, Execution) else value
            self._finish(item, ExecutionStatus.COMPLETED, result=result)

    def _observe(self, status_code: int, headers: Any) -> None:
        self.metrics.record_response(status_code)
        self.admission.observe(status_code, headers)

    # -- state changes ---------------------------------------------------------------

    def _add(self, event: Any, *, pending: bool = True) -> WorkItem:
        """Record a new call (lock taken here; re-entrant)."""
        timeout = getattr(event, "timeout", None)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
            timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout
        item = WorkItem(event, deadline=deadline, timeout=timeout)
        key = id(event)
        if self._items.setdefault(key, item) is not item:  # atomic: no lock on the hot path
            raise ValueError(f"event {event.id} is already recorded")
        if pending:
            with self._lock:
                self._pending[key] = item
        return item

    def _running(self) -> Runtime:
        runtime = self._runtime
        if runtime is None or self._state is not ExecutorState.RUNNING:
            raise ExecutorNotRunning(
                "the executor is not running: use `with executor:` or call executor.start()"
            )
        return runtime

    def _take_pending(self) -> list[WorkItem]:
        with self._lock:
            items = list(self._pending.values())
            self._pending.clear()
            return items

    def _release(self, item: WorkItem, reserved: int) -> None:
        try:
            self.admission.release(item.event, reserved)
        except Exception:  # bookkeeping must never stop the cancellation
            logger.exception("releasing the admission of event %s failed", item.event.id)

    def _fail(self, item: WorkItem, error: BaseException) -> None:
        self._finish(item, ExecutionStatus.FAILED, error=error)

    def _cancel(self, item: WorkItem) -> None:
        set_execution(item.event, ExecutionStatus.CANCELLED, error=CANCEL_MESSAGE)
        self._finish(item, ExecutionStatus.CANCELLED)

    def _finish(
        self,
        item: WorkItem,
        status: ExecutionStatus,
        *,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Move a call to its terminal state exactly once, then forget it.

        The future is resolved (and its callbacks run) before ``join()`` can
        see the call as finished.
        """
        if item.finished:  # each item has one owner at a time; this is a safety net
            return
        item.finished = True
        event = item.event
        if self._items.get(id(event)) is item:
            self._items.pop(id(event), None)
        resolve(item.future, status, result, error)
        self._record_metrics(event, status, item.reserved)
        unrecorded = isinstance(event, Event) and not event.execution.status.is_terminal
        if status is ExecutionStatus.FAILED and unrecorded:
            set_execution(event, status, error=describe_error(error or EventFailed("failed")))
        if item.accepted:
            with self._count_lock:
                self._unfinished -= 1
                idle = not self._unfinished
            if idle:
                with self._all_done:
                    self._all_done.notify_all()

    def _record_metrics(self, event: Any, status: ExecutionStatus, reserved: int) -> None:
        execution = getattr(event, "execution", None)
        used = getattr(event, "used_tokens", None) if status is ExecutionStatus.COMPLETED else None
        if not isinstance(used, int) or isinstance(used, bool):
            used = None
        if isinstance(execution, Execution):
            self.metrics.record_finish(
                status.value, latency=execution.duration, attempts=execution.attempts, reserved=reserved, used=used
            )
        else:
            self.metrics.record_finish(status.value, reserved=reserved, used=used)

    def _check_type(self, event: Any) -> None:
        expected = self.event_type
        if isinstance(expected, str):
            ok = getattr(event, "event_type", None) == expected
        else:
            ok = isinstance(event, expected)
        if not ok:
            name = expected if isinstance(expected, str) else expected.__name__
            raise TypeError(f"this executor runs {name} events, not {type(event).__name__}")
