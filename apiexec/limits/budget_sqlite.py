"""A spending budget in a SQLite file, shared by every process of one host.

One row per key in the table ``apiexec_budget`` (``spent`` and ``reserved``,
whole nano-dollars) in the same file as the rate limits, if the URL names
the same file. Every change is one ``BEGIN IMMEDIATE`` transaction, which
takes the write lock before reading: two processes never both see the last
dollars as free. The file uses the same settings as
:mod:`apiexec.limits.sqlite` (rollback journal, no memory mapping) and the
same circuit breaker per file, so a failing file fails calls at once with a
:class:`~apiexec.errors.StorageError`, never by granting without it.

Example:
    >>> budget = SQLiteBudget("/tmp/budget.db", key="team-a")    # doctest: +SKIP
    >>> budget.reserve(1_000, cap=5_000).granted                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from apiexec.errors import ConfigError, StorageError
from apiexec.limits.breaker import CircuitBreaker, breaker_for
from apiexec.limits.budget import BudgetView, Grant, _check_amount, from_nanos
from apiexec.limits.sqlite import DEFAULT_BUSY_TIMEOUT, MAX_BUSY_TIMEOUT

logger = logging.getLogger(__name__)

TABLE: Final = "apiexec_budget"
_CREATE: Final = f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, spent INTEGER NOT NULL, reserved INTEGER NOT NULL)"
_SELECT: Final = f"SELECT spent, reserved FROM {TABLE} WHERE key = ?"
_UPSERT: Final = (
    f"INSERT INTO {TABLE} (key, spent, reserved) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET spent = excluded.spent, reserved = excluded.reserved"
)

_T = TypeVar("_T")


class SQLiteBudget:
    """A budget row in a SQLite file, shared by key. Thread- and fork-safe.

    Args:
        path: The database file (created if missing; its directory must exist).
        key: Name of the shared budget.
        display: How to name the storage in errors (default: its URL).
        busy_timeout: Seconds to wait for another process's write lock.
        breaker: The circuit breaker (default: the file's, shared with its rate limits).

    Raises:
        ConfigError: The busy timeout is invalid.
        StorageError: The file cannot be opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: str,
        display: str | None = None,
        busy_timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        timeout = DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_BUSY_TIMEOUT:
            raise ConfigError("busy_timeout", f"must be seconds in (0, {MAX_BUSY_TIMEOUT:g}], got {timeout!r}")
        self.key = key
        self._file = Path(path).absolute()  # a later chdir() must not point us at another file
        self.url = display or f"sqlite:///{path}"
        self.breaker = breaker or breaker_for(f"sqlite:///{self._file}", label=self.url)
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._run(lambda conn: None)  # open now: a bad path fails at start

    def __repr__(self) -> str:
        return f"SQLiteBudget({self.url!r}, key={self.key!r})"

    def reserve(self, amount: int, cap: int) -> Grant:
        """Reserve ``amount`` if ``spent + reserved + amount <= cap``, in one transaction."""
        _check_amount("amount", amount)

        def take(conn: sqlite3.Connection) -> Grant:
            spent, reserved = self._load(conn)
            if spent + reserved + amount > cap:
                return Grant(False, BudgetView(spent, reserved))
            conn.execute(_UPSERT, (self.key, spent, reserved + amount))
            return Grant(True, BudgetView(spent, reserved + amount))

        return self._run(take)

    def settle(self, reserved: int, spent: int) -> None:
        """Give ``reserved`` back and charge ``spent``, in one transaction."""
        _check_amount("reserved", reserved)
        _check_amount("spent", spent)
        if not (reserved or spent):
            return

        def true_up(conn: sqlite3.Connection) -> None:
            total, held = self._load(conn)
            conn.execute(_UPSERT, (self.key, total + spent, max(held - reserved, 0)))

        self._run(true_up)

    def release(self, reserved: int) -> None:
        """Give a reservation back."""
        self.settle(reserved, 0)

    def view(self) -> BudgetView:
        """The current totals."""
        return self._run(lambda conn: BudgetView(*self._load(conn)), write=False)

    def reset(self) -> None:
        """Forget what was spent and reserved under this key."""
        self._run(lambda conn: conn.execute(f"DELETE FROM {TABLE} WHERE key = ?", (self.key,)) and None)

    def close(self) -> None:
        """Close the connection (safe twice; the next call reopens it)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    # -- plumbing -------------------------------------------------------------

    def _load(self, conn: sqlite3.Connection) -> tuple[int, int]:
        row = conn.execute(_SELECT, (self.key,)).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def _run(self, operation: Callable[[sqlite3.Connection], _T], *, write: bool = True) -> _T:
        """Run ``operation`` in one transaction, through the breaker.

        Raises:
            StorageError: Any SQLite or file error, or the breaker is open.
        """
        self.breaker.before_call()
        try:
            with self._lock:
                result = self._attempt(operation, write)
        except (sqlite3.Error, OSError) as exc:
            self._drop()
            why = f"still locked by another process after {self._timeout:g}s" if "locked" in str(exc) else str(exc)
            error = StorageError(f"budget storage {self.url} (key {self.key!r}) failed: {why}", url=self.url)
            self.breaker.record_failure(error, trip="locked" in str(exc))
            raise error from exc
        except BaseException:
            self.breaker.cancel_probe()
            raise
        self.breaker.record_success()
        return result

    def _attempt(self, operation: Callable[[sqlite3.Connection], _T], write: bool) -> _T:
        conn = self._connection()
        if not self._file.exists():  # removed under us: fail rather than split the fleet onto two files
            raise sqlite3.OperationalError("the file was removed")
        if not write:
            return operation(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = operation(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # never use the parent's connection after fork()
            self._conn, self._pid = None, os.getpid()
        if self._conn is None:
            if not self._file.parent.is_dir():
                raise sqlite3.OperationalError(f"directory {self._file.parent} does not exist (create it first)")
            conn = sqlite3.connect(self._file, timeout=self._timeout, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA mmap_size=0")  # an I/O fault is an error, not SIGBUS
                conn.execute("PRAGMA journal_mode=TRUNCATE")
                conn.execute(_CREATE)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            logger.debug("opened budget storage %s", self.url)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def after_fork(self) -> None:
        """A fresh lock in a forked child; the connection is re-opened on use."""
        self._lock = threading.Lock()

    def describe(self) -> str:
        """The totals in dollars, for messages."""
        view = self.view()
        return f"${from_nanos(view.spent):.4f} spent, ${from_nanos(view.reserved):.4f} reserved"


__all__ = ["TABLE", "SQLiteBudget"]
