"""The circuit breaker of a batch run: stop at once when going on is futile.

Some failures are not about one line but about every line after it: the
account was refused service (401/403, an exhausted quota or billing), the
shared limit storage is down, the output disk fails, the budget is spent,
or the host stopped answering (N connection failures in a row). Sending the
rest would only fail the same way, cost money, or lose answers. The breaker
trips once, with one clear message; the run then admits nothing more and
leaves every unsent line for the next run (exit status 3).

Example:
    >>> breaker = Breaker(connection_failures=2)
    >>> breaker.note_connection_failure(), breaker.note_connection_failure()
    (None, 'the host failed to answer 2 calls in a row')
"""

from __future__ import annotations

import threading
from typing import Final

from apiexec.batch.rows import error_json
from apiexec.errors import (
    APIStatusError,
    BudgetExceeded,
    ServiceRefused,
    StorageError,
)

#: Connection failures in a row that trip the breaker by default.
DEFAULT_CONNECTION_FAILURES: Final = 5

#: Error codes/types in a 429 or 402 body that mean "quota or billing", not "slow down".
_REFUSAL_CODES: Final = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "access_terminated"})


def refusal_reason(error: BaseException) -> str | None:
    """Why an error means every later call will be refused too, or None.

    Prefers :class:`~apiexec.errors.ServiceRefused`; also reads the status
    and error JSON of a plain :class:`~apiexec.errors.APIStatusError`.

    Example:
        >>> from apiexec.errors import APIStatusError
        >>> refusal_reason(APIStatusError("no", status_code=401))
        'the account was refused service (HTTP 401)'
        >>> refusal_reason(APIStatusError("slow", status_code=429)) is None
        True
    """
    if isinstance(error, StorageError):
        return f"the limit storage failed: {error}"
    if isinstance(error, BudgetExceeded):
        return f"budget reached: {error}"
    if not isinstance(error, APIStatusError):
        return None
    status = error.status_code
    if isinstance(error, ServiceRefused) or status in (401, 403) or _quota_exhausted(error):
        code = _error_code(error)
        return f"the account was refused service (HTTP {status}{', ' + code if code else ''})"
    return None


def _error_code(error: APIStatusError) -> str | None:
    body = getattr(error, "body", None) or error_json(error.body_excerpt)
    inner = body.get("error") if isinstance(body, dict) else None
    if isinstance(inner, dict):
        for field in ("code", "type"):
            value = inner.get(field)
            if isinstance(value, str) and value:
                return value
    return None


def _quota_exhausted(error: APIStatusError) -> bool:
    if error.status_code not in (402, 429):
        return False
    return error.status_code == 402 or _error_code(error) in _REFUSAL_CODES or any(
        code in error.body_excerpt for code in _REFUSAL_CODES
    )


class Breaker:
    """Trips once; thread-safe.

    Args:
        connection_failures: Connection failures in a row that trip it.
    """

    def __init__(self, connection_failures: int = DEFAULT_CONNECTION_FAILURES) -> None:
        self._limit = connection_failures
        self._lock = threading.Lock()
        self._in_a_row = 0
        #: Why it tripped, or None (set once, before :attr:`tripped`).
        self.reason: str | None = None
        self.tripped = threading.Event()

    def trip(self, reason: str) -> bool:
        """Trip with ``reason``; True if this call tripped it (first reason wins)."""
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
        self.tripped.set()
        return True

    def note_answer(self) -> None:
        """An HTTP answer arrived: the host is up."""
        with self._lock:
            self._in_a_row = 0

    def note_connection_failure(self) -> str | None:
        """A call found no host; the trip reason when that makes N in a row."""
        with self._lock:
            self._in_a_row += 1
            if self._in_a_row < self._limit:
                return None
        return f"the host failed to answer {self._limit} calls in a row"
