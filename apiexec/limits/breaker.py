"""A circuit breaker for the shared limit storage: fail fast while it is down.

Without one, a dead Redis makes every call retry its connection and a frozen
one makes every call wait out its socket timeout: a batch crawls, or hangs
for the timeout times the lines. The breaker counts consecutive failures of
the storage; after :data:`DEFAULT_THRESHOLD` of them, or after a single
timeout (a frozen server costs a full timeout per try), it *opens*: every
call fails at once with one clear :class:`~apiexec.errors.StorageError`
naming the storage and the last failure. After a cool-down it lets exactly
one call through (*half-open*); if that probe succeeds the breaker closes,
otherwise it opens again for twice as long (up to :data:`MAX_COOLDOWN`).

Admission never falls back to granting without the storage: the quota is
shared, and a process that guessed would exceed it.

Example:
    >>> from apiexec.errors import StorageError
    >>> now = [0.0]
    >>> breaker = CircuitBreaker("redis://limits/0", threshold=2, cooldown=1.0, clock=lambda: now[0])
    >>> for _ in range(2):
    ...     breaker.before_call()
    ...     breaker.record_failure(StorageError("connection refused", url="redis://limits/0"))
    >>> breaker.state
    'open'
    >>> breaker.before_call()
    Traceback (most recent call last):
    ...
    apiexec.errors.StorageError: limit storage redis://limits/0 unavailable after 2 failures in a row (last: connection refused); next try in 1s
    >>> now[0] = 1.0
    >>> breaker.before_call(); breaker.record_success(); breaker.state
    'closed'
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from apiexec._checks import check_int, check_positive_number
from apiexec.errors import StorageError

logger = logging.getLogger(__name__)

#: Consecutive failures that open the breaker.
DEFAULT_THRESHOLD: Final = 3

#: Seconds the breaker stays open before one probe (doubled per failed probe).
DEFAULT_COOLDOWN: Final = 1.0

#: Longest cool-down between probes.
MAX_COOLDOWN: Final = 30.0

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class CircuitBreaker:
    """Closed → open (after failures) → half-open (one probe) → closed.

    Thread-safe. The storage backend calls :meth:`before_call` before each
    operation, then :meth:`record_success` or :meth:`record_failure`.

    Args:
        url: The storage, as shown in errors (no password).
        label: What errors name (default ``url``; backends add their key).
        threshold: Consecutive failures that open the breaker.
        cooldown: First wait before a probe, in seconds.
        clock: Monotonic clock (injectable for tests).

    Raises:
        ConfigError: ``threshold`` or ``cooldown`` is invalid.

    Example:
        >>> breaker = CircuitBreaker("sqlite:///limits.db")
        >>> breaker.before_call(); breaker.record_success()
        >>> breaker.state
        'closed'
    """

    def __init__(
        self,
        url: str,
        *,
        label: str | None = None,
        threshold: int = DEFAULT_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_int("threshold", threshold, low=1)
        check_positive_number("cooldown", cooldown)
        self.url = url
        self.label = label or url
        self._threshold = threshold
        self._base_cooldown = float(cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._cooldown = self._base_cooldown
        self._open_until = 0.0
        self._last_error = ""
        self._probing = False

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.url!r}, state={self.state!r}, failures={self._failures})"

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (a probe may go)."""
        with self._lock:
            if self._state == OPEN and self._clock() >= self._open_until:
                return HALF_OPEN
            return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures so far (0 once the storage answered)."""
        return self._failures

    def before_call(self) -> None:
        """Let a call through, or fail it at once while the storage is down.

        Raises:
            StorageError: The breaker is open (or a probe is already out).
        """
        with self._lock:
            if self._state == CLOSED:
                return
            now = self._clock()
            if self._state == OPEN and now >= self._open_until and not self._probing:
                self._state, self._probing = HALF_OPEN, True
                return  # this call is the probe
            wait = max(0.0, self._open_until - now)
            raise StorageError(
                f"limit storage {self.label} unavailable after {self._failures} failure"
                f"{'s' if self._failures != 1 else ''} in a row (last: {self._last_error}); "
                f"next try in {wait:.2g}s",
                url=self.url,
            )

    def record_success(self) -> None:
        """The storage answered: close the breaker."""
        with self._lock:
            if self._state != CLOSED:
                logger.warning("limit storage %s answers again", self.label)
            self._state, self._failures, self._probing = CLOSED, 0, False
            self._cooldown = self._base_cooldown

    def cancel_probe(self) -> None:
        """The call let through ended without an answer either way (interrupted).

        The breaker stays as it was; the next call after it may probe.
        """
        with self._lock:
            if self._state == HALF_OPEN:
                self._state, self._probing = OPEN, False

    def record_failure(self, error: StorageError, *, trip: bool = False) -> None:
        """The storage failed; open the breaker if it is time.

        Args:
            error: The failure (its message is repeated while open).
            trip: Open at once (a timeout: each further try costs as much).
        """
        with self._lock:
            self._failures += 1
            self._last_error = _short(error)
            probe_failed = self._state == HALF_OPEN
            if not (trip or probe_failed or self._failures >= self._threshold):
                return
            if probe_failed:
                self._cooldown = min(self._cooldown * 2, MAX_COOLDOWN)
            self._state, self._probing = OPEN, False
            self._open_until = self._clock() + self._cooldown
            logger.warning(
                "limit storage %s failing (%s); failing calls fast for %.3gs", self.label, self._last_error, self._cooldown
            )


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def breaker_for(storage: str, label: str | None = None) -> CircuitBreaker:
    """The process-wide breaker of one storage, shared by every key on it.

    A Redis server or a SQLite file is down for all its keys at once: with
    limits per model (many backends on one storage), the first backend to
    find it down spares the others their own timeouts.

    Args:
        storage: Identifies the storage (URL without password, or the
            SQLite file's absolute path).
        label: What errors name (default ``storage``).

    Example:
        >>> breaker_for("redis://limits:6379/0") is breaker_for("redis://limits:6379/0")
        True
    """
    with _registry_lock:
        breaker = _registry.get(storage)
        if breaker is None:
            breaker = _registry[storage] = CircuitBreaker(storage, label=label)
        return breaker


def _reset_locks_in_child() -> None:
    """A lock held by another thread at fork() would stay held in the child."""
    global _registry_lock
    _registry_lock = threading.Lock()
    for breaker in _registry.values():
        breaker._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reset_locks_in_child)


def _short(error: StorageError) -> str:
    """The cause part of a storage error's message, on one line."""
    text = str(error).replace("\n", " ")
    return text.rpartition(" failed: ")[2] or text


__all__ = [
    "CLOSED",
    "DEFAULT_COOLDOWN",
    "DEFAULT_THRESHOLD",
    "HALF_OPEN",
    "MAX_COOLDOWN",
    "OPEN",
    "CircuitBreaker",
    "breaker_for",
]
