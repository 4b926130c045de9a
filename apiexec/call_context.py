"""What one running call tells the layers around it.

An :class:`~apiexec.execution.event.Event` runs ``endpoint.call(request=...,
cache_control=...)``: that signature carries no room for bookkeeping. The
endpoint instead reports into the :class:`CallContext` of the running thread:
how many attempts it made, and every response's status and headers. The
executor installs an observer there to learn rate limits the moment a server
states them, without the endpoint knowing about executors.

Example:
    >>> with call_context() as ctx:
    ...     note_attempt()
    >>> ctx.attempts
    1
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Final

from apiexec.clock import REAL, Waiter
from apiexec.errors import DeadlineExceeded, ExecutorNotRunning

#: Headers in which providers name a request (first found wins).
REQUEST_ID_HEADERS: Final = ("x-request-id", "request-id")

#: Called with (status_code, headers) for every HTTP response of the call.
ResponseObserver = Callable[[int, Mapping[str, str]], None]

#: Blocks until a retry may be sent; False when it must not be (shutdown).
RetryGate = Callable[[], bool]


class CallContext:
    """Bookkeeping for one logical call (all of its attempts).

    Attributes:
        attempts: HTTP attempts made so far.
        observers: Callbacks told of every response.
        status_code: Status of the last response.
        request_id: The provider's id of the last response, when it sent one.
        retry_gate: Called before every retry; blocks until the retry may go
            (the executor's rate limiter), False if it must not.
        stop: Set when the executor shuts down: a backoff wait ends at once.
        deadline: ``time.monotonic()`` by which the whole call must be done
            (all attempts, backoffs and the body), or None for no deadline.
        timeout: The deadline as seconds from submission (for messages).
    """

    # A plain slotted class (not a dataclass): ``import apiexec`` does not pay for one.
    __slots__ = ("attempts", "observers", "status_code", "request_id", "retry_gate", "stop", "deadline", "timeout")

    def __init__(
        self,
        attempts: int = 0,
        observers: list[ResponseObserver] | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_gate: RetryGate | None = None,
        stop: threading.Event | None = None,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self.attempts = attempts
        self.observers: list[ResponseObserver] = [] if observers is None else observers
        self.status_code = status_code
        self.request_id = request_id
        self.retry_gate = retry_gate
        self.stop = stop
        self.deadline = deadline
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"CallContext(attempts={self.attempts}, status_code={self.status_code}, "
            f"request_id={self.request_id!r}, deadline={self.deadline}, timeout={self.timeout})"
        )


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("apiexec_call_context", default=None)


class call_context:  # noqa: N801 - a context manager used like a function
    """Open a call context, or join the one already open on this thread.

    A small class rather than a generator: it is entered twice on every
    call's hot path.

    Args:
        observer: Added to the context's observers for the duration.
        retry_gate: Installed as the context's retry gate for the duration.
        stop: Installed as the context's stop event for the duration.
        deadline: Monotonic time the call must end by (the earlier of this
            and an outer deadline wins).
        timeout: The deadline in seconds from submission, for messages.

    Yields:
        The context the endpoint will report into.
    """

    __slots__ = ("_observer", "_gate", "_stop", "_deadline", "_timeout", "_ctx", "_previous", "_token")

    def __init__(
        self,
        observer: ResponseObserver | None = None,
        retry_gate: RetryGate | None = None,
        stop: threading.Event | None = None,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self._observer = observer
        self._gate = retry_gate
        self._stop = stop
        self._deadline = deadline
        self._timeout = timeout

    def __enter__(self) -> CallContext:
        existing = _current.get()
        ctx = existing if existing is not None else CallContext()
        self._ctx = ctx
        if self._observer is not None:
            ctx.observers.append(self._observer)
        self._previous = ctx.retry_gate, ctx.stop, ctx.deadline, ctx.timeout
        if self._gate is not None:
            ctx.retry_gate = self._gate
        if self._stop is not None:
            ctx.stop = self._stop
        deadline = self._deadline
        if deadline is not None and (ctx.deadline is None or deadline < ctx.deadline):
            ctx.deadline, ctx.timeout = deadline, self._timeout
        self._token = _current.set(ctx) if existing is None else None
        return ctx

    def __exit__(self, *exc_info: object) -> None:
        ctx = self._ctx
        ctx.retry_gate, ctx.stop, ctx.deadline, ctx.timeout = self._previous
        if self._observer is not None:
            ctx.observers.remove(self._observer)
        if self._token is not None:
            _current.reset(self._token)


def note_attempt() -> None:
    """Count one HTTP attempt; before a retry, pass the retry gate.

    A retry goes through the same rate limiter as a first attempt, so that
    retries after a 429 do not storm the server.

    Raises:
        ExecutorNotRunning: The gate refused (the executor is shutting down).
    """
    ctx = _current.get()
    if ctx is None:
        return
    ctx.attempts += 1
    if ctx.attempts > 1 and ctx.retry_gate is not None and not ctx.retry_gate():
        raise ExecutorNotRunning("the executor shut down before a retry could be sent")


def time_left(waiter: Waiter = REAL) -> float | None:
    """Seconds left before the running call's deadline; None without one.

    The HTTP layer caps each attempt's connect/read timeouts and each
    backoff by this, and raises :class:`~apiexec.errors.DeadlineExceeded`
    once it reaches 0 (see :func:`check_deadline`).
    """
    ctx = _current.get()
    if ctx is None or ctx.deadline is None:
        return None
    return ctx.deadline - waiter.now()


def check_deadline(phase: str, waiter: Waiter = REAL) -> None:
    """Raise if the running call's deadline has passed.

    Args:
        phase: Where the call is (see :class:`~apiexec.errors.DeadlineExceeded`).

    Raises:
        DeadlineExceeded: No time is left.
    """
    left = time_left(waiter)
    if left is not None and left <= 0:
        ctx = _current.get()
        raise DeadlineExceeded(phase, ctx.timeout if ctx and ctx.timeout is not None else 0.0)


def wait_before_retry(seconds: float, waiter: Waiter = REAL) -> None:
    """Sleep a retry's backoff; end it at once if the executor shuts down.

    A backoff that would outlast the call's deadline is not slept at all:
    the call fails with :class:`~apiexec.errors.DeadlineExceeded` now.

    Raises:
        ExecutorNotRunning: The executor shut down during the wait.
        DeadlineExceeded: The backoff would end after the call's deadline.
    """
    left = time_left(waiter)
    if left is not None and seconds >= left:
        ctx = _current.get()
        raise DeadlineExceeded("retry", ctx.timeout if ctx and ctx.timeout is not None else 0.0)
    ctx = _current.get()
    stop = ctx.stop if ctx is not None else None
    if waiter.sleep(seconds, stop):
        raise ExecutorNotRunning("the executor shut down while a call waited to retry")


def request_id(headers: Mapping[str, str]) -> str | None:
    """The provider's id of a response (``x-request-id``, Anthropic's ``request-id``), if any.

    requests' headers keep ``lower-case name -> (name, value)`` at hand: a
    lookup there spares the ``KeyError`` each ``in`` on them raises inside
    (two per response, most of them without either header). requests is
    not imported here for it: headers of its type exist only once it is.
    """
    structures = sys.modules.get("requests.structures")
    if structures is not None and isinstance(headers, structures.CaseInsensitiveDict):
        store = headers._store
        found = next((store[h] for h in REQUEST_ID_HEADERS if h in store), None)
        return None if found is None else found[1]
    return next((headers[h] for h in REQUEST_ID_HEADERS if h in headers), None)


def note_response(status_code: int, headers: Mapping[str, str]) -> None:
    """Tell the running call's observers about a response."""
    ctx = _current.get()
    if ctx is None:
        return
    ctx.status_code = status_code
    if isinstance(headers, Mapping):
        ctx.request_id = request_id(headers)
    for observer in list(ctx.observers):
        observer(status_code, headers)
