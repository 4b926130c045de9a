"""What a finished call means for the run: its row, and whether to stop.

:func:`classify` maps a call's future to a :class:`Classified`: the
:class:`~apiexec.batch.rows.Outcome` to write (None when the call was never
sent: no row, the next run sends it), a reason to trip the circuit breaker,
and whether it was a connection failure (N in a row trip it too).

Example:
    >>> import concurrent.futures as cf
    >>> from apiexec.errors import APIConnectionError
    >>> future = cf.Future()
    >>> future.set_exception(APIConnectionError("http://h/v1/chat/completions: connection failed"))
    >>> result = classify(None, future)
    >>> result.outcome.code, result.connection_failure
    ('connection_error', True)
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from apiexec.batch.breaker import refusal_reason
from apiexec.batch.rows import Outcome, error_json, salvage_error
from apiexec.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APIStreamIncomplete,
    APITimeoutError,
    BudgetExceeded,
    CapacityError,
    DeadlineExceeded,
    ExecutorNotRunning,
    QueueStopped,
    StorageError,
)


class NotSent(Exception):
    """A call reached a worker after the run stopped admitting: it was not sent."""


@dataclass(frozen=True)
class Classified:
    """A call's meaning for the run.

    Attributes:
        outcome: The row's content, or None if the call was never sent.
        trip: Why the circuit breaker must trip, or None.
        connection_failure: The host did not answer at all.
    """

    outcome: Outcome | None
    trip: str | None = None
    connection_failure: bool = False


#: Errors meaning "this call never went out": no row, the next run sends it.
_UNSENT = (NotSent, ExecutorNotRunning, QueueStopped, StorageError, BudgetExceeded)


def classify(call: Any, future: cf.Future[Any]) -> Classified:
    """Map a finished call (``call`` may be None when unknown) to its :class:`Classified`."""
    try:
        error = future.exception(timeout=0)  # (a done-callback's future: done; not re-raised here)
    except cf.CancelledError:  # cancelled (an exception *set* as CancelledError is returned, not raised)
        return Classified(None)
    if error is None:
        status = getattr(call, "response_status", None) or 200
        body = future.result(timeout=0)
        return Classified(Outcome(status_code=status, request_id=getattr(call, "request_id", None), body=body))
    if isinstance(error, _UNSENT):
        return Classified(None, refusal_reason(error))
    if isinstance(error, APIStatusError):
        return Classified(_http_failure(error), refusal_reason(error))
    return Classified(_no_answer(error, call), connection_failure=_is_connection_failure(error))


def _http_failure(error: APIStatusError) -> Outcome:
    body = getattr(error, "body", None)  # the whole error JSON, where the HTTP layer keeps it
    if not isinstance(body, (dict, list)):
        body = error_json(error.body_excerpt) or salvage_error(error.body_excerpt)
    return Outcome(
        status_code=error.status_code, request_id=error.request_id, body=body if isinstance(body, dict) else None,
        message=str(error),
    )


def _no_answer(error: BaseException, call: Any) -> Outcome:
    if isinstance(error, DeadlineExceeded):
        never_sent = getattr(call, "response_status", None) is None and error.phase in ("queued", "admission")
        return Outcome(code="deadline_exceeded", message=str(error), expired=never_sent)
    if isinstance(error, APITimeoutError):
        return Outcome(code="timeout", message=str(error))
    if isinstance(error, APIStreamIncomplete):
        return Outcome(code="stream_incomplete", message=str(error))
    if isinstance(error, APIConnectionError):
        return Outcome(code="connection_error", message=str(error))
    if isinstance(error, CapacityError):
        return Outcome(code="exceeds_token_limit", message=str(error))
    if isinstance(error, APIError):  # an answer that is not JSON, a TLS failure...
        return Outcome(code="api_error", message=str(error))
    return Outcome(code=type(error).__name__, message=str(error) or type(error).__name__)


#: Transport errors (anywhere in the cause chain) meaning "no connection could be made".
_CONNECT_FAILURES: Final = frozenset({"ConnectTimeout", "ConnectTimeoutError", "NewConnectionError"})


def _is_connection_failure(error: BaseException) -> bool:
    """The host could not be reached at all (refused, unreachable, connect timeout).

    A read timeout or a cut stream means the host answered, slowly or partly:
    that is not "down", so it does not count towards the breaker.
    """
    if isinstance(error, DeadlineExceeded):
        return error.phase == "connect"
    if not isinstance(error, APIConnectionError) or isinstance(error, APIStreamIncomplete):
        return False
    if not isinstance(error, APITimeoutError):
        return True
    return any(type(cause).__name__ in _CONNECT_FAILURES for cause in _causes(error))


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
