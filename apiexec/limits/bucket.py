"""Continuous token buckets for requests and tokens, taken together.

A :class:`TokenBucket` holds up to ``capacity`` units and refills
continuously at ``capacity / interval`` units per second; it starts full.
Over any window of ``w`` seconds it grants at most
``capacity + capacity * w / interval`` units: no fixed-window 2x bursts.

:class:`MemoryBackend` keeps one bucket for requests and one for tokens in
this process and takes from both **atomically**: a call gets its request and
its tokens together, or nothing. It answers how long to wait instead of
waiting itself; :class:`~apiexec.limits.limiter.RateLimiter` does the waiting. Other
backends (shared across processes) offer the same four methods.

Example:
    >>> clock = iter([0.0, 0.0, 0.5]).__next__
    >>> backend = MemoryBackend(limit_requests=2, limit_tokens=None,
    ...                         interval=1.0, clock=clock)
    >>> backend.acquire(1, 0), backend.acquire(1, 0)
    (0.0, 0.0)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from apiexec.errors import CapacityError

Clock = Callable[[], float]

#: (limit, remaining, seconds until full) as a server reports one dimension.
ServerView = tuple[float | None, float | None, float | None]


@dataclass(frozen=True)
class ServerLimits:
    """What a server reported about the caller's limits, as plain numbers.

    The limits layer never sees HTTP headers: whoever parses a response's
    headers (see :mod:`apiexec.rate_limited`) hands the backends this view.
    Every field is None where the server said nothing. Resets are seconds
    from now until that dimension is fully replenished.

    Example:
        >>> ServerLimits(limit_requests=600, remaining_requests=10).requests
        (600, 10, None)
    """

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None

    @property
    def requests(self) -> ServerView:
        """The request dimension as ``(limit, remaining, reset)``."""
        return (self.limit_requests, self.remaining_requests, self.reset_requests)

    @property
    def tokens(self) -> ServerView:
        """The token dimension as ``(limit, remaining, reset)``."""
        return (self.limit_tokens, self.remaining_tokens, self.reset_tokens)


#: Servers state limits per minute (OpenAI RPM/TPM, Anthropic likewise).
SERVER_LIMIT_WINDOW: Final = 60.0

#: Float slack when comparing a refilled level with an amount.
_EPSILON = 1e-9


@dataclass
class TokenBucket:
    """One continuous bucket. Not thread-safe: its owner holds a lock.

    Attributes:
        capacity: Most units the bucket holds (the limit).
        rate: Units added per second.
        level: Units available now (negative after a usage overrun).
        stamp: Clock time ``level`` was computed at.
    """

    capacity: float
    rate: float
    level: float
    stamp: float

    @classmethod
    def full(cls, limit: float, interval: float, now: float) -> TokenBucket:
        """A full bucket of ``limit`` units refilling over ``interval`` s.

        A limit below 1 (one request every two minutes is ``0.5`` per
        minute) still holds one unit, so that a call can ever be granted; the
        rate stays ``limit / interval``.
        """
        capacity = max(float(limit), 1.0)
        return cls(capacity=capacity, rate=limit / interval, level=capacity, stamp=now)

    def refill(self, now: float) -> None:
        """Add what accrued since ``stamp`` (clock going back adds nothing)."""
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` units are there (0.0 if they are now)."""
        missing = amount - self.level
        if missing <= _EPSILON:
            return 0.0
        return missing / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` units (the caller checked ``wait_for``)."""
        self.level -= amount

    def give(self, amount: float) -> None:
        """Return (positive) or charge (negative) units, capped at capacity."""
        self.level = min(self.capacity, self.level + amount)


class LimitBackend(Protocol):
    """Where the buckets live: this process, a SQLite file, a Redis server."""

    limit_requests: float | None
    limit_tokens: float | None

    def acquire(self, requests: int, tokens: int) -> float:
        """Take both amounts atomically; return 0.0, or seconds to wait.

        Raises:
            CapacityError: An amount exceeds its bucket's capacity (it could
                never be granted).
        """

    def adjust(self, tokens: float) -> None:
        """Give back (positive) or charge (negative) tokens after usage is known."""

    def pause(self, seconds: float) -> None:
        """Grant nothing for the next ``seconds`` (a server said to wait)."""

    def levels(self) -> tuple[float | None, float | None]:
        """Current (requests, tokens) levels; None where there is no limit."""

    def sync(self, info: ServerLimits) -> None:
        """Bring the buckets into line with what a server reported."""


def sync_bucket(
    bucket: TokenBucket | None, learned: bool, view: ServerView, now: float
) -> TokenBucket | None:
    """Align one bucket with a server's ``(limit, remaining, reset)`` view.

    The level never rises above what the server says remains. A *learned*
    bucket (no limit was configured) also takes its rate from the server's
    limit, read per :data:`SERVER_LIMIT_WINDOW`, and its capacity from
    ``remaining + reset * rate`` (the server's bucket size). A configured
    bucket keeps its own rate and capacity.

    Returns:
        The bucket to keep (a new one when a limit was first learned).
    """
    limit, remaining, reset = view
    if remaining is None:
        return bucket
    if bucket is None or learned:
        if limit is None or limit <= 0:
            return bucket
        rate = limit / SERVER_LIMIT_WINDOW
        capacity = min(float(limit), max(1.0, remaining + (reset or 0.0) * rate))
        if bucket is None:
            bucket = TokenBucket(capacity=capacity, rate=rate, level=float(remaining), stamp=now)
        bucket.refill(now)
        bucket.capacity, bucket.rate = capacity, rate
    else:
        bucket.refill(now)
    bucket.level = min(bucket.level, float(remaining))
    return bucket


def take_together(
    wants: tuple[tuple[TokenBucket | None, int], ...], paused_until: float, now: float
) -> float:
    """Take every ``(bucket, amount)`` at ``now``, or nothing.

    Args:
        wants: Each bucket (None: no limit) with the amount wanted from it.
        paused_until: Clock time before which nothing is granted.
        now: The clock time.

    Returns:
        0.0 when everything was taken; else the seconds until it could be.

    Raises:
        CapacityError: An amount exceeds its bucket's capacity (for example
            a limit learnt from headers): it could never be granted.
    """
    wait = max(0.0, paused_until - now)
    for bucket, amount in wants:
        if bucket is not None and amount:
            if amount > bucket.capacity:
                raise CapacityError(amount, bucket.capacity)
            bucket.refill(now)
            wait = max(wait, bucket.wait_for(amount))
    if wait > 0.0:
        return wait
    for bucket, amount in wants:
        if bucket is not None:
            bucket.take(amount)
    return 0.0


class MemoryBackend:
    """Request and token buckets in this process (the default backend).

    Args:
        limit_requests: Requests per ``interval``; None for no request limit.
        limit_tokens: Tokens per ``interval``; None for no token limit.
        interval: Seconds over which each limit refills completely.
        clock: Monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        limit_requests: float | None,
        limit_tokens: float | None,
        interval: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.limit_requests = limit_requests
        self.limit_tokens = limit_tokens
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._requests = TokenBucket.full(limit_requests, interval, now) if limit_requests else None
        self._tokens = TokenBucket.full(limit_tokens, interval, now) if limit_tokens else None
        self._paused_until = -math.inf
        self._learned = (limit_requests is None, limit_tokens is None)

    def acquire(self, requests: int, tokens: int) -> float:
        """Take ``requests`` and ``tokens`` together, or say how long to wait."""
        with self._lock:
            now = self._clock()
            return take_together(
                ((self._requests, requests), (self._tokens, tokens)), self._paused_until, now
            )

    def adjust(self, tokens: float) -> None:
        """Give back (positive) or charge (negative) tokens."""
        if self._tokens is None or not tokens:
            return
        with self._lock:
            self._tokens.refill(self._clock())
            self._tokens.give(tokens)

    def pause(self, seconds: float) -> None:
        """Grant nothing until ``seconds`` from now (never shortens a pause)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def levels(self) -> tuple[float | None, float | None]:
        """Current (requests, tokens) levels."""
        with self._lock:
            now = self._clock()
            out = []
            for bucket in (self._requests, self._tokens):
                if bucket is not None:
                    bucket.refill(now)
                out.append(None if bucket is None else bucket.level)
            return out[0], out[1]

    def sync(self, info: ServerLimits) -> None:
        """Align both buckets with a server's rate-limit headers."""
        with self._lock:
            now = self._clock()
            self._requests = sync_bucket(
                self._requests,
                self._learned[0],
                (info.limit_requests, info.remaining_requests, info.reset_requests),
                now,
            )
            self._tokens = sync_bucket(
                self._tokens,
                self._learned[1],
                (info.limit_tokens, info.remaining_tokens, info.reset_tokens),
                now,
            )
