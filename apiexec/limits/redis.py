"""Rate-limit buckets on a Redis server, shared by processes on many hosts.

Needs redis-py: ``pip install apiexec[redis]``.

One hash per key (``apiexec:limits:<key>``) holds a few fields: each
bucket's level and time stamp (``rl``/``rs``, ``tl``/``ts``), the capacity
and rate a server taught (``rc``/``rr``, ``tc``/``tr``, only written by
processes with no limit of their own) and the end of a server-requested
pause (``pu``). Every operation is one Lua script, run atomically on the
server with the server's clock (``TIME``): the same continuous-bucket math as
:class:`~apiexec.limits.bucket.TokenBucket`, taking request and token capacity
together or not at all. Each write sets ``PEXPIRE`` to the time after which
the buckets would be full (and any pause over) anyway, so idle keys vanish.
Every number the scripts use (interval, limits, bucket capacities, the
window servers state limits in) comes from :class:`RateLimits` as an
argument: the scripts hold no defaults of their own.

Every command has a short timeout (connect and read, :data:`DEFAULT_SOCKET_TIMEOUT`;
``?socket_timeout=`` in the URL overrides it), and a circuit breaker
(:mod:`apiexec.limits.breaker`) fails calls at once while the server is
down or frozen, probing it again after a cool-down: a dead Redis costs a
few fast failures, a frozen one a single timeout, not one per call.

Every script touches one key, so it runs unchanged on Redis Cluster (the key
decides the slot). For Cluster or Sentinel, build the client yourself and
pass it (see :class:`RedisBackend`).

Example:
    >>> backend = RedisBackend("redis://localhost:6379/0", key="openai-prod",
    ...                        limit_requests=500, limit_tokens=200_000,
    ...                        interval=60.0)                 # doctest: +SKIP
    >>> backend.acquire(1, 1200)                               # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final, TypeVar

from apiexec.errors import CapacityError, ConfigError, StorageError
from apiexec.limits.breaker import CircuitBreaker, breaker_for
from apiexec.limits.bucket import ServerLimits, clean_view, learnt_shape
from apiexec.limits.rate_limits import DEFAULT_INTERVAL, SERVER_LIMIT_WINDOW, RateLimits, resolve_limits
from apiexec.limits.storage import redact_url

logger = logging.getLogger(__name__)

#: Prefix of every key apiexec writes.
KEY_PREFIX: Final = "apiexec:limits:"

#: Seconds to connect, and to wait for an answer, before failing. Every
#: script runs in well under a millisecond on the server: a second of
#: silence means a frozen or unreachable server, not a slow answer.
DEFAULT_CONNECT_TIMEOUT: Final = 1.0
DEFAULT_SOCKET_TIMEOUT: Final = 1.0

#: Retries of a broken connection (redis-py's own) before a call fails.
DEFAULT_RETRIES: Final = 1

#: An idle key lives this long after its buckets would be full again.
EXPIRY_MARGIN: Final = 1.0

_T = TypeVar("_T")

# Shared by every script: read the hash, rebuild this process's buckets.
# ARGV[1..6] = interval, limit_requests, limit_tokens, request capacity,
# token capacity ("" for none), the window servers state limits in.
_PRELUDE: Final = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local capacities = {tonumber(ARGV[4]), tonumber(ARGV[5])}
local window = tonumber(ARGV[6])
local prefixes = {'r', 't'}
local EPSILON = 1e-9
local MARGIN = @MARGIN@

local function fmt(x) return string.format('%.17g', x) end

local clamped = false  -- the clock went back: store the clamped stamps

local function load(i)
  local p = prefixes[i]
  local f = redis.call('HMGET', key, p .. 'l', p .. 's', p .. 'c', p .. 'r')
  local level, stamp = tonumber(f[1]), tonumber(f[2])
  if stamp and stamp > now then clamped = true end
  local limit = limits[i]
  if limit then
    local cap = math.max(capacities[i], 1)  -- see TokenBucket.full
    local ceiling = math.max(limit, cap, 1)
    local b = {cap = cap, ceiling = ceiling, rate = limit / interval, level = cap, stamp = now, learned = false}
    if level and stamp then
      b.level, b.stamp = math.min(level, cap), math.min(stamp, now)
    end
    return b
  end
  local cap, rate = tonumber(f[3]), tonumber(f[4])
  if not (level and stamp and cap and rate and cap > 0 and rate > 0) then return nil end
  return {cap = cap, ceiling = math.max(rate * window, cap), rate = rate,
          level = math.min(level, cap), stamp = math.min(stamp, now), learned = true}
end

local function refill(b)
  if now > b.stamp then
    b.level = math.min(b.cap, b.level + (now - b.stamp) * b.rate)
    b.stamp = now
  end
end

local function wait_for(b, amount)
  local missing = math.min(amount, b.cap) - b.level  -- more than cap: wait for a full bucket
  if missing <= EPSILON then return 0 end
  return missing / b.rate
end

local buckets = {load(1), load(2)}
local paused = tonumber(redis.call('HGET', key, 'pu')) or 0

local function save()
  local ttl = math.max(0, paused - now)
  for i = 1, 2 do
    local b, p = buckets[i], prefixes[i]
    if b then
      redis.call('HSET', key, p .. 'l', fmt(b.level), p .. 's', fmt(b.stamp))
      if b.learned then
        redis.call('HSET', key, p .. 'c', fmt(b.cap), p .. 'r', fmt(b.rate))
      end
      ttl = math.max(ttl, (b.cap - b.level) / b.rate)
    end
  end
  if paused > now then redis.call('HSET', key, 'pu', fmt(paused)) end
  if redis.call('EXISTS', key) == 1 then
    redis.call('PEXPIRE', key, math.ceil((ttl + MARGIN) * 1000))
  end
end
""".replace("@MARGIN@", repr(EXPIRY_MARGIN))

