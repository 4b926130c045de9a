"""The mock server's own rate limiter: the oracle the client's limiter is tested against.

A continuous token bucket for requests and one for tokens, checked and charged
atomically on arrival; a denied request consumes nothing.

Example:
    >>> limiter = RateLimiter(60, 2, None, None, clock=lambda: 0.0)
    >>> [limiter.acquire(1).admitted for _ in range(3)]
    [True, True, False]
    >>> limiter.acquire(1).retry_after_s  # one request per second refills
    1.0
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

_EPSILON: Final = 1e-9  # float slack so a client waiting retry-after-ms is admitted

@dataclass(frozen=True)
class LimitState:
    per_minute: float
    remaining: int
    reset_s: float  # until the bucket is full again


@dataclass(frozen=True)
class RateState:
    requests: LimitState | None = None
    tokens: LimitState | None = None


@dataclass(frozen=True)
class Decision:
    admitted: bool
    state: RateState
    retry_after_s: float = 0.0
    limited_by: str = ""  # "requests" or "tokens" when denied
    too_large: bool = False  # the token cost exceeds the bucket's capacity


class _Bucket:
    """A continuous token bucket; the caller holds the lock.

    Written apart from :class:`apiexec.limits.bucket.TokenBucket` on purpose: the
    mock server is the oracle the client's limiter is tested against, so a
    bug in one must not hide in both.
    """

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.per_minute = per_minute
        self.capacity = capacity
        self._rate = per_minute / 60.0
        self._level = capacity
        self._stamp = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._level = min(self.capacity, self._level + elapsed * self._rate)
        self._stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        missing = amount - self._level
        return 0.0 if missing <= _EPSILON else missing / self._rate

    def take(self, amount: float) -> None:
        self._level -= amount

    def state(self) -> LimitState:
        reset = (self.capacity - self._level) / self._rate
        return LimitState(self.per_minute, max(0, math.floor(self._level + _EPSILON)), max(0.0, reset))


class RateLimiter:
    """Request and token buckets, checked and charged atomically."""

    def __init__(
        self,
        requests_per_minute: float | None,
        request_burst: float | None,
        tokens_per_minute: float | None,
        token_burst: float | None,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        now = clock()
        self._requests = _new_bucket(requests_per_minute, request_burst, now)
        self._tokens = _new_bucket(tokens_per_minute, token_burst, now)

    @property
    def configured(self) -> bool:
        return self._requests is not None or self._tokens is not None

    def acquire(self, tokens: int) -> Decision:
        """Admit one request costing ``tokens``, or deny it without charging."""
        with self._lock:
            self._refill_locked()
            waits = self._waits_locked(tokens)
            if waits:
                limited_by = max(waits, key=lambda name: waits[name])
                too_large = self._tokens is not None and tokens > self._tokens.capacity
                return Decision(False, self._state_locked(), waits[limited_by], limited_by, too_large)
            if self._requests is not None:
                self._requests.take(1)
            if self._tokens is not None:
                self._tokens.take(tokens)
            return Decision(True, self._state_locked())

    def state(self) -> RateState:
        with self._lock:
            self._refill_locked()
            return self._state_locked()

    def _refill_locked(self) -> None:
        now = self._clock()
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)

    def _waits_locked(self, tokens: int) -> dict[str, float]:
        waits = {}
        if self._requests is not None and self._requests.wait_for(1) > 0:
            waits["requests"] = self._requests.wait_for(1)
        if self._tokens is not None and self._tokens.wait_for(tokens) > 0:
            waits["tokens"] = self._tokens.wait_for(tokens)
        return waits

    def _state_locked(self) -> RateState:
        return RateState(
            requests=None if self._requests is None else self._requests.state(),
            tokens=None if self._tokens is None else self._tokens.state(),
        )


def _new_bucket(per_minute: float | None, burst: float | None, now: float) -> _Bucket | None:
    if per_minute is None:
        return None
    return _Bucket(per_minute, per_minute if burst is None else burst, now)


