"""Admission: the one policy an executor asks before, during and after a call.

An :class:`~apiexec.execution.executor.Executor` runs every call through an
``Admission`` object passed in (like ``requests.Session.mount`` or
tenacity's strategies): it asks it to admit the call before it runs (the
rate-limited executor waits there for capacity), to gate each retry, and
tells it of every response and of the call's end. The executor knows
nothing of buckets or headers; the policy knows nothing of queues or
threads.

:class:`Unlimited` admits everything at once and is the default.

Example:
    >>> policy = Unlimited()
    >>> policy.admit(object(), stop=threading.Event(), deadline=None)
    0
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol


class Admission(Protocol):
    """What an executor asks of its admission policy.

    Every method is called from worker threads (``admit`` from one thread at
    a time, in submission order, when :attr:`blocking` is true).
    """

    #: True when ``admit`` may wait: the executor then admits strictly in
    #: submission order (one worker at a time at the head of the queue).
    blocking: bool

    def admit(self, event: Any, *, stop: threading.Event, deadline: float | None) -> int | None:
        """Wait until ``event`` may run.

        Args:
            event: The call about to run.
            stop: Set when the executor shuts down: give up and return None.
            deadline: ``time.monotonic()`` by which the call must be done.

        Returns:
            The units reserved for the call (tokens), handed back to
            :meth:`settle`; None when the wait was given up (shutdown).

        Raises:
            CapacityError: The call can never fit.
            DeadlineExceeded: The deadline passed while waiting.
            StorageError: The shared limit storage failed.
        """
        ...

    def admit_retry(self, stop: threading.Event) -> bool:
        """Block until a retry may be sent; False when it must not be."""
        ...

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Told of every HTTP response of every call."""
        ...

    def settle(self, event: Any, reserved: int) -> None:
        """Told that ``event`` finished; ``reserved`` is what ``admit`` took."""
        ...

    def wake(self) -> None:
        """Wake every thread waiting in ``admit``/``admit_retry`` (shutdown)."""
        ...

    def after_fork(self) -> None:
        """Re-create locks in a forked child (the parent's may be held)."""
        ...


class Unlimited:
    """Admits every call at once; the default policy of :class:`Executor`."""

    blocking = False

    def admit(self, event: Any, *, stop: threading.Event, deadline: float | None) -> int | None:
        """Admit at once (nothing reserved)."""
        return 0

    def admit_retry(self, stop: threading.Event) -> bool:
        """Retries go at once."""
        return True

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Nothing to learn."""

    def settle(self, event: Any, reserved: int) -> None:
        """Nothing to settle."""

    def wake(self) -> None:
        """Nobody waits."""

    def after_fork(self) -> None:
        """No locks."""

    def __repr__(self) -> str:
        return "Unlimited()"