# ARGV[7], ARGV[8] = requests, tokens. Returns "0" (taken) or the wait.
_ACQUIRE: Final = """
local amounts = {tonumber(ARGV[7]), tonumber(ARGV[8])}
local wait = math.max(0, paused - now)
for i = 1, 2 do
  local b = buckets[i]
  if b and amounts[i] > b.ceiling then
    return 'cap:' .. fmt(amounts[i]) .. ':' .. fmt(b.ceiling)  -- can never be granted
  end
  if b and amounts[i] > 0 then
    refill(b)
    wait = math.max(wait, wait_for(b, amounts[i]))
  end
end
if wait > 0 then
  if clamped then save() end
  return fmt(wait)
end
for i = 1, 2 do
  if buckets[i] then buckets[i].level = buckets[i].level - amounts[i] end
end
save()
return '0'
"""

# ARGV[7] = tokens to give back (negative: to charge).
_ADJUST: Final = """
local b = buckets[2]
if b then
  refill(b)
  b.level = math.max(-b.ceiling, math.min(b.cap, b.level + tonumber(ARGV[7])))  -- see TokenBucket.give
  save()
end
return 0
"""

# ARGV[7] = seconds.
_PAUSE: Final = """
paused = math.max(paused, now + tonumber(ARGV[7]))
save()
return 0
"""

_LEVELS: Final = """
local out = {}
for i = 1, 2 do
  local b = buckets[i]
  if b then refill(b); out[i] = fmt(b.level) else out[i] = false end
end
return out
"""

# ARGV[7..12] = remaining, learnt capacity, learnt rate of requests then
# tokens ("" = unknown), the shape computed by apiexec.limits.bucket.learnt_shape.
# The same rules as apiexec.limits.bucket.sync_bucket.
_SYNC: Final = """
local function sync(i)
  local base = 7 + (i - 1) * 3
  local remaining, cap, rate = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local b = buckets[i]
  if remaining == nil then return end
  if b == nil or limits[i] == nil then
    if cap == nil or rate == nil then return end
    if b == nil then b = {cap = cap, rate = rate, level = remaining, stamp = now} end
    refill(b)
    b.cap, b.rate, b.learned = cap, rate, true
    b.ceiling = math.max(rate * window, cap)
  else
    refill(b)
  end
  b.level = math.min(b.level, remaining, b.cap)
  buckets[i] = b
end
sync(1)
sync(2)
save()
return 0
"""


def _import_redis() -> ModuleType:
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(
            "storage", "a redis:// storage needs redis-py: pip install apiexec[redis]"
        ) from exc
    return redis


def _password_of(url: str | None) -> str | None:
    try:
        return urllib.parse.urlsplit(url).password if url else None
    except ValueError:
        return None


def _arg(value: float | None) -> str | float:
    return "" if value is None else value


