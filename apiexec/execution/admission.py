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

    def release(self, event: Any, reserved: int) -> None:
        """Undo an admission: ``event`` was admitted but will not run."""
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

    def release(self, event: Any, reserved: int) -> None:
        """Nothing was taken."""

    def wake(self) -> None:
        """Nobody waits."""

    def after_fork(self) -> None:
        """No locks."""

    def __repr__(self) -> str:
        return "Unlimited()"


class Chain:
    """Several admission policies, asked in order; a call runs when all admit.

    Each policy keeps its own reservation: when a later policy refuses (or
    the call is cancelled after admission), the earlier ones are released,
    so nothing stays taken for a call that never runs. ``admit`` returns
    the first policy's reservation (the tokens the executor reports).

    Args:
        policies: The policies, asked in this order (e.g. a rate limit, then
            a spending cap, then a concurrency limit).

    Example:
        >>> chain = Chain(Unlimited(), Unlimited())
        >>> chain.admit(object(), stop=threading.Event(), deadline=None)
        0
    """

    def __init__(self, *policies: Admission) -> None:
        self.policies = policies
        self.blocking = any(policy.blocking for policy in policies)
        self._taken: dict[int, list[int]] = {}  # id(event) -> each policy's reservation
        self._lock = threading.Lock()

    def admit(self, event: Any, *, stop: threading.Event, deadline: float | None) -> int | None:
        """Admit through every policy, or release what was taken and give up."""
        taken: list[int] = []
        try:
            for policy in self.policies:
                reserved = policy.admit(event, stop=stop, deadline=deadline)
                if reserved is None:
                    self._release_taken(event, taken)
                    return None
                taken.append(reserved)
        except BaseException:
            self._release_taken(event, taken)
            raise
        with self._lock:
            self._taken[id(event)] = taken
        return taken[0] if taken else 0

    def admit_retry(self, stop: threading.Event) -> bool:
        """A retry passes every policy's gate."""
        return all(policy.admit_retry(stop) for policy in self.policies)

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Every policy sees every response."""
        for policy in self.policies:
            policy.observe(status_code, headers)

    def settle(self, event: Any, reserved: int) -> None:
        """Each policy settles its own reservation."""
        for policy, taken in zip(self.policies, self._pop(event)):
            policy.settle(event, taken)

    def release(self, event: Any, reserved: int) -> None:
        """Each policy releases its own reservation."""
        self._release_taken(event, self._pop(event))

    def wake(self) -> None:
        """Wake every policy's waiters."""
        for policy in self.policies:
            policy.wake()

    def after_fork(self) -> None:
        """Fresh locks everywhere in a forked child."""
        self._lock = threading.Lock()
        self._taken = {}
        for policy in self.policies:
            policy.after_fork()

    def _pop(self, event: Any) -> list[int]:
        with self._lock:
            return self._taken.pop(id(event), [])

    def _release_taken(self, event: Any, taken: list[int]) -> None:
        for policy, reserved in zip(self.policies, taken):
            policy.release(event, reserved)

    def __repr__(self) -> str:
        return f"Chain({', '.join(map(repr, self.policies))})"
