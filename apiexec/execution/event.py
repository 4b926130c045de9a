"""Events: units of work with a recorded execution.

An :class:`Event` wraps one callable and its keyword arguments. ``invoke()``
runs it once on the calling thread and records the outcome in
:attr:`Event.execution`; it never raises for a failure of the call itself.

Example:
    >>> ev = Event(lambda x: x * 2, {"x": 21})
    >>> ev.invoke()
    >>> ev.execution.status, ev.execution.result
    (<ExecutionStatus.COMPLETED: 'completed'>, 42)
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import uuid

from apiexec._checks import check_at_most, check_positive_number
from apiexec.call_context import call_context
from apiexec.errors import ConfigError

logger = logging.getLogger(__name__)

#: Longest call deadline accepted (a day): beyond it a deadline is a mistake.
MAX_TIMEOUT = 86_400.0


class ExecutionStatus(str, enum.Enum):
    """Life-cycle of an event: one of the three last states ends it."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED."""
        return self in _TERMINAL


_TERMINAL = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})


class Execution:
    """The recorded outcome of an event.

    Attributes:
        status: Where the event is in its life-cycle.
        result: The call's return value once COMPLETED.
        error: A one-line message once FAILED (or CANCELLED), else None.
        duration: Seconds the call took, once it ran.
        attempts: How many attempts (HTTP requests) the call made.
        exception: The exception behind a FAILED status (not part of repr).
    """

    _FIELDS = ("status", "result", "error", "duration", "attempts", "exception")

    def __init__(
        self,
        status: ExecutionStatus = ExecutionStatus.PENDING,
        result: Any = None,
        error: str | None = None,
        duration: float | None = None,
        attempts: int = 0,
        exception: BaseException | None = None,
    ) -> None:
        # A plain class (not a dataclass): ``import apiexec`` does not pay for one.
        self.status = status
        self.result = result
        self.error = error
        self.duration = duration
        self.attempts = attempts
        self.exception = exception

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as before

    def __repr__(self) -> str:
        return (
            f"Execution(status={self.status.value}, error={self.error!r}, "
            f"duration={self.duration}, attempts={self.attempts})"
        )


def describe_error(exc: BaseException) -> str:
    """Render an exception as a one-line message: ``Type: text``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Event:
    """One unit of work: a callable, its arguments, its execution.

    Args:
        invoke_function: What ``invoke()`` calls.
        invoke_kwargs: Keyword arguments it is called with.
        args: Positional arguments it is called with (before the keywords).
        tokens: Tokens a rate-limited executor reserves for the call
            (``required_tokens``); None for none.
        timeout: Seconds from submission within which the call must finish
            (queueing, rate-limit waits, retries and the response included);
            None for no deadline. A call past it fails with
            :class:`~apiexec.errors.DeadlineExceeded`.

    Raises:
        ConfigError: ``tokens`` or ``timeout`` is invalid.

    Example:
        >>> Event(print, {"sep": ""}).event_type
        'event'
        >>> ev = Event(abs, args=(-3,))
        >>> ev.invoke()
        >>> ev.execution.result
        3
    """

    event_type: ClassVar[str] = "event"

    def __init__(
        self,
        invoke_function: Callable[..., Any] | None = None,
        invoke_kwargs: Mapping[str, Any] | None = None,
        *,
        args: Iterable[Any] = (),
        tokens: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self._id: uuid.UUID | None = None  # made on first use: uuid4 costs a syscall
        self._created_at = time.time()
        self._execution = Execution()
        self._invoke_function = invoke_function
        self._invoke_kwargs = dict(invoke_kwargs or {})
        self._invoke_args = tuple(args)
        self._required_tokens: int | None = None
        if tokens is not None:
            self.required_tokens = tokens
        if timeout is not None:
            check_positive_number("timeout", timeout)
            check_at_most("timeout", timeout, MAX_TIMEOUT)
        #: Seconds from submission the call must finish within, or None.
        self.timeout: float | None = None if timeout is None else float(timeout)
        #: Status of the last HTTP response the call got, if it made one.
        self.response_status: int | None = None
        #: The provider's id of that response, when it sent one.
        self.request_id: str | None = None

    @property
    def id(self) -> uuid.UUID:
        """A random (uuid4) identifier, made the first time it is read."""
        if self._id is None:
            import uuid  # on first use: importing uuid loads platform (~3 ms)

            self._id = uuid.uuid4()
        return self._id

    @property
    def created_at(self) -> float:
        """Creation time, seconds since the epoch."""
        return self._created_at

    @property
    def execution(self) -> Execution:
        """The recorded outcome."""
        return self._execution

    @property
    def event_invoke_function(self) -> Callable[..., Any] | None:
        """The callable ``invoke()`` runs."""
        return self._invoke_function

    @property
    def event_invoke_kwargs(self) -> dict[str, Any]:
        """The keyword arguments it is called with."""
        return self._invoke_kwargs

    @property
    def event_invoke_args(self) -> tuple[Any, ...]:
        """The positional arguments it is called with."""
        return self._invoke_args

    @property
    def required_tokens(self) -> int | None:
        """Tokens a rate-limited executor reserves for this call (None: none)."""
        return self._required_tokens

    @required_tokens.setter
    def required_tokens(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError("required_tokens", f"must be an int >= 0 or None, not {value!r}")
        self._required_tokens = value

    def invoke(self) -> None:
        """Run the call once on this thread and record the outcome.

        Sets ``PROCESSING``, then ``COMPLETED`` with ``result`` or ``FAILED``
        with ``error``; records ``duration`` and ``attempts``. A failure of
        the call is recorded, not raised. ``KeyboardInterrupt`` and
        ``SystemExit`` are recorded as ``CANCELLED`` and re-raised.
        """
        function = self.event_invoke_function
        if function is None:
            raise TypeError(f"{type(self).__name__} has no function to invoke")
        execution = self.execution
        execution.status = ExecutionStatus.PROCESSING
        start = time.perf_counter()
        with call_context() as ctx:
            before = ctx.attempts
            try:
                result = function(*self._invoke_args, **self._invoke_kwargs)
            except Exception as exc:  # the failure is the execution's state
                self._record_failure(exc)
            except BaseException as exc:  # Ctrl-C, exit: record, then let it go
                execution.status = ExecutionStatus.CANCELLED
                execution.error = describe_error(exc)
                raise
            else:
                execution.result = result
                execution.error = None
                execution.status = ExecutionStatus.COMPLETED
            finally:
                execution.duration = time.perf_counter() - start
                execution.attempts = max(ctx.attempts - before, 1)
                self.response_status = ctx.status_code
                self.request_id = ctx.request_id

    def _record_failure(self, exc: Exception) -> None:
        execution = self.execution
        execution.exception = exc
        execution.error = describe_error(exc)
        execution.status = ExecutionStatus.FAILED
        logger.debug("event %s failed: %s", self.id, execution.error)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id}, status={self.execution.status.value})"
