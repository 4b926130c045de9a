"""Continuous token buckets for requests and tokens, taken together.

A :class:`TokenBucket` refills continuously at ``limit / interval`` units
per second up to its ``capacity`` (the burst: see
:mod:`apiexec.limits.rate_limits` for the default rule); it starts full.
Over any window of ``w`` seconds it grants at most
``capacity + limit * w / interval`` units (plus, once, one call's debt):
no fixed-window 2x bursts. A single take larger than the capacity but within
the limit (one big call) waits for a full bucket and leaves it in debt.

:class:`MemoryBackend` keeps one bucket for requests and one for tokens in
this process and takes from both **atomically**: a call gets its request and
its tokens together, or nothing. It answers how long to wait instead of
waiting itself; :class:`~apiexec.limits.limiter.RateLimiter` does the waiting. Other
backends (shared across processes) offer the same four methods.

Example:
    >>> from apiexec.limits.rate_limits import RateLimits
    >>> clock = iter([0.0, 0.0, 0.0, 0.0]).__next__
    >>> backend = MemoryBackend(limits=RateLimits(requests=2, interval=1.0), clock=clock)
    >>> backend.acquire(1, 0), backend.acquire(1, 0), backend.acquire(1, 0)
    (0.0, 0.0, 0.5)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from apiexec._record import Frozen
from apiexec.errors import CapacityError
from apiexec.limits.rate_limits import DEFAULT_INTERVAL, SERVER_LIMIT_WINDOW, RateLimits, resolve_limits

Clock = Callable[[], float]

#: (limit, remaining, seconds until full) as a server reports one dimension.
ServerView = tuple[float | None, float | None, float | None]


class ServerLimits(Frozen):
    """What a server reported about the caller's limits, as plain numbers.

    The limits layer never sees HTTP headers: whoever parses a response's
    headers (see :mod:`apiexec.rate_limited`) hands the backends this view.
    Every field is None where the server said nothing. Resets are seconds
    from now until that dimension is fully replenished.

    Example:
        >>> ServerLimits(limit_requests=600, remaining_requests=10).requests
        (600, 10, None)
    """

    __slots__ = (
        "limit_requests",
        "remaining_requests",
        "reset_requests",
        "limit_tokens",
        "remaining_tokens",
        "reset_tokens",
    )
    limit_requests: float | None
    remaining_requests: float | None
    reset_requests: float | None
    limit_tokens: float | None
    remaining_tokens: float | None
    reset_tokens: float | None

    def __init__(
        self,
        limit_requests: float | None = None,
        remaining_requests: float | None = None,
        reset_requests: float | None = None,
        limit_tokens: float | None = None,
        remaining_tokens: float | None = None,
        reset_tokens: float | None = None,
    ) -> None:
        self._assign(
            limit_requests=limit_requests,
            remaining_requests=remaining_requests,
            reset_requests=reset_requests,
            limit_tokens=limit_tokens,
            remaining_tokens=remaining_tokens,
            reset_tokens=reset_tokens,
        )

    @property
    def requests(self) -> ServerView:
        """The request dimension as ``(limit, remaining, reset)``."""
        return (self.limit_requests, self.remaining_requests, self.reset_requests)

    @property
    def tokens(self) -> ServerView:
        """The token dimension as ``(limit, remaining, reset)``."""
        return (self.limit_tokens, self.remaining_tokens, self.reset_tokens)


#: Float slack when comparing a refilled level with an amount.
_EPSILON = 1e-9


class TokenBucket:
    """One continuous bucket. Not thread-safe: its owner holds a lock.

    Attributes:
        capacity: Most units the bucket holds (the burst).
        rate: Units added per second.
        level: Units available now (negative after a usage overrun or a
            call larger than the capacity).
        stamp: Clock time ``level`` was computed at.
        ceiling: Largest single take (the limit; at least ``capacity``):
            anything larger can never be granted.

    Example:
        >>> bucket = TokenBucket.full(limit=12_000, interval=60.0, now=0.0, capacity=180)
        >>> bucket.take(180); bucket.wait_for(1)
        0.005
        >>> bucket.wait_for(5000)  # more than the capacity: waits for a full bucket
        0.9
    """

    __slots__ = ("capacity", "rate", "level", "stamp", "ceiling")

    def __init__(self, capacity: float, rate: float, level: float, stamp: float, ceiling: float = 0.0) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = level
        self.stamp = stamp
        self.ceiling = max(ceiling, capacity)

    def __repr__(self) -> str:
        return (
            f"TokenBucket(capacity={self.capacity!r}, rate={self.rate!r}, level={self.level!r}, "
            f"stamp={self.stamp!r}, ceiling={self.ceiling!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not TokenBucket:
            return NotImplemented
        mine = (self.capacity, self.rate, self.level, self.stamp, self.ceiling)
        return mine == (other.capacity, other.rate, other.level, other.stamp, other.ceiling)

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable

    @classmethod
    def full(cls, limit: float, interval: float, now: float, capacity: float | None = None) -> TokenBucket:
        """A full bucket for ``limit`` units per ``interval`` s.

        Args:
            limit: Units per ``interval``; a limit below 1 (one request
                every two minutes is ``0.5`` per minute) still holds one
                unit, so that a call can ever be granted.
            interval: Seconds over which ``limit`` refills.
            now: The clock time.
            capacity: The burst; default: the whole limit.
        """
        ceiling = max(float(limit), 1.0)
        cap = ceiling if capacity is None else max(float(capacity), 1.0)
        return cls(capacity=cap, rate=limit / interval, level=cap, stamp=now, ceiling=ceiling)

    def refill(self, now: float) -> None:
        """Add what accrued since ``stamp`` (clock going back adds nothing)."""
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` units may be taken (0.0: now).

        An amount above the capacity may be taken once the bucket is full.
        """
        missing = min(amount, self.capacity) - self.level
        if missing <= _EPSILON:
            return 0.0
        return missing / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` units (the caller checked ``wait_for``)."""
        self.level -= amount

    def give(self, amount: float) -> None:
        """Return (positive) or charge (negative) units.

        The level stays within ``[-ceiling, capacity]``: a charge for more
        than one whole limit (a server reporting absurd usage) cannot freeze
        the bucket for longer than one interval. Non-finite amounts are
        ignored.
        """
        if math.isfinite(amount):
            self.level = max(-self.ceiling, min(self.capacity, self.level + amount))


class LimitBackend(Protocol):
    """Where the buckets live: this process, a SQLite file, a Redis server."""

    limit_requests: float | None
    limit_tokens: float | None
    limits: RateLimits

    def acquire(self, requests: int, tokens: int) -> float:
        """Take both amounts atomically; return 0.0, or seconds to wait.

        Raises:
            CapacityError: An amount exceeds its bucket's limit (it could
                never be granted).
            StorageError: A shared storage failed (or its circuit is open).
        """

    def adjust(self, tokens: float) -> None:
        """Give back (positive) or charge (negative) tokens after usage is known."""

    def pause(self, seconds: float) -> None:
        """Grant nothing for the next ``seconds`` (a server said to wait)."""

    def levels(self) -> tuple[float | None, float | None]:
        """Current (requests, tokens) levels; None where there is no limit."""

    def sync(self, info: ServerLimits) -> None:
        """Bring the buckets into line with what a server reported."""


def clean_view(view: ServerView) -> ServerView:
    """A server's ``(limit, remaining, reset)`` with nonsense dropped.

    A negative or non-finite remaining (Azure sends ``-1`` for "not
    reported") or a non-positive limit says nothing; a negative reset is 0.

    Example:
        >>> clean_view((600, -1, 2.0)), clean_view((float("nan"), 5, -3))
        ((600, None, 2.0), (None, 5, 0.0))
    """
    limit, remaining, reset = view
    if limit is not None and not (math.isfinite(limit) and limit > 0):
        limit = None
    if remaining is not None and not (math.isfinite(remaining) and remaining >= 0):
        remaining = None
    if reset is not None and not (math.isfinite(reset) and reset >= 0):
        reset = 0.0 if reset == reset and reset < 0 else None
    return limit, remaining, reset


def learnt_shape(
    view: ServerView, limits: RateLimits | None = None, *, tokens: bool = False
) -> tuple[float, float] | None:
    """``(capacity, rate)`` of a bucket learnt from a server's view, or None.

    The rate is the server's limit per :data:`SERVER_LIMIT_WINDOW`; the
    capacity is what the server's bucket holds (``remaining + reset * rate``,
    at most the limit), capped by the same burst rule as configured limits
    (``limits.burst``/``token_burst``, else one second's worth).
    """
    limit, remaining, reset = clean_view(view)
    if remaining is None or limit is None:
        return None
    rate = limit / SERVER_LIMIT_WINDOW
    server_capacity = min(float(limit), max(1.0, remaining + (reset or 0.0) * rate))
    return (limits or RateLimits()).learnt_capacity(limit, server_capacity, tokens=tokens), rate


def sync_bucket(
    bucket: TokenBucket | None,
    learned: bool,
    view: ServerView,
    now: float,
    *,
    limits: RateLimits | None = None,
    tokens: bool = False,
) -> TokenBucket | None:
    """Align one bucket with a server's ``(limit, remaining, reset)`` view.

    The level never rises above what the server says remains. A *learned*
    bucket (no limit was configured) also takes its rate and capacity from
    the server (see :func:`learnt_shape`). A configured bucket keeps its own.

    Returns:
        The bucket to keep (a new one when a limit was first learned).
    """
    view = clean_view(view)
    limit, remaining, reset = view
    if remaining is None:
        return bucket
    if bucket is None or learned:
        shape = learnt_shape(view, limits, tokens=tokens)
        if shape is None:
            return bucket
        capacity, rate = shape
        assert limit is not None
        if bucket is None:
            bucket = TokenBucket(capacity=capacity, rate=rate, level=float(remaining), stamp=now)
        bucket.refill(now)
        bucket.capacity, bucket.rate, bucket.ceiling = capacity, rate, max(float(limit), capacity)
        bucket.level = min(bucket.level, capacity)  # never more at once than the (new) burst
    else:
        bucket.refill(now)
    bucket.level = min(bucket.level, float(remaining))
    return bucket


def take_together(wants: tuple[tuple[TokenBucket | None, int], ...], paused_until: float, now: float) -> float:
    """Take every ``(bucket, amount)`` at ``now``, or nothing.

    Args:
        wants: Each bucket (None: no limit) with the amount wanted from it.
        paused_until: Clock time before which nothing is granted.
        now: The clock time.

    Returns:
        0.0 when everything was taken; else the seconds until it could be.

    Raises:
        CapacityError: An amount exceeds its bucket's limit (for example a
            limit learnt from headers): it could never be granted.
    """
    wait = max(0.0, paused_until - now)
    for bucket, amount in wants:
        if bucket is not None and amount:
            if amount > bucket.ceiling:
                raise CapacityError(amount, bucket.ceiling)
            bucket.refill(now)
            wait = max(wait, bucket.wait_for(amount))
    if wait > 0.0:
        return wait
    for bucket, amount in wants:
        if bucket is not None:
            bucket.take(amount)
    return 0.0


def make_bucket(limit: float | None, capacity: float | None, interval: float, now: float) -> TokenBucket | None:
    """A full configured bucket, or None without a limit."""
    if limit is None:
        return None
    return TokenBucket.full(limit, interval, now, capacity)


class MemoryBackend:
    """Request and token buckets in this process (the default backend).

    Args:
        limit_requests: Requests per ``interval``; None for no request limit.
        limit_tokens: Tokens per ``interval``; None for no token limit.
        interval: Seconds over which each limit refills completely.
        clock: Monotonic clock (injectable: pass a waiter's ``now``).
        burst: Request bucket capacity (default: see
            :mod:`apiexec.limits.rate_limits`).
        token_burst: Token bucket capacity (default likewise).
        limits: All of the above as one :class:`RateLimits` (then give none
            of the loose arguments).

    Raises:
        ConfigError: A limit, the interval or a burst is invalid.

    Example:
        >>> from apiexec.limits.rate_limits import RateLimits
        >>> backend = MemoryBackend(limits=RateLimits.per_minute(requests=12_000))
        >>> backend.levels()
        (180.0, None)
    """

    def __init__(
        self,
        limit_requests: float | None = None,
        limit_tokens: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        clock: Clock = time.monotonic,
        *,
        burst: float | None = None,
        token_burst: float | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.limits = resolve_limits(
            limits,
            limit_requests=limit_requests,
            limit_tokens=limit_tokens,
            interval=interval,
            burst=burst,
            token_burst=token_burst,
        )
        self.limit_requests = self.limits.requests
        self.limit_tokens = self.limits.tokens
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        lim = self.limits
        self._requests = make_bucket(lim.requests, lim.request_capacity, lim.interval, now)
        self._tokens = make_bucket(lim.tokens, lim.token_capacity, lim.interval, now)
        self._paused_until = -math.inf
        self._learned = (lim.requests is None, lim.tokens is None)

    def __repr__(self) -> str:
        return f"MemoryBackend({self.limits!r})"

    def after_fork(self) -> None:
        """A fresh lock in a forked child: a parent thread may have held this one."""
        self._lock = threading.Lock()

    def acquire(self, requests: int, tokens: int) -> float:
        """Take ``requests`` and ``tokens`` together, or say how long to wait."""
        with self._lock:
            now = self._clock()
            return take_together(((self._requests, requests), (self._tokens, tokens)), self._paused_until, now)

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
        """Align both buckets with what a server reported."""
        with self._lock:
            now = self._clock()
            self._requests = sync_bucket(self._requests, self._learned[0], info.requests, now, limits=self.limits)
            self._tokens = sync_bucket(
                self._tokens, self._learned[1], info.tokens, now, limits=self.limits, tokens=True
            )
