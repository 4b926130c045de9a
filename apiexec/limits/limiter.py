"""RateLimiter: waits, in order, for capacity from a limit backend.

The backend (:mod:`apiexec.limits.bucket`, or a shared one) answers "granted" or
"wait this long". The limiter turns that into blocking: callers queue up
first-come first-served, and the head sleeps on a condition exactly until its
capacity is due. Anything that changes the picture (usage refunds, a server's
pause, shutdown) notifies the condition, so waiters wake at once instead of
polling. Every wait goes through an injectable :class:`~apiexec.clock.Waiter`
(``waiter=``), so tests drive the limiter on a fake clock, exactly.

Example:
    >>> from apiexec.limits.bucket import MemoryBackend
    >>> from apiexec.limits.rate_limits import RateLimits
    >>> limiter = RateLimiter(MemoryBackend(limits=RateLimits.per_minute(requests=10)))
    >>> limiter.acquire(tokens=0), limiter.waiting
    (True, 0)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final

import apiexec.clock as clock
from apiexec._checks import check_positive_number
from apiexec.errors import CapacityError
from apiexec.limits.bucket import LimitBackend

#: Longest single wait before a waiter re-checks for cancellation.
DEFAULT_MAX_WAIT: Final = 1.0

#: Longest pause a server's ``retry-after`` can impose on every call.
MAX_PAUSE: Final = 60.0


def _never() -> bool:
    return False


class RateLimiter:
    """Thread-safe, FIFO, event-driven front of a :class:`LimitBackend`.

    Args:
        backend: Where the buckets live.
        max_wait: Longest single sleep before re-checking cancellation; the
            sleep is normally cut short by a notification.
        waiter: Blocks on the limiter's condition (a fake one in tests). A
            :class:`~apiexec.limits.bucket.MemoryBackend` on the same fake
            time takes ``clock=waiter.now``.

    Raises:
        ConfigError: ``max_wait`` is not a finite number > 0.

    Example:
        >>> from apiexec.limits.bucket import MemoryBackend
        >>> from apiexec.limits.rate_limits import RateLimits
        >>> limiter = RateLimiter(MemoryBackend(limits=RateLimits(requests=1, interval=3600.0)))
        >>> limiter.acquire(), limiter.try_acquire()
        (True, False)
        >>> limiter.acquire(deadline=limiter.waiter.now() + 0.01)  # due in an hour: gives up
        False
    """

    def __init__(
        self,
        backend: LimitBackend,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        waiter: clock.Waiter = clock.REAL,
    ) -> None:
        check_positive_number("max_wait", max_wait)
        self.backend = backend
        self.waiter = waiter
        self._max_wait = max_wait
        self._cond = threading.Condition()
        self._waiters: deque[object] = deque()

    def __repr__(self) -> str:
        return f"RateLimiter({self.backend!r}, waiting={self.waiting})"

    @property
    def waiting(self) -> int:
        """Callers blocked in :meth:`acquire` right now (their turn kept)."""
        with self._cond:
            return len(self._waiters)

    def check_fits(self, tokens: int) -> None:
        """Raise if ``tokens`` can never fit inside the token limit.

        Raises:
            CapacityError: ``tokens`` exceeds ``limit_tokens``.
        """
        limit = self.backend.limit_tokens
        if limit is not None and tokens > limit:
            raise CapacityError(tokens, limit)

    def try_acquire(self, tokens: int = 0) -> bool:
        """Take one request and ``tokens`` now, or nothing. Never blocks.

        Callers already waiting keep their turn: while anyone waits, this
        returns False.

        Raises:
            CapacityError: ``tokens`` can never fit.
        """
        self.check_fits(tokens)
        with self._cond:
            if self._waiters:
                return False
            return self.backend.acquire(1, tokens) == 0.0

    def acquire(
        self, tokens: int = 0, cancelled: Callable[[], bool] = _never, deadline: float | None = None
    ) -> bool:
        """Block until one request and ``tokens`` are taken, in FIFO order.

        Args:
            tokens: Tokens to take with the request.
            cancelled: Checked on every wake-up; True gives up.
            deadline: The waiter's clock time to give up at (None: never).

        Returns:
            True once taken; False if ``cancelled()`` became true or the
            deadline passed first.

        Raises:
            CapacityError: ``tokens`` can never fit.
        """
        self.check_fits(tokens)
        with self._cond:
            known: float | None = None  # the backend's answer, when already asked
            if not self._waiters and not cancelled():  # nobody ahead: ask at once, without joining the line
                known = self.backend.acquire(1, tokens)
                if known == 0.0:
                    return True
            ticket = object()
            self._waiters.append(ticket)
            try:
                return self._wait_turn(ticket, tokens, cancelled, deadline, known)
            finally:
                self._waiters.remove(ticket)
                if self._waiters:  # the next in line checks again
                    self._cond.notify_all()

    def _wait_turn(
        self, ticket: object, tokens: int, cancelled: Callable[[], bool], deadline: float | None, known: float | None
    ) -> bool:
        """Wait as the line moves; ``known``: the backend's first answer (no second storage round trip)."""
        while not cancelled():
            wait = self._max_wait
            if self._waiters[0] is ticket:
                wait, known = (self.backend.acquire(1, tokens) if known is None else known), None
                if wait == 0.0:
                    return True
            if deadline is not None:
                left = deadline - self.waiter.now()
                if left <= 0:
                    return False
                wait = min(wait, left)
            self.waiter.wait(self._cond, min(wait, self._max_wait))
        return False

    def adjust(self, tokens: float) -> None:
        """Give back (positive) or charge (negative) tokens; wake waiters."""
        self.backend.adjust(tokens)
        self.wake()

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a server asked us to wait).

        The pause is capped at :data:`MAX_PAUSE`: one odd ``retry-after``
        must not freeze every call for a day.
        """
        if seconds > 0:  # NaN is not: it is ignored
            self.backend.pause(min(seconds, MAX_PAUSE))
            self.wake()

    def wake(self) -> None:
        """Wake every waiter to re-check capacity and cancellation.

        Without waiters there is nobody to wake. A caller that joins the
        line right after this check looks at the backend after the change
        that led here, so it misses nothing.
        """
        if self._waiters:
            with self._cond:
                self._cond.notify_all()
