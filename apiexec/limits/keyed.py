"""Limits per key (per model, per endpoint path): one limiter for each.

Providers limit each model separately: a 429 for ``gpt-4o`` says nothing
about ``gpt-4o-mini``. :class:`KeyedLimits` is the configuration (limits by
key, ``"*"`` for every key not listed), read from a JSON or TOML file::

    {"gpt-4o": {"requests_per_minute": 500, "tokens_per_minute": 30000},
     "*": {"requests_per_minute": 3500}}

    # or TOML
    ["gpt-4o"]
    requests_per_minute = 500
    tokens_per_minute = 30_000

:class:`KeyedLimiter` holds one :class:`~apiexec.limits.limiter.RateLimiter`
per key, created on first use. A key with no configured limit (none listed,
no ``"*"``) still gets buckets of its own: they learn the model's limits from
its responses' headers and take its 429 pauses, leaving other keys alone.
With shared storage each key's buckets live under ``{key}:{model}``.

Example:
    >>> limits = KeyedLimits.from_mapping({"gpt-4o": {"requests_per_minute": 500},
    ...                                    "*": {"requests_per_minute": 60}})
    >>> limits.for_key("gpt-4o").requests, limits.for_key("other").requests
    (500, 60)
    >>> keyed = KeyedLimiter(limits, open_backend=memory_backends())
    >>> keyed.limiter("gpt-4o") is keyed.limiter("gpt-4o")
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import apiexec.clock as clock
from apiexec._checks import check_positive_number
from apiexec.errors import ConfigError
from apiexec.limits.bucket import Clock, LimitBackend, MemoryBackend
from apiexec.limits.limiter import DEFAULT_MAX_WAIT, RateLimiter
from apiexec.limits.rate_limits import RateLimits

logger = logging.getLogger(__name__)

#: The key of the default limits (and of calls that name no model).
DEFAULT_LIMIT_KEY: Final = "*"

#: Most keys with limiters of their own; later keys share the default's. A
#: bound: model names come from input files, and a file with a million
#: distinct names must not create a million limiters.
MAX_KEYS: Final = 10_000

#: Longest key used as is; longer ones (a hostile model name) are shortened
#: with a digest, so storage keys stay small and distinct.
MAX_KEY_LENGTH: Final = 200

#: The settings a key's entry may hold, and the RateLimits field each sets.
_FIELDS: Final = {
    "requests_per_minute": "requests",
    "tokens_per_minute": "tokens",
    "burst": "burst",
    "token_burst": "token_burst",
}

#: Opens the backend of one key: (key, its limits) -> backend.
BackendOpener = Callable[[str, RateLimits], LimitBackend]


@dataclass(frozen=True)
class KeyedLimits:
    """Rate limits by key, with ``"*"`` as the default.

    Attributes:
        limits: The limits of each key (``"*"``: every key not listed).

    Raises:
        ConfigError: A key is empty or a value is not a :class:`RateLimits`.
    """

    limits: Mapping[str, RateLimits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.limits.items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError("limits", f"keys must be non-empty model names, got {key!r}")
            if not isinstance(value, RateLimits):
                raise ConfigError(f"limits[{key}]", f"must be a RateLimits, got {type(value).__name__}")
        object.__setattr__(self, "limits", dict(self.limits))

    def __repr__(self) -> str:
        return f"KeyedLimits({self.limits!r})"

    def __iter__(self) -> Iterator[str]:
        return iter(self.limits)

    def for_key(self, key: str) -> RateLimits | None:
        """The limits of ``key``: its own, else the default, else None."""
        return self.limits.get(key, self.limits.get(DEFAULT_LIMIT_KEY))

    @classmethod
    def of(cls, limits: Any) -> KeyedLimits:
        """``limits`` as KeyedLimits: itself, RateLimits by key, or settings tables.

        Raises:
            ConfigError: Not a mapping of keys to limits (field ``limits``).

        Example:
            >>> KeyedLimits.of({"m": RateLimits(requests=5)}).for_key("m").requests
            5
        """
        if isinstance(limits, KeyedLimits):
            return limits
        if not isinstance(limits, Mapping):
            raise ConfigError("limits", f"must map keys (models) to RateLimits, got {type(limits).__name__}")
        if all(isinstance(value, RateLimits) for value in limits.values()):
            return cls(dict(limits))
        return cls.from_mapping(limits)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "limits") -> KeyedLimits:
        """Limits from ``{"model": {"requests_per_minute": ..., ...}, "*": {...}}``.

        Each entry takes ``requests_per_minute``, ``tokens_per_minute``,
        ``burst`` and ``token_burst`` (all optional; an empty entry means
        "no limit of my own: learn it from the server").

        Raises:
            ConfigError: Not a table of tables, an unknown setting, or a bad
                value; the message names the key and the setting.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(source, f"must map model names to limits, got {type(data).__name__}")
        parsed: dict[str, RateLimits] = {}
        for key, entry in data.items():
            where = f"{source}[{key}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(where, f"must be a table of limits, got {type(entry).__name__}")
            unknown = sorted(set(entry) - set(_FIELDS))
            if unknown:
                raise ConfigError(f"{where}.{unknown[0]}", f"unknown setting (expected one of {', '.join(_FIELDS)})")
            values: dict[str, Any] = {}
            for name, attribute in _FIELDS.items():
                if name in entry:
                    try:
                        check_positive_number(name, entry[name])
                    except ConfigError as exc:
                        raise ConfigError(f"{where}.{name}", str(exc).split(": ", 1)[1]) from None
                    values[attribute] = entry[name]
            parsed[str(key)] = RateLimits.per_minute(**values)
        return cls(parsed)

    @classmethod
    def load(cls, path: str | Path) -> KeyedLimits:
        """Limits from a JSON or TOML file (by its suffix; else JSON, then TOML).

        Raises:
            ConfigError: The file cannot be read or parsed, or holds bad
                limits (one line naming the file and the place).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("limits", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        suffix = path.suffix.lower()
        if suffix == ".toml":
            data = _parse_toml(text, path)
        elif suffix == ".json":
            data = _parse_json(text, path)
        else:
            try:
                data = _parse_json(text, path)
            except ConfigError:
                data = _parse_toml(text, path)
        return cls.from_mapping(data, source=f"limits {path.name}")


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError("limits", f"{path} is not valid JSON: {exc}") from None


def _parse_toml(text: str, path: Path) -> Any:
    if sys.version_info < (3, 11):  # pragma: no cover - tomllib is in the standard library from 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("limits", f"{path}: TOML needs Python 3.11+ or `pip install tomli`; use JSON") from None
    else:
        import tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("limits", f"{path} is not valid TOML: {exc}") from None


def memory_backends(clock_fn: Clock = time.monotonic) -> BackendOpener:
    """Opens in-process buckets for each key (the default)."""

    def open_backend(key: str, limits: RateLimits) -> LimitBackend:
        return MemoryBackend(limits=limits, clock=clock_fn)

    return open_backend


def storage_backends(url: str, base_key: str) -> BackendOpener:
    """Opens each key's buckets under ``{base_key}:{key}`` in the storage ``url``."""
    from apiexec.limits.storage import backend_from_url

    def open_backend(key: str, limits: RateLimits) -> LimitBackend:
        return backend_from_url(url, key=f"{base_key}:{key}", limits=limits)

    return open_backend


class KeyedLimiter:
    """One :class:`RateLimiter` per key, created on first use; thread-safe.

    Args:
        limits: The configured limits (keys not listed: ``"*"``'s, or none).
        open_backend: Opens the backend of a key (see :func:`memory_backends`,
            :func:`storage_backends`).
        max_wait: Each limiter's longest single wait.
        waiter: Each limiter's waiter (a FakeClock in tests).
        max_keys: Keys with limiters of their own (later ones share ``"*"``'s).

    Raises:
        ConfigError: (from :meth:`limiter`) a key's storage key is invalid.
        StorageError: (from :meth:`limiter`) the storage cannot be reached.
    """

    def __init__(
        self,
        limits: KeyedLimits,
        *,
        open_backend: BackendOpener,
        max_wait: float = DEFAULT_MAX_WAIT,
        waiter: clock.Waiter = clock.REAL,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limits = limits
        self._open = open_backend
        self._max_wait = max_wait
        self._waiter = waiter
        self._max_keys = max_keys
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()
        self._warned = False

    def __repr__(self) -> str:
        return f"KeyedLimiter({self.limits!r}, keys={sorted(self._limiters)})"

    def keys(self) -> list[str]:
        """The keys with a limiter so far."""
        with self._lock:
            return list(self._limiters)

    def limiter(self, key: str) -> RateLimiter:
        """The limiter of ``key`` (created, with its backend, on first use)."""
        if len(key) > MAX_KEY_LENGTH:
            digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            key = f"{key[: MAX_KEY_LENGTH - 17]}#{digest}"
        found = self._limiters.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._limiters.get(key)
            if found is not None:
                return found
            if len(self._limiters) >= self._max_keys and key != DEFAULT_LIMIT_KEY:
                if not self._warned:
                    logger.warning("more than %d keys: later ones share the limits of %r", self._max_keys, DEFAULT_LIMIT_KEY)
                    self._warned = True
                key = DEFAULT_LIMIT_KEY
                found = self._limiters.get(key)
                if found is not None:
                    return found
            limits = self.limits.for_key(key) or RateLimits()
            backend = self._open(key, limits)
            limiter = RateLimiter(backend, max_wait=self._max_wait, waiter=self._waiter)
            self._limiters[key] = limiter
            return limiter

    def wake(self) -> None:
        """Wake every waiter of every key (shutdown)."""
        for limiter in list(self._limiters.values()):
            limiter.wake()

    def after_fork(self) -> None:
        """Fresh limiters over the same backends in a forked child."""
        self._lock = threading.Lock()
        fresh: dict[str, RateLimiter] = {}
        for key, limiter in self._limiters.items():
            reset = getattr(limiter.backend, "after_fork", None)
            if callable(reset):
                reset()
            fresh[key] = RateLimiter(limiter.backend, max_wait=self._max_wait, waiter=self._waiter)
        self._limiters = fresh


__all__ = [
    "DEFAULT_LIMIT_KEY",
    "MAX_KEYS",
    "KeyedLimiter",
    "KeyedLimits",
    "memory_backends",
    "storage_backends",
]
