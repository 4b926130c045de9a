"""Where an adaptive concurrency limit lives: this process, a SQLite file, Redis.

An :class:`AdaptiveStore` keeps two things under one key: the limit's
:class:`~apiexec.limits.adaptive.AIMDState` and the calls in flight. Every
process naming the same storage URL and key shares both, so a fleet of
workers together keeps within what the server takes, and a decrease seen by
one process slows them all.

Calls in flight are counted per process (a *lease*: owner, count, expiry)
rather than as one shared counter, so a process that dies with calls in
flight does not leak its slots for ever: its lease expires after
:data:`DEFAULT_LEASE_TTL` seconds without news from it (every operation of a
live process renews it).

Each operation is atomic: a lock in memory, one ``BEGIN IMMEDIATE``
transaction in SQLite (through :class:`~apiexec.limits.sqlite.SQLiteBackend`'s
plumbing: its breaker, its file checks), a Lua script or a ``WATCH``/``MULTI``
transaction in Redis (through :class:`~apiexec.limits.redis.RedisBackend`'s).
The rules themselves are pure functions (:mod:`apiexec.limits.adaptive`),
the same in every store.

Example:
    >>> from apiexec.limits.adaptive import AIMD
    >>> store = MemoryAdaptiveStore(AIMD(max_limit=2, initial=1))
    >>> store.try_acquire(), store.try_acquire()
    (True, False)
    >>> store.release(); store.read()[1]
    0
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

from apiexec.limits.adaptive import AIMD, AIMDState
from apiexec.limits.bucket import Clock

#: Seconds a process's slots outlive its last operation (a crashed process's
#: slots come back after this; a live one renews its lease on every call).
DEFAULT_LEASE_TTL: Final = 300.0

#: Seconds an idle key stays in Redis.
REDIS_KEY_TTL: Final = 86_400

#: A change of the state: (state, now, calls in flight) -> new state.
Change = Callable[[AIMDState, float, int], AIMDState]


class AdaptiveStore(Protocol):
    """The shared state of one adaptive limit."""

    #: True when other processes share it (waiters then re-check periodically:
    #: nothing wakes them across processes).
    shared: bool

    def try_acquire(self) -> bool:
        """Take a slot if fewer than ``state.slots`` calls are in flight."""
        ...

    def release(self) -> None:
        """Give a slot back."""
        ...

    def update(self, change: Change) -> AIMDState:
        """Apply ``change`` atomically; return the new state."""
        ...

    def read(self) -> tuple[AIMDState, int]:
        """The state and the calls in flight (every process)."""
        ...

    def after_fork(self) -> None:
        """Reset locks and this process's identity in a forked child."""
        ...


class MemoryAdaptiveStore:
    """The limit in this process (the default).

    Args:
        rules: The AIMD rules (their start state is the first state).
        clock: Monotonic clock (injectable: a FakeClock's ``now``).
    """

    shared = False

    def __init__(self, rules: AIMD, clock: Clock = time.monotonic) -> None:
        self._state = rules.start()
        self._in_flight = 0
        self._clock = clock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryAdaptiveStore(limit={self._state.limit:.2f}, in_flight={self._in_flight})"

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        with self._lock:
            if self._in_flight >= self._state.slots:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Give a slot back (never below zero)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def update(self, change: Change) -> AIMDState:
        """Apply ``change`` under the lock."""
        with self._lock:
            self._state = change(self._state, self._clock(), self._in_flight)
            return self._state

    def read(self) -> tuple[AIMDState, int]:
        """The state and the calls in flight."""
        with self._lock:
            return self._state, self._in_flight

    def after_fork(self) -> None:
        """A fresh lock; the parent's calls in flight are not the child's."""
        self._lock = threading.Lock()
        self._in_flight = 0


def _bounded(state: AIMDState, rules: AIMD) -> AIMDState:
    """Processes may have other bounds: this process's apply to what it reads."""
    limit = min(rules.max_limit, max(rules.min_limit, state.limit))
    return state if limit == state.limit else dataclasses.replace(state, limit=limit)


