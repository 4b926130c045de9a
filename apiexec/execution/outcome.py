"""How a call's outcome is recorded: its future and its event's execution.

Example:
    >>> import concurrent.futures as cf
    >>> f = cf.Future()
    >>> cancel_future(f)
    >>> f.cancelled(), cf.wait([f], timeout=0).done == {f}
    (True, True)
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any, Final

from apiexec.execution.event import Event, ExecutionStatus

CANCEL_MESSAGE: Final = "cancelled: the executor shut down before the call started"


def cancel_future(future: cf.Future[Any]) -> None:
    """Cancel a future that never ran and notify ``wait``/``as_completed``.

    ``Future.cancel()`` alone leaves the future CANCELLED but unseen by
    :func:`concurrent.futures.wait`; ``set_running_or_notify_cancel`` moves
    it to CANCELLED_AND_NOTIFIED, as ``ThreadPoolExecutor`` does. Safe to
    call more than once, and on a future a caller cancelled.
    """
    future.cancel()
    notify_cancelled(future)


_NOTIFY_LOCK = threading.Lock()


def start_running(future: cf.Future[Any]) -> bool:
    """Move a pending future to RUNNING; False when it was cancelled.

    Safe against a concurrent :func:`cancel_future`: a future already
    notified as cancelled is not notified again (which would raise).
    """
    with _NOTIFY_LOCK:
        if getattr(future, "_state", None) == "CANCELLED_AND_NOTIFIED":
            return False
        return future.set_running_or_notify_cancel()


def notify_cancelled(future: cf.Future[Any]) -> None:
    """Tell ``wait``/``as_completed`` about a cancelled future, once."""
    with _NOTIFY_LOCK:
        # CANCELLED (not yet notified) is only visible as the private state;
        # notifying twice raises and logs CRITICAL inside concurrent.futures.
        if getattr(future, "_state", None) == "CANCELLED":
            future.set_running_or_notify_cancel()


def is_event(obj: Any) -> bool:
    """True for events (ours or look-alikes), False for plain callables."""
    return isinstance(obj, Event) or (hasattr(obj, "invoke") and hasattr(obj, "id"))


def set_execution(event: Any, status: ExecutionStatus | str, *, error: str) -> None:
    """Record a status on the event's execution, where it has one."""
    execution = getattr(event, "execution", None)
    if execution is None:
        return
    try:
        execution.status = ExecutionStatus(status)
        execution.error = error
    except AttributeError:  # a read-only foreign execution object
        pass


def resolve(future: cf.Future[Any], status: ExecutionStatus, result: Any, error: BaseException | None) -> None:
    """Resolve a future unless it already is (a caller may have cancelled it)."""
    if status is not ExecutionStatus.CANCELLED and getattr(future, "_state", None) == "RUNNING":
        # The usual end: nobody can cancel a running future, and its worker alone resolves it.
        # (Asking done() and running() first took the future's lock twice more per call.)
        try:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
            return
        except cf.InvalidStateError:  # resolved after all: the checks below decide
            pass
    if future.done():
        notify_cancelled(future)  # a caller's cancel(): let cf.wait see it
        return
    if status is ExecutionStatus.CANCELLED:
        if future.running():  # admitted, then given up at the last step
            future.set_exception(cf.CancelledError(CANCEL_MESSAGE))
        else:
            cancel_future(future)
        return
    if not future.running() and not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
