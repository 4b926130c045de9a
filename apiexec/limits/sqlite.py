"""Rate-limit buckets in a SQLite file, shared by every process of one host.

One row per key holds each bucket's level and time stamp (plus the capacity
and rate learnt from a server, when a process has no limit of its own) and
the end of a server-requested pause. Every change is one ``BEGIN IMMEDIATE``
transaction: load the row, rebuild :class:`~apiexec.limits.bucket.TokenBucket`
objects, compute with the very same math as the in-memory backend, store.
``BEGIN IMMEDIATE`` takes the write lock before reading, so two processes
never both see the same capacity; the busy timeout (short, bounded) makes
them queue for it instead of failing.

**Failure model.** The file uses a rollback journal (``TRUNCATE``) and no
memory mapping (``mmap_size=0``), not WAL: WAL's ``-shm`` index is always
``mmap``'ed, and when that file is truncated or cannot be backed (deleted and
re-created by another process, a full disk) the next access kills the process
with SIGBUS, which Python cannot catch. With plain reads and writes every
such fault is an error code, mapped to :class:`~apiexec.errors.StorageError`.
Before each operation the backend checks that the path still names the file
it opened and that the file is still writable: a file removed, replaced or
made read-only mid-run fails calls clearly instead of splitting the fleet
onto two files. A circuit breaker (:mod:`apiexec.limits.breaker`) then fails
calls at once while the file stays unusable, and re-opens the path (creating
a new, full file if it was removed) on its periodic probe. ``synchronous=OFF``:
the levels are a few seconds' state, a crashed process loses nothing (the OS
has the writes), and only a power cut could damage the file (then delete it).

The clock is the host's wall clock (``time.time``), which every process of
the host shares. A step backwards credits no refill (stamps in the future are
clamped); a pause may then last longer, never shorter.

Example:
    >>> backend = SQLiteBackend("limits.db", key="openai-prod",
    ...                         limit_requests=500, limit_tokens=200_000,
    ...                         interval=60.0)               # doctest: +SKIP
    >>> backend.acquire(1, 1200)                               # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from apiexec.errors import ConfigError, StorageError
from apiexec.limits.breaker import CircuitBreaker, breaker_for
from apiexec.limits.bucket import Clock, ServerLimits, sync_bucket, take_together
from apiexec.limits.rate_limits import DEFAULT_INTERVAL, RateLimits, resolve_limits
from apiexec.limits.sqlite_row import COLUMNS, CREATE, SELECT, UPSERT, Row, State, dump_bucket, load_bucket

logger = logging.getLogger(__name__)

#: Seconds a process waits for another one's write lock before failing. A
#: transaction holds it for well under a millisecond: a lock held for
#: seconds means a stuck process, and admission should say so.
DEFAULT_BUSY_TIMEOUT: Final = 5.0

#: Longest busy timeout accepted (``?timeout=`` in the URL).
MAX_BUSY_TIMEOUT: Final = 60.0

#: Pause between retries when SQLite reports busy without waiting itself.
_BUSY_RETRY_SLEEP: Final = 0.005

_T = TypeVar("_T")


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)  # pragma: no cover - Python < 3.11


def _writable(path: Path, mode: int) -> bool:
    """Writable for us, and not marked read-only for everyone.

    Root may write to a file whose write bits are all off; a file made
    ``chmod a-w`` is still read-only in intent, and the rest of the fleet
    cannot write it: root fails like everyone else instead of going alone.
    """
    return bool(mode & 0o222) and os.access(path, os.W_OK)


class SQLiteBackend:
    """Request and token buckets in a SQLite file, shared by key.

    Thread-safe (one connection per backend, behind a lock) and safe across
    processes and ``fork()`` (a child opens its own connection).

    Args:
        path: The database file; created if missing (its directory must exist).
        key: Name of the shared quota.
        limit_requests: This process's requests per ``interval``, or None.
        limit_tokens: This process's tokens per ``interval``, or None.
        interval: Seconds over which each limit refills completely.
        busy_timeout: Seconds to wait for another process's write lock
            (at most :data:`MAX_BUSY_TIMEOUT`).
        clock: Wall clock shared by the processes (injectable for tests).
        display: How to name the storage in errors (default: its URL).
        burst: Request bucket capacity (see :mod:`apiexec.limits.rate_limits`).
        token_burst: Token bucket capacity.
        limits: The limits as one :class:`RateLimits` instead of the loose
            arguments.
        breaker: The circuit breaker (default: the file's, shared by its keys).

    Raises:
        ConfigError: A limit or the busy timeout is invalid.
        StorageError: The file cannot be opened or initialised.

    Example:
        >>> backend = SQLiteBackend("/tmp/limits.db", key="k", limit_requests=2,
        ...                         limit_tokens=None, interval=1.0)  # doctest: +SKIP
        >>> backend.acquire(1, 0), backend.acquire(1, 0), backend.acquire(1, 0)  # doctest: +SKIP
        (0.0, 0.0, 0.5)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: str,
        limit_requests: float | None = None,
        limit_tokens: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        clock: Clock = time.time,
        display: str | None = None,
        burst: float | None = None,
        token_burst: float | None = None,
        limits: RateLimits | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.limits = resolve_limits(
            limits,
            limit_requests=limit_requests,
            limit_tokens=limit_tokens,
            interval=interval,
            burst=burst,
            token_burst=token_burst,
        )
        if not (isinstance(busy_timeout, (int, float)) and 0 < busy_timeout <= MAX_BUSY_TIMEOUT):
            raise ConfigError("busy_timeout", f"must be seconds in (0, {MAX_BUSY_TIMEOUT:g}], got {busy_timeout!r}")
        self.limit_requests = self.limits.requests
        self.limit_tokens = self.limits.tokens
        self.key = key
        self.path = Path(path)
        self.url = display or f"sqlite:///{self.path}"
        # Resolved once: a later chdir() must not point us at another file.
        self._file = self.path.absolute()
        # One breaker per file, shared by its keys: the file fails for all of them at once.
        self.breaker = breaker or breaker_for(f"sqlite:///{self._file}", label=self.url)
        self._busy_timeout = float(busy_timeout)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int, int] | None = None  # (st_dev, st_ino, st_mode) at open
        self._pid = os.getpid()
        self._orphans: list[sqlite3.Connection] = []
        self._run(lambda conn: None)  # open now: a bad path fails at start

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r}, key={self.key!r}, {self.limits!r})"

    @property
    def is_open(self) -> bool:
        """Whether this process holds an open connection to the file."""
        return self._conn is not None and self._pid == os.getpid()

    # -- the LimitBackend protocol ---------------------------------------------

    def acquire(self, requests: int, tokens: int) -> float:
        """Take ``requests`` and ``tokens`` together, or say how long to wait.

        Raises:
            CapacityError: An amount exceeds its bucket's limit.
            StorageError: The file cannot be read or written, or the
                breaker is open.
        """

        def take(state: State, now: float) -> float:
            return take_together(
                ((state.requests, requests), (state.tokens, tokens)), state.paused_until, now
            )

        return self._update(take, store_if=lambda wait: wait == 0.0)

    def adjust(self, tokens: float) -> None:
        """Give back (positive) or charge (negative) tokens on the shared level."""
        if not tokens:
            return

        def give(state: State, now: float) -> bool:
            if state.tokens is None:
                return False
            state.tokens.refill(now)
            state.tokens.give(tokens)
            return True

        self._update(give, store_if=bool)

    def pause(self, seconds: float) -> None:
        """Grant nothing, in any process, until ``seconds`` from now."""

        def extend(state: State, now: float) -> None:
            state.paused_until = max(state.paused_until, now + seconds)

        self._update(extend, store_if=lambda _: True, buckets=False)

    def levels(self) -> tuple[float | None, float | None]:
        """Current shared (requests, tokens) levels, as this process sees them."""

        def read(conn: sqlite3.Connection) -> tuple[float | None, float | None]:
            now = self._clock()
            state = self._load(conn, now)
            out = []
            for bucket in (state.requests, state.tokens):
                if bucket is not None:
                    bucket.refill(now)
                out.append(None if bucket is None else bucket.level)
            return out[0], out[1]

        return self._run(read, write=False)

    def sync(self, info: ServerLimits) -> None:
        """Align the shared buckets with what a server reported."""
        if info.remaining_requests is None and info.remaining_tokens is None:
            return

        def align(state: State, now: float) -> None:
            state.requests = sync_bucket(
                state.requests, self.limit_requests is None, info.requests, now, limits=self.limits
            )
            state.tokens = sync_bucket(
                state.tokens, self.limit_tokens is None, info.tokens, now, limits=self.limits, tokens=True
            )

        self._update(align, store_if=lambda _: True)

    def close(self) -> None:
        """Close the connection (safe twice; the next call reopens it)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- one transaction per operation ------------------------------------------

    def _update(
        self,
        change: Callable[[State, float], _T],
        *,
        store_if: Callable[[_T], bool],
        buckets: bool = True,
    ) -> _T:
        """Load, change and (if ``store_if(result)``) store the row atomically."""

        def transaction(conn: sqlite3.Connection) -> _T:
            now = self._clock()
            state = self._load(conn, now)
            result = change(state, now)
            if store_if(result) or state.clock_went_back:
                self._store(conn, state, buckets)
            return result

        return self._run(transaction)

    def _load(self, conn: sqlite3.Connection, now: float) -> State:
        row = conn.execute(SELECT, (self.key,)).fetchone() or (None,) * len(COLUMNS)
        paused = row[8]
        lim = self.limits
        return State(
            requests=load_bucket(lim.requests, lim.request_capacity, lim.interval, row[0:4], now),
            tokens=load_bucket(lim.tokens, lim.token_capacity, lim.interval, row[4:8], now),
            paused_until=-math.inf if paused is None else paused,
            clock_went_back=any(stamp is not None and stamp > now for stamp in (row[1], row[5])),
        )

    def _store(self, conn: sqlite3.Connection, state: State, buckets: bool) -> None:
        values: Row = (None,) * 8
        if buckets:
            values = (
                *dump_bucket(state.requests, self.limit_requests is None),
                *dump_bucket(state.tokens, self.limit_tokens is None),
            )
        paused = state.paused_until if math.isfinite(state.paused_until) else None
        conn.execute(UPSERT, (self.key, *values, paused))

    def _run(self, operation: Callable[[sqlite3.Connection], _T], *, write: bool = True) -> _T:
        """Run ``operation`` in one transaction, through the circuit breaker.

        Raises:
            StorageError: Any SQLite error, the file is gone or read-only,
                the lock stayed busy for longer than ``busy_timeout``, or the
                breaker is open.
        """
        self.breaker.before_call()
        try:
            result = self._run_locked(operation, write)
        except _Failure as failure:
            self.breaker.record_failure(failure.error, trip=failure.trip)
            raise failure.error from failure.__cause__
        except Exception:
            self.breaker.record_success()  # the file answered (e.g. CapacityError)
            raise
        except BaseException:
            self.breaker.cancel_probe()  # interrupted: no verdict on the file
            raise
        self.breaker.record_success()
        return result

    def _run_locked(self, operation: Callable[[sqlite3.Connection], _T], write: bool) -> _T:
        deadline = time.monotonic() + self._busy_timeout
        with self._lock:
            while True:
                try:
                    return self._attempt(operation, write)
                except sqlite3.Error as exc:
                    if _is_busy(exc) and time.monotonic() < deadline:
                        # Another process holds the lock past SQLite's own busy
                        # handler. Nothing can wake us across processes, so, like that
                        # handler, nap briefly and retry until busy_timeout.
                        time.sleep(_BUSY_RETRY_SLEEP)
                        continue
                    self._drop_connection()
                    raise _Failure(self._error(str(exc), exc), trip=_is_busy(exc)) from exc
                except OSError as exc:
                    self._drop_connection()
                    raise _Failure(self._error(f"{exc.strerror or exc} ({self.path})", exc)) from exc

    def _attempt(self, operation: Callable[[sqlite3.Connection], _T], write: bool) -> _T:
        conn = self._connection()
        self._check_file()
        if not write:
            return operation(conn)  # one SELECT: a consistent snapshot on its own
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = operation(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return result

    def _check_file(self) -> None:
        """Fail if the path no longer names the writable file we opened.

        One ``stat`` (a microsecond or two): cheaper than finding out later
        that half the fleet writes to a deleted file and half to a new one.

        Raises:
            _Failure: The file was removed, replaced or made read-only.
        """
        try:
            st = os.stat(self._file)
        except FileNotFoundError:
            self._drop_connection()
            raise _Failure(self._error("the file was removed", None), trip=True) from None
        identity = (st.st_dev, st.st_ino, st.st_mode)
        if identity == self._identity:
            return
        if self._identity is None or identity[:2] != self._identity[:2]:
            self._drop_connection()
            raise _Failure(self._error("the file was replaced by another file", None), trip=True)
        if not _writable(self._file, st.st_mode):
            raise _Failure(self._error("the file was made read-only", None), trip=True)
        self._identity = identity  # a mode change that left it writable

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # A connection must not cross fork(): keep the parent's unclosed
            # (closing it could disturb the parent's locks) and open our own.
            if self._conn is not None:
                self._orphans.append(self._conn)
            self._conn, self._pid = None, os.getpid()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _drop_connection(self) -> None:
        """Forget the connection after a failure: the next try opens the path anew."""
        conn, self._conn, self._identity = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _open(self) -> sqlite3.Connection:
        directory = self._file.parent
        if not directory.is_dir():
            raise _Failure(self._error(f"directory {directory} does not exist (create it first)", None))
        conn = sqlite3.connect(
            self._file, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA mmap_size=0")  # plain reads: an I/O fault is an error, not SIGBUS
            mode = conn.execute("PRAGMA journal_mode=TRUNCATE").fetchone()[0]
            if str(mode).lower() == "wal":  # pragma: no cover - a file an older version left in WAL
                logger.warning("limit storage %s stays in WAL mode while other processes use it", self.url)
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(CREATE)
            st = os.stat(self._file)
        except BaseException:
            conn.close()
            raise
        if not _writable(self._file, st.st_mode):
            conn.close()
            raise _Failure(self._error("the file is read-only", None), trip=True)
        self._identity = (st.st_dev, st.st_ino, st.st_mode)
        logger.debug("opened limit storage %s", self.url)
        return conn

    def _error(self, why: str, exc: BaseException | None) -> StorageError:
        if isinstance(exc, sqlite3.Error) and _is_busy(exc):
            why = f"still locked by another process after {self._busy_timeout:g}s"
        return StorageError(f"limit storage {self.url} (key {self.key!r}) failed: {why}", url=self.url)


class _Failure(Exception):
    """A storage failure on its way to the breaker (never leaves this module)."""

    def __init__(self, error: StorageError, *, trip: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.trip = trip
