"""A spending budget on a Redis server, shared by processes on many hosts.

Needs redis-py: ``pip install apiexec[redis]``.

One hash per key (``apiexec:budget:<key>``) holds ``spent`` and
``reserved`` in whole nano-dollars. Reserving is one Lua script, run
atomically on the server: it checks ``spent + reserved + amount <= cap``
and takes the amount, or takes nothing. Settling is another (``reserved``
never goes below 0). The hash has no expiry: a budget is a total that
persists until :meth:`RedisBudget.reset`. Commands share the short timeouts
and the circuit breaker of :mod:`apiexec.limits.redis`, so a server that is
down fails calls at once with a :class:`~apiexec.errors.StorageError`.

Example:
    >>> budget = RedisBudget("redis://localhost:6379/0", key="team-a")  # doctest: +SKIP
    >>> budget.reserve(1_000, cap=5_000).granted                          # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from apiexec.errors import ConfigError, StorageError
from apiexec.limits.breaker import CircuitBreaker, breaker_for
from apiexec.limits.budget import BudgetView, Grant, _check_amount
from apiexec.limits.redis import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, _import_redis, _password_of
from apiexec.limits.storage import redact_url

#: Prefix of every budget key apiexec writes.
KEY_PREFIX: Final = "apiexec:budget:"

_T = TypeVar("_T")

# KEYS[1] = the hash; ARGV = amount, cap. Returns {granted, spent, reserved}.
_RESERVE: Final = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved')) or 0
local amount, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
if spent + reserved + amount > cap then return {0, spent, reserved} end
reserved = reserved + amount
redis.call('HSET', KEYS[1], 'spent', spent, 'reserved', reserved)
return {1, spent, reserved}
"""

# ARGV = reservation given back, amount spent.
_SETTLE: Final = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved')) or 0
reserved = math.max(reserved - tonumber(ARGV[1]), 0)
redis.call('HSET', KEYS[1], 'spent', spent + tonumber(ARGV[2]), 'reserved', reserved)
return 0
"""


class RedisBudget:
    """A budget hash on a Redis server, shared by key. Thread- and fork-safe.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or ``unix://``.
        key: Name of the shared budget.
        client: A ready redis-py client instead of ``url`` (Cluster, Sentinel).
        breaker: The circuit breaker (default: the server's, shared with its rate limits).

    Raises:
        ConfigError: redis-py is missing or the URL is malformed.
        StorageError: The server cannot be reached (named without its password).
    """

    def __init__(self, url: str | None = None, *, key: str, client: Any = None,
                 breaker: CircuitBreaker | None = None) -> None:
        if (url is None) == (client is None):
            raise ConfigError("storage", "give a redis:// URL or a client, not both or neither")
        redis = _import_redis()
        self.key = key
        self.redis_key = KEY_PREFIX + key
        self.url = redact_url(url) if url is not None else f"redis client {type(client).__name__}"
        self.breaker = breaker or (breaker_for(self.url) if url is not None else CircuitBreaker(self.url))
        self._password = _password_of(url)
        self._error_type: type[Exception] = redis.RedisError
        self._timeout_type: type[Exception] = redis.TimeoutError
        if client is None:
            try:
                client = redis.Redis.from_url(
                    url, socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT, socket_timeout=DEFAULT_SOCKET_TIMEOUT
                )
            except ValueError as exc:
                raise ConfigError("storage", f"{self.url!r}: {self._scrub(str(exc))}") from None
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self.view()  # a server that is down or refuses us fails at start

    def __repr__(self) -> str:
        return f"RedisBudget({self.url!r}, key={self.key!r})"

    def reserve(self, amount: int, cap: int) -> Grant:
        """Reserve ``amount`` if ``spent + reserved + amount <= cap``, atomically on the server."""
        _check_amount("amount", amount)
        granted, spent, reserved = self._call(lambda: self._reserve(keys=[self.redis_key], args=[amount, cap]))
        return Grant(bool(granted), BudgetView(int(spent), int(reserved)))

    def settle(self, reserved: int, spent: int) -> None:
        """Give ``reserved`` back and charge ``spent``, atomically on the server."""
        _check_amount("reserved", reserved)
        _check_amount("spent", spent)
        if reserved or spent:
            self._call(lambda: self._settle(keys=[self.redis_key], args=[reserved, spent]))

    def release(self, reserved: int) -> None:
        """Give a reservation back."""
        self.settle(reserved, 0)

    def view(self) -> BudgetView:
        """The current totals."""
        spent, reserved = self._call(lambda: self._client.hmget(self.redis_key, "spent", "reserved"))
        return BudgetView(int(spent or 0), int(reserved or 0))

    def reset(self) -> None:
        """Forget what was spent and reserved under this key."""
        self._call(lambda: self._client.delete(self.redis_key))

    def close(self) -> None:
        """Close the connections (safe twice)."""
        self._client.close()

    def after_fork(self) -> None:
        """redis-py's pool re-connects in a forked child by itself."""

    def _call(self, operation: Callable[[], _T]) -> _T:
        self.breaker.before_call()
        try:
            result = operation()
        except self._error_type as exc:
            message = self._scrub(str(exc)) or type(exc).__name__
            error = StorageError(f"budget storage {self.url} (key {self.key!r}) failed: {message}", url=self.url)
            self.breaker.record_failure(error, trip=isinstance(exc, self._timeout_type))
            raise error from exc
        except BaseException:
            self.breaker.cancel_probe()
            raise
        self.breaker.record_success()
        return result

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text


__all__ = ["KEY_PREFIX", "RedisBudget"]