def _owner() -> str:
    """This process's lease name: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_SQL_TABLES: Final = (
    "CREATE TABLE IF NOT EXISTS apiexec_adaptive (key TEXT PRIMARY KEY, state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS apiexec_adaptive_slots (key TEXT NOT NULL, owner TEXT NOT NULL, "
    "used INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key, owner))",
)


class SQLiteAdaptiveStore:
    """The limit in a SQLite file, shared by the processes of one host.

    Args:
        backend: A :class:`~apiexec.limits.sqlite.SQLiteBackend` on the file
            (its connection, breaker and failure handling are reused).
        key: Name of the limit (e.g. ``"default:adaptive"``).
        rules: The AIMD rules.
        lease_ttl: See :data:`DEFAULT_LEASE_TTL`.
        clock: Wall clock shared by the host's processes.

    Raises:
        StorageError: The file fails (through the backend's breaker).
    """

    shared = True

    def __init__(
        self, backend: Any, *, key: str, rules: AIMD, lease_ttl: float = DEFAULT_LEASE_TTL, clock: Clock = time.time
    ) -> None:
        self._backend = backend
        self.key = key
        self._rules = rules
        self._ttl = lease_ttl
        self._clock = clock
        self._owner = _owner()
        self._backend._run(self._tables)

    def __repr__(self) -> str:
        return f"SQLiteAdaptiveStore({self._backend.url!r}, key={self.key!r})"

    @staticmethod
    def _tables(conn: Any) -> None:
        for statement in _SQL_TABLES:
            conn.execute(statement)

    def _state(self, conn: Any) -> AIMDState:
        row = conn.execute("SELECT state FROM apiexec_adaptive WHERE key = ?", (self.key,)).fetchone()
        start = self._rules.start()
        if row is None:
            return start
        try:
            data = json.loads(row[0])
        except ValueError:
            return start
        return _bounded(AIMDState.from_dict(data, start), self._rules)

    def _in_flight(self, conn: Any, now: float) -> int:
        conn.execute("DELETE FROM apiexec_adaptive_slots WHERE key = ? AND expires < ?", (self.key, now))
        row = conn.execute("SELECT COALESCE(SUM(used), 0) FROM apiexec_adaptive_slots WHERE key = ?", (self.key,))
        return int(row.fetchone()[0])

    def _add(self, conn: Any, delta: int, now: float) -> None:
        conn.execute(
            "INSERT INTO apiexec_adaptive_slots (key, owner, used, expires) VALUES (?, ?, MAX(0, ?), ?) "
            "ON CONFLICT (key, owner) DO UPDATE SET used = MAX(0, used + ?), expires = excluded.expires",
            (self.key, self._owner, delta, now + self._ttl, delta),
        )

    def try_acquire(self) -> bool:
        """Take a slot if fewer than the limit are in flight on the host."""

        def take(conn: Any) -> bool:
            self._tables(conn)
            now = self._clock()
            if self._in_flight(conn, now) >= self._state(conn).slots:
                return False
            self._add(conn, 1, now)
            return True

        return bool(self._backend._run(take))

    def release(self) -> None:
        """Give a slot back."""

        def give(conn: Any) -> None:
            self._tables(conn)
            self._add(conn, -1, self._clock())

        self._backend._run(give)

    def update(self, change: Change) -> AIMDState:
        """Apply ``change`` in one transaction."""

        def apply(conn: Any) -> AIMDState:
            self._tables(conn)
            now = self._clock()
            state = change(self._state(conn), now, self._in_flight(conn, now))
            conn.execute(
                "INSERT INTO apiexec_adaptive (key, state) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET state = excluded.state",
                (self.key, json.dumps(state.to_dict())),
            )
            return state

        result: AIMDState = self._backend._run(apply)
        return result

    def read(self) -> tuple[AIMDState, int]:
        """The shared state and the calls in flight on the host."""

        def look(conn: Any) -> tuple[AIMDState, int]:
            self._tables(conn)
            return self._state(conn), self._in_flight(conn, self._clock())

        result: tuple[AIMDState, int] = self._backend._run(look)
        return result

    def after_fork(self) -> None:
        """A child is another owner (its parent's calls are not its own)."""
        self._owner = _owner()
        reset = getattr(self._backend, "after_fork", None)
        if callable(reset):
            reset()


# KEYS: state hash (fields json, slots), leases hash (owner -> used), expiry zset (owner -> expires)
_REDIS_PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, owner in ipairs(dead) do
  redis.call('HDEL', KEYS[2], owner)
  redis.call('ZREM', KEYS[3], owner)
end
local used = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do used = used + tonumber(v) end
"""

# ARGV: owner, lease ttl, slots when no state is stored yet, key ttl
_REDIS_ACQUIRE: Final = _REDIS_PRELUDE + """
local slots = tonumber(redis.call('HGET', KEYS[1], 'slots') or ARGV[3])
local granted = 0
if used < slots then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
  granted = 1
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return granted
"""

# ARGV: owner, lease ttl
_REDIS_RELEASE: Final = _REDIS_PRELUDE + """
local left = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if left <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
end
return 1
"""

_REDIS_READ: Final = _REDIS_PRELUDE + """
return {redis.call('HGET', KEYS[1], 'json') or false, used, tostring(now)}
"""


class RedisAdaptiveStore:
    """The limit on a Redis server, shared by every host naming it.

    Args:
        backend: A :class:`~apiexec.limits.redis.RedisBackend` on the server
            (its client, breaker and error mapping are reused).
        key: Name of the limit.
        rules: The AIMD rules.
        lease_ttl: See :data:`DEFAULT_LEASE_TTL`.

    Raises:
        StorageError: The server fails (through the backend's breaker).
    """

    shared = True

    def __init__(self, backend: Any, *, key: str, rules: AIMD, lease_ttl: float = DEFAULT_LEASE_TTL) -> None:
        self._backend = backend
        self.key = key
        self._rules = rules
        self._ttl = lease_ttl
        self._owner = _owner()
        # One hash tag: a script's keys must live in one Redis Cluster slot.
        base = f"{{{backend.redis_key}}}"
        self._keys = [base, f"{base}:leases", f"{base}:expiry"]
        client = backend._client
        self._acquire = client.register_script(_REDIS_ACQUIRE)
        self._release = client.register_script(_REDIS_RELEASE)
        self._read = client.register_script(_REDIS_READ)
        self.read()  # a server without Lua or refusing us fails at start

    def __repr__(self) -> str:
        return f"RedisAdaptiveStore({self._backend.url!r}, key={self.key!r})"

    def try_acquire(self) -> bool:
        """Take a slot if fewer than the limit are in flight (every host)."""
        start = self._rules.start().slots
        args = [self._owner, self._ttl, start, REDIS_KEY_TTL]
        return bool(self._backend._call(lambda: self._acquire(keys=self._keys, args=args)))

    def release(self) -> None:
        """Give a slot back."""
        self._backend._call(lambda: self._release(keys=self._keys, args=[self._owner, self._ttl]))

    def read(self) -> tuple[AIMDState, int]:
        """The shared state and the calls in flight."""
        raw, used, _ = self._backend._call(lambda: self._read(keys=self._keys, args=[]))
        return self._decode(raw), int(used)

    def update(self, change: Change) -> AIMDState:
        """Apply ``change`` in a ``WATCH``/``MULTI`` transaction (retried on conflict)."""

        def apply(pipe: Any) -> AIMDState:
            # Plain reads while WATCHing (expired leases are dropped by the next script).
            raw = pipe.hget(self._keys[0], "json")
            used = sum(int(v) for v in pipe.hvals(self._keys[1]))
            seconds, micros = pipe.time()
            state = change(self._decode(raw), seconds + micros / 1e6, used)
            pipe.multi()
            pipe.hset(self._keys[0], mapping={"json": json.dumps(state.to_dict()), "slots": state.slots})
            pipe.expire(self._keys[0], REDIS_KEY_TTL)
            return state

        def run() -> AIMDState:
            result: AIMDState = self._backend._client.transaction(apply, self._keys[0], value_from_callable=True)
            return result

        result: AIMDState = self._backend._call(run)
        return result

    def _decode(self, raw: Any) -> AIMDState:
        start = self._rules.start()
        if not raw:
            return start
        try:
            data = json.loads(raw)
        except ValueError:
            return start
        state = AIMDState.from_dict(data, start)
        return _bounded(state, self._rules)

    def after_fork(self) -> None:
        """A child is another owner."""
        self._owner = _owner()


def adaptive_store_from_url(
    url: str, *, key: str, rules: AIMD, clock: Clock = time.monotonic, lease_ttl: float = DEFAULT_LEASE_TTL
) -> AdaptiveStore:
    """The store that keeps the adaptive limit ``key`` in the storage ``url``.

    Args:
        url: ``memory://``, ``sqlite:///path.db`` or ``redis://host:port/db``
            (as :func:`~apiexec.limits.storage.backend_from_url`).
        key: Name of the limit (shared by every process naming it).
        rules: The AIMD rules.
        clock: Monotonic clock of a ``memory://`` store.
        lease_ttl: See :data:`DEFAULT_LEASE_TTL`.

    Raises:
        ConfigError: The URL or key is invalid.
        StorageError: The storage cannot be reached.

    Example:
        >>> adaptive_store_from_url("memory://", key="k", rules=AIMD(max_limit=8)).read()[0].limit
        4.0
    """
    from apiexec.limits.storage import backend_from_url, parse_storage_url

    parsed = parse_storage_url(url)
    if parsed.scheme == "memory":
        return MemoryAdaptiveStore(rules, clock)
    backend = backend_from_url(url, key=key)  # opens (SQLite) or pings (Redis) the storage now
    if parsed.scheme == "sqlite":
        return SQLiteAdaptiveStore(backend, key=key, rules=rules, lease_ttl=lease_ttl)
    return RedisAdaptiveStore(backend, key=key, rules=rules, lease_ttl=lease_ttl)


__all__ = [
    "DEFAULT_LEASE_TTL",
    "AdaptiveStore",
    "MemoryAdaptiveStore",
    "RedisAdaptiveStore",
    "SQLiteAdaptiveStore",
    "adaptive_store_from_url",
]
