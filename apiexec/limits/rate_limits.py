"""RateLimits: one frozen value for "how much, per how long, how bursty".

Every layer spells limits the same way, from ``--requests-per-minute`` down
to the SQLite row and the Redis script: a :class:`RateLimits` value. Defaults
live here, once.

**Pacing (the default burst).** A token bucket's capacity is the most it
sends at once. Providers state limits per minute but enforce them over
shorter windows (OpenAI's rate-limit guide: a 60,000 requests/minute limit
may be enforced as 1,000 requests/second; Anthropic describes a token bucket
that replenishes continuously), so a bucket holding a whole minute's quota
gets a storm of 429s in its first second. The default capacity is therefore one second's worth of
the rate (:data:`QUANTUM`) less a :data:`HEADROOM` of 10 %, but never less
than a small floor (:data:`MIN_REQUEST_BURST` requests,
:data:`MIN_TOKEN_BURST` tokens) and never more than the limit itself. The
headroom absorbs network jitter: the server's window starts when the first
call *arrives*, which (connection set-up, TLS) can be well after the client
took it; an exact one-second bucket then overruns by the calls sent in that
delay. Small limits keep the plain semantics "the bucket holds the limit"
(``limit_requests=2`` grants two at once); a large one (12,000/min) never
goes out faster than 180 at once, then 200/s. ``burst=`` sets the capacity
exactly (nginx ``limit_req ... burst=20``: 20).

Example:
    >>> limits = RateLimits.per_minute(requests=12_000, tokens=2_000_000)
    >>> limits
    RateLimits(requests=12000, tokens=2000000, interval=60.0, burst=None, token_burst=None)
    >>> limits.request_capacity, limits.token_capacity
    (180.0, 30000.0)
    >>> RateLimits(requests=2, interval=60.0).request_capacity
    2.0
    >>> RateLimits.per_second(requests=200, burst=20).request_capacity
    20.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from apiexec._checks import check_positive_number
from apiexec.errors import ConfigError

#: The window limits are stated over unless said otherwise (OpenAI RPM/TPM).
DEFAULT_INTERVAL: Final = 60.0

#: The default storage: buckets in this process.
DEFAULT_STORAGE: Final = "memory://"

#: The default key under which a storage keeps one quota's buckets.
DEFAULT_KEY: Final = "default"

#: Providers report the limits in their headers per minute.
SERVER_LIMIT_WINDOW: Final = 60.0

#: The window providers quantise per-minute limits into (seconds): the
#: default bucket never holds more than this much of the rate.
QUANTUM: Final = 1.0

#: Share of one quantum's worth the default bucket holds (see above).
HEADROOM: Final = 0.9

#: Below these, a bucket holds the whole limit (the seed's semantics): so
#: few requests (or tokens) at once cannot overload anyone, and one ordinary
#: call's tokens go at once instead of waiting for a one-second trickle.
MIN_REQUEST_BURST: Final = 10.0
MIN_TOKEN_BURST: Final = 10_000.0


def default_capacity(limit: float, interval: float, floor: float) -> float:
    """The default bucket capacity for ``limit`` per ``interval`` seconds.

    One :data:`QUANTUM`'s worth of the rate less the :data:`HEADROOM`, at
    least ``floor``, at most the limit; never below one unit (a limit below
    1 per interval still lets one call through when the bucket is full).

    Example:
        >>> default_capacity(12_000, 60.0, MIN_REQUEST_BURST)
        180.0
        >>> default_capacity(100, 60.0, MIN_REQUEST_BURST)
        10.0
        >>> default_capacity(0.5, 60.0, MIN_REQUEST_BURST)
        1.0
    """
    per_quantum = limit * QUANTUM * HEADROOM / interval
    return max(1.0, min(float(limit), max(per_quantum, floor)))


#: Sanity bounds: beyond them a value is a typo, and its arithmetic overflows.
MAX_AMOUNT: Final = 1e15
MIN_INTERVAL: Final = 0.001
MAX_INTERVAL: Final = 366 * 86_400.0


def _check_limit(field: str, value: object) -> None:
    if value is None:
        return
    check_positive_number(field, value)
    assert isinstance(value, (int, float))
    if value > MAX_AMOUNT:
        raise ConfigError(field, f"must be at most {MAX_AMOUNT:g}, got {value!r}")


def _check_burst(field: str, value: object) -> None:
    if value is None:
        return
    _check_limit(field, value)
    assert isinstance(value, (int, float))
    if value < 1:
        raise ConfigError(field, f"must be >= 1 (a bucket must hold one call), got {value!r}")


def _check_interval(value: object) -> None:
    check_positive_number("interval", value)
    assert isinstance(value, (int, float))
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ConfigError("interval", f"must be seconds in [{MIN_INTERVAL:g}, {MAX_INTERVAL:g}], got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    """Request and token limits per ``interval``, and their bucket sizes.

    Attributes:
        requests: Requests per ``interval``; None for no request limit.
        tokens: Tokens per ``interval``; None for no token limit.
        interval: Seconds over which each limit refills completely.
        burst: Most requests sent at once (the request bucket's capacity);
            None for the default rule (see the module docstring). Also caps
            a request limit learnt from a server's headers.
        token_burst: Most tokens taken at once; None for the default rule.
            A single call may still need more (up to ``tokens``): it then
            waits for a full bucket and leaves it in debt.

    Raises:
        ConfigError: A value is not a finite number > 0 (bursts: >= 1);
            the message names the field.

    Example:
        >>> RateLimits(requests=0)
        Traceback (most recent call last):
        ...
        apiexec.errors.ConfigError: requests: must be a finite number > 0, got 0
    """

    requests: float | None = None
    tokens: float | None = None
    interval: float = DEFAULT_INTERVAL
    burst: float | None = None
    token_burst: float | None = None

    def __post_init__(self) -> None:
        _check_limit("requests", self.requests)
        _check_limit("tokens", self.tokens)
        _check_interval(self.interval)
        _check_burst("burst", self.burst)
        _check_burst("token_burst", self.token_burst)

    @classmethod
    def per_minute(
        cls,
        *,
        requests: float | None = None,
        tokens: float | None = None,
        burst: float | None = None,
        token_burst: float | None = None,
    ) -> RateLimits:
        """Limits as providers state them: RPM and TPM."""
        return cls(requests=requests, tokens=tokens, interval=DEFAULT_INTERVAL, burst=burst, token_burst=token_burst)

    @classmethod
    def per_second(
        cls,
        *,
        requests: float | None = None,
        tokens: float | None = None,
        burst: float | None = None,
        token_burst: float | None = None,
    ) -> RateLimits:
        """Limits per second (nginx ``limit_req rate=200r/s``)."""
        return cls(requests=requests, tokens=tokens, interval=1.0, burst=burst, token_burst=token_burst)

    @property
    def request_capacity(self) -> float | None:
        """Capacity of the request bucket (None without a request limit)."""
        return self._capacity(self.requests, self.burst, MIN_REQUEST_BURST)

    @property
    def token_capacity(self) -> float | None:
        """Capacity of the token bucket (None without a token limit)."""
        return self._capacity(self.tokens, self.token_burst, MIN_TOKEN_BURST)

    def _capacity(self, limit: float | None, burst: float | None, floor: float) -> float | None:
        if limit is None:
            return None
        if burst is not None:
            return float(burst)
        return default_capacity(limit, self.interval, floor)

    def learnt_capacity(self, limit: float, server_capacity: float, *, tokens: bool) -> float:
        """Capacity of a bucket learnt from a server's per-minute ``limit``.

        The same rule as configured limits: what the server's bucket holds,
        capped by ``burst``/``token_burst`` if set, else by the default rule
        for ``limit`` per :data:`SERVER_LIMIT_WINDOW`.
        """
        burst = self.token_burst if tokens else self.burst
        floor = MIN_TOKEN_BURST if tokens else MIN_REQUEST_BURST
        cap = float(burst) if burst is not None else default_capacity(limit, SERVER_LIMIT_WINDOW, floor)
        return max(1.0, min(server_capacity, cap))


def resolve_limits(
    limits: RateLimits | None,
    *,
    limit_requests: float | None = None,
    limit_tokens: float | None = None,
    interval: float = DEFAULT_INTERVAL,
    burst: float | None = None,
    token_burst: float | None = None,
) -> RateLimits:
    """One :class:`RateLimits` from either spelling a backend accepts.

    Backends take ``limits=RateLimits(...)`` or, as before it existed, the
    loose ``limit_requests``/``limit_tokens``/``interval`` (+ bursts).

    Raises:
        ConfigError: (field ``limits``) both spellings were given, or a
            value is invalid (named).

    Example:
        >>> resolve_limits(None, limit_requests=5, interval=1.0).request_capacity
        5.0
    """
    loose = (limit_requests, limit_tokens, burst, token_burst)
    if limits is None:
        return RateLimits(
            requests=limit_requests, tokens=limit_tokens, interval=interval, burst=burst, token_burst=token_burst
        )
    if not isinstance(limits, RateLimits):
        raise ConfigError("limits", f"must be a RateLimits, got {type(limits).__name__}")
    if any(value is not None for value in loose) or interval != DEFAULT_INTERVAL:
        raise ConfigError("limits", "give limits=RateLimits(...) or limit_requests=/limit_tokens=/interval=, not both")
    return limits


__all__ = [
    "DEFAULT_INTERVAL",
    "HEADROOM",
    "MIN_REQUEST_BURST",
    "MIN_TOKEN_BURST",
    "QUANTUM",
    "SERVER_LIMIT_WINDOW",
    "RateLimits",
    "default_capacity",
    "resolve_limits",
]
