"""Time and waiting, injectable: the one place apiexec reads the clock or blocks.

Every component that waits (the rate limiter for capacity, the queue for
work, a retry for its backoff) takes a :class:`Waiter`. The real one,
:data:`REAL`, reads :func:`time.monotonic` and blocks on the condition or
event it is given, so a notification wakes it at once; nothing polls. Tests
hand in a fake waiter whose clock they move by hand (``tests/helpers.py``
``FakeClock``), so waits are exact and take no real time.

Example:
    >>> import threading
    >>> stop = threading.Event()
    >>> stop.set()
    >>> REAL.sleep(30.0, stop)      # interrupted at once: the stop is set
    True
"""

from __future__ import annotations

import threading
import time
from typing import Final, Protocol


class Waiter(Protocol):
    """Reads a monotonic clock and blocks until woken or a timeout passes."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wait(self, cond: threading.Condition, timeout: float | None) -> bool:
        """Wait on ``cond`` (its lock held) until notified or ``timeout`` s.

        Returns:
            False when the timeout passed, True when woken earlier. Callers
            re-check their predicate either way.
        """
        ...

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep ``seconds``; end early when ``stop`` is set.

        Returns:
            True if ``stop`` was set (the sleep was interrupted).
        """
        ...


class RealWaiter:
    """The waiter of production code: ``time.monotonic`` and real blocking."""

    def now(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def wait(self, cond: threading.Condition, timeout: float | None) -> bool:
        """Block on ``cond`` until notified or ``timeout`` s pass."""
        return cond.wait(timeout)

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Block for ``seconds``, or until ``stop`` is set."""
        if stop is None:
            # Nothing can wake this sleep early (no executor around a lone
            # retry), so a plain timed block is the whole job: not a poll.
            time.sleep(max(0.0, seconds))
            return False
        return stop.wait(max(0.0, seconds))

    def __repr__(self) -> str:
        return "RealWaiter()"


#: The process-wide real waiter.
REAL: Final[Waiter] = RealWaiter()