class RedisBackend:
    """Request and token buckets on a Redis server, shared by key.

    Thread-safe (redis-py's connection pool) and fork-safe.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
            (TLS) or ``unix://``; redis-py options may follow as a query
            (``?socket_timeout=3``).
        key: Name of the shared quota.
        limit_requests: This process's requests per ``interval``, or None.
        limit_tokens: This process's tokens per ``interval``, or None.
        interval: Seconds over which each limit refills completely.
        client: A ready redis-py client instead of ``url``: a
            ``redis.cluster.RedisCluster``, or a Sentinel's
            ``sentinel.master_for("mymaster")`` (give it short timeouts too).
        burst: Request bucket capacity (see :mod:`apiexec.limits.rate_limits`).
        token_burst: Token bucket capacity.
        limits: The limits as one :class:`RateLimits` instead of the loose
            arguments.
        breaker: The circuit breaker (default: the server's, shared by its keys).

    Raises:
        ConfigError: redis-py is not installed, the URL is malformed, or a
            limit is invalid.
        StorageError: The server cannot be reached (the message names the
            URL without its password).

    Example::

        from redis.sentinel import Sentinel
        master = Sentinel([("sentinel-1", 26379)]).master_for("mymaster")
        backend = RedisBackend(client=master, key="openai-prod",
                               limit_requests=500, limit_tokens=None, interval=60.0)
        executor = RateLimitedExecutor(limit_requests=500, backend=backend)
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        key: str,
        limit_requests: float | None = None,
        limit_tokens: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        client: Any = None,
        burst: float | None = None,
        token_burst: float | None = None,
        limits: RateLimits | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigError("storage", "give a redis:// URL or a client, not both or neither")
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
        self.key = key
        self.redis_key = KEY_PREFIX + key
        self.url = redact_url(url) if url is not None else f"redis client {type(client).__name__}"
        # One breaker per server, shared by its keys (a given client: its own).
        self.breaker = breaker or (breaker_for(self.url) if url is not None else CircuitBreaker(self.url))
        self._password = _password_of(url)
        lim = self.limits
        self._prefix_args: list[str | float] = [
            lim.interval,
            _arg(lim.requests),
            _arg(lim.tokens),
            _arg(lim.request_capacity),
            _arg(lim.token_capacity),
            SERVER_LIMIT_WINDOW,
        ]
        redis = _import_redis()
        self._error_type: type[Exception] = redis.RedisError
        self._timeout_type: type[Exception] = redis.TimeoutError
        self._client = client if client is not None else self._connect(url or "")
        register = self._client.register_script
        self._acquire = register(_PRELUDE + _ACQUIRE)
        self._adjust = register(_PRELUDE + _ADJUST)
        self._pause = register(_PRELUDE + _PAUSE)
        self._levels = register(_PRELUDE + _LEVELS)
        self._sync = register(_PRELUDE + _SYNC)
        try:
            self.levels()  # read-only: a server that is down, refuses us or lacks Lua fails at start
        except StorageError:
            if client is None:
                self._client.close()
            raise

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, key={self.key!r}, {self.limits!r})"

    def _connect(self, url: str) -> Any:
        redis = _import_redis()
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        try:
            return redis.Redis.from_url(
                url,
                socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                socket_timeout=DEFAULT_SOCKET_TIMEOUT,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), DEFAULT_RETRIES),
            )
        except ValueError as exc:
            raise ConfigError("storage", f"{self.url!r}: {self._scrub(str(exc))}") from None

    # -- the LimitBackend protocol ---------------------------------------------

    def acquire(self, requests: int, tokens: int) -> float:
        """Take ``requests`` and ``tokens`` together, or say how long to wait.

        Raises:
            StorageError: The server cannot be reached or failed.
            CapacityError: An amount exceeds its bucket's capacity.
        """
        answer = self._script(self._acquire, requests, tokens)
        if isinstance(answer, bytes):
            answer = answer.decode()
        if isinstance(answer, str) and answer.startswith("cap:"):
            _, needed, capacity = answer.split(":")
            raise CapacityError(int(float(needed)), float(capacity))
        return float(answer)

    def adjust(self, tokens: float) -> None:
        """Give back (positive) or charge (negative) tokens on the shared level."""
        if tokens and math.isfinite(tokens):
            self._script(self._adjust, tokens)

    def pause(self, seconds: float) -> None:
        """Grant nothing, in any process, until ``seconds`` from now."""
        self._script(self._pause, seconds)

    def levels(self) -> tuple[float | None, float | None]:
        """Current shared (requests, tokens) levels, as this process sees them."""
        requests, tokens = self._script(self._levels)
        return (
            None if requests is None else float(requests),
            None if tokens is None else float(tokens),
        )

    def sync(self, info: ServerLimits) -> None:
        """Align the shared buckets with what a server reported."""
        if info.remaining_requests is None and info.remaining_tokens is None:
            return
        args: list[float | None] = []
        for view, tokens in ((clean_view(info.requests), False), (clean_view(info.tokens), True)):
            shape = learnt_shape(view, self.limits, tokens=tokens)
            args += [view[1], *(shape or (None, None))]
        self._script(self._sync, *args)

    def ttl(self) -> float | None:
        """Seconds until the key vanishes if idle (None: no such key)."""
        millis = self._call(lambda: self._client.pttl(self.redis_key))
        return None if millis < 0 else millis / 1000

    def close(self) -> None:
        """Close the connections (safe twice)."""
        self._client.close()

    # -- plumbing --------------------------------------------------------------

    def _script(self, script: Any, *args: float | None) -> Any:
        argv: Sequence[str | float] = [*self._prefix_args, *map(_arg, args)]
        return self._call(lambda: script(keys=[self.redis_key], args=argv))

    def _call(self, operation: Callable[[], _T]) -> _T:
        """Run one command through the breaker; map redis-py's errors.

        Raises:
            StorageError: The command failed, or the breaker is open.
        """
        self.breaker.before_call()
        try:
            result = operation()
        except self._error_type as exc:
            message = self._scrub(str(exc)) or type(exc).__name__
            error = StorageError(f"limit storage {self.url} (key {self.key!r}) failed: {message}", url=self.url)
            # A timeout trips at once: every further try would cost as much.
            self.breaker.record_failure(error, trip=isinstance(exc, self._timeout_type))
            raise error from exc
        except BaseException:
            self.breaker.cancel_probe()  # interrupted: no verdict on the server
            raise
        self.breaker.record_success()
        return result

    def _scrub(self, text: str) -> str:
        """Never show a password, even if an error message echoes the URL."""
        return text.replace(self._password, "***") if self._password else text
