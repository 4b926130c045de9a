"""Retry policy for HTTP calls, built on tenacity.

The server's word wins: ``x-should-retry: true``/``false`` decides alone
(as in openai-python), and a ``retry-after`` longer than ``retry_after_cap``
means no retry (the error map marks it; retrying earlier than asked is a sure
second refusal). Otherwise retried: connection errors, timeouts, streams cut
before their first event, and the statuses 408, 409, 429 and 5xx except 501
and 505. Not retried: every other 4xx, 501, 505 (the request itself is
wrong), :class:`~apiexec.errors.ServiceRefused` (401/402/403, quota or
billing 429s), TLS verification failures, bodies over the size cap and the
call's deadline. Full matrix: ``docs/retries.md``.

Waits are exponential with full jitter, capped; when the server said how long
to wait (``retry-after-ms`` / ``retry-after`` > 0) that wait is used instead.
``retry-after: 0`` gets the jittered backoff, not an immediate retry storm.

tenacity (with its tornado and asyncio support, a third of ``import
apiexec``) is imported when the first policy is built: the endpoint builds
it at its first retryable failure, so a run where every call succeeds never
loads it.

Example:
    >>> policy = retry_policy(max_retries=2, sleep=lambda s: None)
    >>> policy(lambda: "ok")
    'ok'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from apiexec.errors import APIConnectionError, APIStatusError, ServiceRefused

if TYPE_CHECKING:
    import tenacity

logger = logging.getLogger(__name__)

RETRY_STATUSES: Final = frozenset({408, 409, 429})
#: 5xx statuses that say the request itself will never work.
NEVER_RETRY_5XX: Final = frozenset({501, 505})


def is_retryable(exc: BaseException) -> bool:
    """True for errors worth another attempt."""
    if isinstance(exc, APIStatusError):
        if getattr(exc, "should_retry", None) is not None:
            return bool(exc.should_retry)
        if isinstance(exc, ServiceRefused):
            return False
        status = exc.status_code
        return status in RETRY_STATUSES or (status >= 500 and status not in NEVER_RETRY_5XX)
    return isinstance(exc, APIConnectionError)


class wait_server_or_backoff:  # noqa: N801 - named as tenacity's wait strategies are
    """Wait what the server asked (capped), else jittered exponential backoff.

    A tenacity wait strategy (any callable of the retry state is one).

    Args:
        base: First backoff (seconds); doubles per attempt.
        maximum: Cap of one backoff.
        retry_after_cap: Longest server-requested wait honoured.
    """

    def __init__(self, base: float, maximum: float, retry_after_cap: float) -> None:
        import tenacity

        self._backoff = tenacity.wait_random_exponential(multiplier=base, max=maximum)
        self._cap = retry_after_cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        server_wait = getattr(exc, "retry_after", None)
        if isinstance(server_wait, (int, float)) and server_wait > 0:
            return float(min(server_wait, self._cap))
        return float(self._backoff(retry_state))


def log_retry(retry_state: tenacity.RetryCallState) -> None:
    """Log a failed attempt and the wait before the next (tenacity's ``before_sleep``)."""
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
    logger.info("attempt %d failed (%s); retrying in %.2fs", retry_state.attempt_number, exc, wait)


def retry_policy(
    *,
    max_retries: int,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    retry_after_cap: float = 60.0,
    sleep: Callable[[float], Any] = time.sleep,
) -> tenacity.Retrying:
    """Build the retry policy; call ``.copy()`` of it per call (thread safety).

    Args:
        max_retries: Retries after the first attempt.
        backoff_base: First backoff in seconds.
        backoff_max: Cap of one backoff.
        retry_after_cap: Longest server-requested wait honoured.
        sleep: How to wait (tests inject a recorder).
    """
    import tenacity  # here, not at import time (see the module's docstring)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_retries + 1),
        wait=wait_server_or_backoff(backoff_base, backoff_max, retry_after_cap),
        retry=tenacity.retry_if_exception(is_retryable),
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )
