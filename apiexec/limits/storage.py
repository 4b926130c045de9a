"""Where the rate-limit buckets live: this process, a SQLite file, a Redis server.

A provider's quota belongs to the API key, not to the process. Every process
that names the same storage URL and ``key`` shares one request bucket and one
token bucket (and one server-requested pause)::

    memory://                       this process only (the default)
    sqlite:///relative/limits.db    one host: a file every process opens
    sqlite:////abs/path/limits.db   (four slashes: absolute path)
    redis://[:password@]host:port/db  many hosts (``pip install apiexec[redis]``)
    rediss://...                    Redis over TLS

URLs follow the SQLAlchemy convention. Each backend implements
:class:`~apiexec.limits.bucket.LimitBackend` with the same continuous-bucket math as
:class:`~apiexec.limits.bucket.MemoryBackend`. The limits themselves (``limit_*``,
``interval``) are each process's own configuration: every call is checked
with the caller's limits against the shared levels, so processes that
disagree each enforce their own limits on one shared level.

Example:
    >>> backend = backend_from_url("memory://", key="openai-prod",
    ...                            limit_requests=500, limit_tokens=None,
    ...                            interval=60.0)
    >>> backend.acquire(1, 0)
    0.0
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from apiexec.errors import ConfigError
from apiexec.limits.bucket import LimitBackend, MemoryBackend
from apiexec.limits.rate_limits import DEFAULT_INTERVAL, DEFAULT_KEY, DEFAULT_STORAGE, RateLimits, resolve_limits

_SCHEMES: Final = "memory://, sqlite:///path.db or redis://host:port/db"
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL.

    Attributes:
        scheme: ``memory``, ``sqlite`` or ``redis`` (also for rediss/unix).
        url: The URL as given (may hold a password: never show it).
        display: The URL with any password replaced by ``***``.
        path: The SQLite file (relative to the working directory or absolute).
        busy_timeout: SQLite only: seconds to wait for another process's lock.
    """

    scheme: str
    url: str
    display: str
    path: Path | None = None
    busy_timeout: float | None = None


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable storage URL>"
    if not password:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def parse_storage_url(url: str) -> StorageURL:
    """Check and split a storage URL.

    Raises:
        ConfigError: (field ``storage``) the URL is not one of the forms above.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("storage", f"expected a URL such as {_SCHEMES}, got {url!r}")
    display = redact_url(url)
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        if url.partition("://")[2]:
            raise ConfigError("storage", f"memory:// takes nothing after the scheme, got {display!r}")
        return StorageURL("memory", url, display)
    if scheme == "sqlite":
        return _parse_sqlite(url, display)
    if scheme in _REDIS_SCHEMES:
        return StorageURL("redis", url, display)
    raise ConfigError("storage", f"unknown scheme {scheme!r} in {display!r}; use {_SCHEMES}")


def _parse_sqlite(url: str, display: str) -> StorageURL:
    rest = url.partition("://")[2]
    if not rest.startswith("/"):
        raise ConfigError(
            "storage", f"{display!r}: SQLite takes no host; write sqlite:///relative.db or sqlite:////abs/path.db"
        )
    raw_path, _, query = rest[1:].partition("?")
    path = urllib.parse.unquote(raw_path)
    if not path or path == ":memory:":
        raise ConfigError(
            "storage",
            f"{display!r}: a SQLite storage needs a file that every process opens; use memory:// for one process",
        )
    busy_timeout = None
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name != "timeout":
            raise ConfigError("storage", f"{display!r}: unknown option {name!r} (only timeout=SECONDS)")
        try:
            busy_timeout = float(value)
        except ValueError:
            busy_timeout = math.nan
        from apiexec.limits.sqlite import MAX_BUSY_TIMEOUT

        if not (math.isfinite(busy_timeout) and 0 < busy_timeout <= MAX_BUSY_TIMEOUT):
            raise ConfigError(
                "storage", f"{display!r}: timeout must be seconds in (0, {MAX_BUSY_TIMEOUT:g}], got {value!r}"
            )
    return StorageURL("sqlite", url, display, path=Path(path), busy_timeout=busy_timeout)


def backend_from_url(
    url: str,
    *,
    key: str,
    limit_requests: float | None = None,
    limit_tokens: float | None = None,
    interval: float = DEFAULT_INTERVAL,
    burst: float | None = None,
    token_burst: float | None = None,
    limits: RateLimits | None = None,
) -> LimitBackend:
    """The backend that keeps ``key``'s buckets in the storage ``url``.

    The storage is opened (SQLite) or pinged (Redis) here, so a storage that
    is down fails now rather than at the first call.

    Args:
        url: ``memory://``, ``sqlite:///path.db`` or ``redis://host:port/db``.
        key: Name of the shared quota (e.g. ``"openai-prod"``); ignored by
            ``memory://``.
        limit_requests: This process's requests per ``interval``, or None.
        limit_tokens: This process's tokens per ``interval``, or None.
        interval: Seconds over which each limit refills completely.
        burst: Request bucket capacity (see :mod:`apiexec.limits.rate_limits`).
        token_burst: Token bucket capacity.
        limits: All of the above as one :class:`RateLimits` (then give none
            of the loose arguments).

    Raises:
        ConfigError: The URL, the key or a limit is invalid, or redis-py is
            missing.
        StorageError: The storage cannot be reached or opened.
    """
    parsed = parse_storage_url(url)
    if not isinstance(key, str) or not key or key != key.strip():
        raise ConfigError("key", f"must be a non-empty string without surrounding spaces, got {key!r}")
    limits = resolve_limits(
        limits,
        limit_requests=limit_requests,
        limit_tokens=limit_tokens,
        interval=interval,
        burst=burst,
        token_burst=token_burst,
    )
    if parsed.scheme == "memory":
        return MemoryBackend(limits=limits)
    if parsed.scheme == "sqlite":
        from apiexec.limits.sqlite import DEFAULT_BUSY_TIMEOUT, SQLiteBackend

        assert parsed.path is not None
        return SQLiteBackend(
            parsed.path,
            key=key,
            limits=limits,
            busy_timeout=parsed.busy_timeout or DEFAULT_BUSY_TIMEOUT,
            display=parsed.display,
        )
    from apiexec.limits.redis import RedisBackend

    return RedisBackend(parsed.url, key=key, limits=limits)


__all__ = ["DEFAULT_KEY", "DEFAULT_STORAGE", "StorageURL", "backend_from_url", "parse_storage_url", "redact_url"]
