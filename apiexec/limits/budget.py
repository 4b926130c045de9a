"""A spending budget: reserve before a call, true up after, never cross the cap.

A :class:`BudgetStore` keeps two totals for one key, in whole **nano-dollars**
(10⁻⁹ USD, so sums are exact integers in every backend):

* ``spent``: what finished calls cost;
* ``reserved``: the worst cases of calls admitted and not yet finished.

:meth:`~BudgetStore.reserve` grants an amount only if
``spent + reserved + amount <= cap``, atomically: two threads or two
processes can never both take the last dollars. :meth:`~BudgetStore.settle`
turns a reservation into what the call really cost (the true-up), and
:meth:`~BudgetStore.release` gives a reservation back (the call never ran).

The stores share the storage URLs of :mod:`apiexec.limits.storage`:
``memory://`` (this process, :class:`MemoryBudget`), ``sqlite:///path.db``
(the processes of one host, :mod:`apiexec.limits.budget_sqlite`) and
``redis://host:port/db`` (many hosts, :mod:`apiexec.limits.budget_redis`).
A shared budget persists: every process and every run naming the same
storage and key spends from one total, until :meth:`~BudgetStore.reset`.

Example:
    >>> budget = MemoryBudget()
    >>> cap = to_nanos(1.00)
    >>> budget.reserve(to_nanos(0.60), cap).granted
    True
    >>> budget.reserve(to_nanos(0.60), cap).granted     # 0.60 + 0.60 > 1.00
    False
    >>> budget.settle(to_nanos(0.60), to_nanos(0.10))   # it cost 0.10
    >>> budget.reserve(to_nanos(0.60), cap).granted
    True
    >>> from_nanos(budget.view().spent)
    0.1
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Final, Protocol

from apiexec.errors import ConfigError
from apiexec.limits.storage import DEFAULT_KEY, parse_storage_url

#: Nano-dollars per dollar.
NANOS_PER_DOLLAR: Final = 1_000_000_000


def to_nanos(dollars: float) -> int:
    """Whole nano-dollars, rounded up (a reservation never falls short).

    Raises:
        ConfigError: (field ``cost``) a negative, infinite or NaN amount.
    """
    if isinstance(dollars, bool) or not isinstance(dollars, (int, float)) or not math.isfinite(dollars) or dollars < 0:
        raise ConfigError("cost", f"must be a finite number of dollars >= 0, got {dollars!r}")
    return math.ceil(round(dollars * NANOS_PER_DOLLAR, 3))  # round first: 0.1 * 1e9 is not 1e8 + epsilon


def from_nanos(nanos: int) -> float:
    """Dollars of ``nanos``."""
    return nanos / NANOS_PER_DOLLAR


@dataclass(frozen=True)
class BudgetView:
    """The totals of a budget, in nano-dollars.

    Attributes:
        spent: What finished calls cost.
        reserved: Worst cases of the calls admitted and still running.
    """

    spent: int = 0
    reserved: int = 0

    @property
    def committed(self) -> int:
        """``spent + reserved``: what the cap is checked against."""
        return self.spent + self.reserved


@dataclass(frozen=True)
class Grant:
    """The answer to :meth:`BudgetStore.reserve`.

    Attributes:
        granted: True when the amount was reserved.
        view: The totals after the reservation (granted) or at the refusal.
    """

    granted: bool
    view: BudgetView


class BudgetStore(Protocol):
    """Where a budget's totals live (memory, SQLite, Redis). Thread-safe."""

    def reserve(self, amount: int, cap: int) -> Grant:
        """Reserve ``amount`` if ``spent + reserved + amount <= cap``, atomically.

        Raises:
            StorageError: The shared storage failed.
        """
        ...

    def settle(self, reserved: int, spent: int) -> None:
        """A call finished: ``reserved`` is given back and ``spent`` charged, atomically."""
        ...

    def release(self, reserved: int) -> None:
        """A call admitted will not run: give ``reserved`` back."""
        ...

    def view(self) -> BudgetView:
        """The current totals."""
        ...

    def reset(self) -> None:
        """Forget everything spent and reserved under this key."""
        ...

    def close(self) -> None:
        """Close connections (safe twice)."""
        ...


def _check_amount(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(field, f"must be whole nano-dollars >= 0, got {value!r}")


class MemoryBudget:
    """A budget in this process.

    Example:
        >>> budget = MemoryBudget()
        >>> budget.reserve(5, cap=10), budget.view()
        (Grant(granted=True, view=BudgetView(spent=0, reserved=5)), BudgetView(spent=0, reserved=5))
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent = 0
        self._reserved = 0

    def reserve(self, amount: int, cap: int) -> Grant:
        """Reserve ``amount`` if it fits under ``cap``."""
        _check_amount("amount", amount)
        with self._lock:
            granted = self._spent + self._reserved + amount <= cap
            if granted:
                self._reserved += amount
            return Grant(granted, BudgetView(self._spent, self._reserved))

    def settle(self, reserved: int, spent: int) -> None:
        """Turn a reservation into what the call cost."""
        _check_amount("reserved", reserved)
        _check_amount("spent", spent)
        with self._lock:
            self._reserved = max(self._reserved - reserved, 0)
            self._spent += spent

    def release(self, reserved: int) -> None:
        """Give a reservation back."""
        self.settle(reserved, 0)

    def view(self) -> BudgetView:
        """The current totals."""
        with self._lock:
            return BudgetView(self._spent, self._reserved)

    def reset(self) -> None:
        """Back to nothing spent or reserved."""
        with self._lock:
            self._spent = self._reserved = 0

    def close(self) -> None:
        """Nothing to close."""

    def after_fork(self) -> None:
        """A fresh lock in a forked child (the parent's may be held)."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        view = self.view()
        return f"MemoryBudget(spent=${from_nanos(view.spent):.6f}, reserved=${from_nanos(view.reserved):.6f})"


def budget_from_url(url: str, *, key: str = DEFAULT_KEY) -> BudgetStore:
    """The budget store for ``key`` in the storage ``url`` (opened now).

    Args:
        url: ``memory://``, ``sqlite:///path.db`` or ``redis://host:port/db``.
        key: Name of the shared budget inside the storage.

    Raises:
        ConfigError: The URL or key is invalid, or redis-py is missing.
        StorageError: The storage cannot be reached or opened.

    Example:
        >>> budget_from_url("memory://")
        MemoryBudget(spent=$0.000000, reserved=$0.000000)
    """
    parsed = parse_storage_url(url)
    if not isinstance(key, str) or not key or key != key.strip():
        raise ConfigError("key", f"must be a non-empty string without surrounding spaces, got {key!r}")
    if parsed.scheme == "memory":
        return MemoryBudget()
    if parsed.scheme == "sqlite":
        from apiexec.limits.budget_sqlite import SQLiteBudget

        assert parsed.path is not None
        return SQLiteBudget(parsed.path, key=key, display=parsed.display, busy_timeout=parsed.busy_timeout)
    from apiexec.limits.budget_redis import RedisBudget

    return RedisBudget(parsed.url, key=key)


__all__ = [
    "NANOS_PER_DOLLAR",
    "BudgetStore",
    "BudgetView",
    "Grant",
    "MemoryBudget",
    "budget_from_url",
    "from_nanos",
    "to_nanos",
]
