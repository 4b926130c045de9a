"""How the mock server behaves: :class:`MockServerConfig` and its defaults.

Example:
    >>> config = MockServerConfig(requests_per_minute=600, fail_rate=0.05, seed=1)
    >>> config.request_burst is None  # a minute's worth
    True
    >>> MockServerConfig(fail_rate=2)
    Traceback (most recent call last):
    ...
    apiexec.errors.ConfigError: fail_rate: must be between 0 and 1, got 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from apiexec._checks import check_int, check_positive_number
from apiexec.errors import ConfigError
from apiexec.mock.faults import parse_fault

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_MODEL: Final = "mock-model"
DEFAULT_COMPLETION_TOKENS: Final = 12
DEFAULT_RETRY_AFTER_MS: Final = 1000
EMBEDDING_DIMENSIONS: Final = 8
CHARS_PER_TOKEN: Final = 4
TOKENS_PER_MESSAGE: Final = 3
FAULT_HEADER: Final = "x-mock-fault"


@dataclass(frozen=True, kw_only=True)
class MockServerConfig:
    """How the mock server behaves.

    Attributes:
        host: Interface to listen on.
        port: TCP port; 0 picks a free one.
        latency_ms: Delay added before every answer.
        latency_jitter_ms: Uniform jitter, +/- this much, around ``latency_ms``.
        requests_per_minute: Refill rate of the request bucket; None: no limit.
        request_burst: Capacity of the request bucket; default a minute's worth.
        tokens_per_minute: Refill rate of the token bucket; None: no limit.
        token_burst: Capacity of the token bucket; default a minute's worth.
        fail_rate: Probability that a model request gets a 500 or 503.
        drop_rate: Probability that a model request gets its socket closed.
        seed: Seed of the random faults and jitter, for reproducible runs.
        api_key: When set, every ``/v1`` request must present it (or one of
            ``api_keys``) as ``Authorization: Bearer`` or ``x-api-key``; never
            shown in repr.
        api_keys: More keys that are accepted (never shown in repr).
        limits_per_key: Give each API key its own request and token buckets
            (as each provider account has its own limits); else one shared pair.
        faults: Scripted faults applied to the first model requests, in order
            (``"500"``, ``"429:1500"``, ``"drop"``, ``"slow:200"``, ``"cut:3"``).
        batch_time_scale: Seconds per step of a batch's life (one step to
            validate, one per request, one to finalize); 0 ends a batch at once.
        record_bodies: Keep every raw request body in :attr:`MockServer.stats`.

    Raises:
        ConfigError: (a ``ValueError``) naming the first invalid field.

    Example::

        MockServerConfig(latency_ms=50, requests_per_minute=600, fail_rate=0.05, seed=1)
    """

    host: str = DEFAULT_HOST
    port: int = 0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    requests_per_minute: float | None = None
    request_burst: float | None = None
    tokens_per_minute: float | None = None
    token_burst: float | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int | None = None
    api_key: str | None = field(default=None, repr=False)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    limits_per_key: bool = False
    faults: tuple[str, ...] = ()
    batch_time_scale: float = 0.0
    record_bodies: bool = False

    def __post_init__(self) -> None:
        _require(isinstance(self.host, str) and bool(self.host), "host", "must be a non-empty string")
        check_int("port", self.port, low=0)
        _require(self.port <= 65535, "port", f"must be an int in 0..65535, got {self.port!r}")
        _check_range("latency_ms", self.latency_ms)
        _check_range("latency_jitter_ms", self.latency_jitter_ms)
        _check_limit("requests_per_minute", self.requests_per_minute, "request_burst", self.request_burst)
        _check_limit("tokens_per_minute", self.tokens_per_minute, "token_burst", self.token_burst)
        _check_range("fail_rate", self.fail_rate, maximum=1.0)
        _check_range("drop_rate", self.drop_rate, maximum=1.0)
        _require(self.fail_rate + self.drop_rate <= 1.0, "drop_rate", "fail_rate + drop_rate must not exceed 1")
        _require(self.seed is None or is_int(self.seed), "seed", f"must be an int or None, got {self.seed!r}")
        _require(
            self.api_key is None or (isinstance(self.api_key, str) and bool(self.api_key)),
            "api_key",
            "must be a non-empty string or None",
        )
        _require(
            isinstance(self.api_keys, tuple) and all(isinstance(k, str) and k for k in self.api_keys),
            "api_keys",
            "must be a tuple of non-empty strings",
        )
        _require(isinstance(self.limits_per_key, bool), "limits_per_key", "must be a bool")
        _require(isinstance(self.faults, tuple) and all(isinstance(f, str) for f in self.faults),
                 "faults", "must be a tuple of fault specs")
        for spec in self.faults:
            try:
                parse_fault(spec)
            except ValueError as exc:
                raise ConfigError("faults", str(exc)) from None
        _check_range("batch_time_scale", self.batch_time_scale)
        _require(isinstance(self.record_bodies, bool), "record_bodies", "must be a bool")

    @property
    def accepted_keys(self) -> tuple[str, ...]:
        """Every API key the server accepts; empty when none is required."""
        return ((self.api_key,) if self.api_key else ()) + self.api_keys


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(name, message)


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name: str, value: Any, *, maximum: float = math.inf) -> None:
    _require(_is_number(value), name, f"must be a finite number, got {value!r}")
    _require(0.0 <= value <= maximum, name, f"must be between 0 and {maximum:g}, got {value!r}")


def _check_limit(name: str, rate: float | None, burst_name: str, burst: float | None) -> None:
    if rate is not None:
        check_positive_number(name, rate)
    if burst is not None:
        _require(rate is not None, burst_name, f"needs {name}")
        _require(_is_number(burst) and burst >= 1, burst_name, f"must be a number >= 1 or None, got {burst!r}")
