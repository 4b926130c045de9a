"""A spending cap that holds at any concurrency: :class:`BudgetAdmission`.

An admission policy (:mod:`apiexec.execution.admission`) that prices every
API call before it runs and keeps the total under ``max_cost`` US dollars:

1. **admit** reserves the call's *worst case* (its prompt estimate at the
   model's input price plus all the output it allows at the output price,
   see :meth:`~apiexec.llm.prices.Prices.worst_case`) in a
   :class:`~apiexec.limits.budget.BudgetStore`, atomically against
   ``spent + reserved``. When it does not fit only because calls in flight
   hold reservations, it waits (in submission order) for them to finish;
   when it cannot fit even once they do (``spent + worst case > max_cost``)
   it refuses with :class:`~apiexec.errors.BudgetExceeded`. A model with no
   known price is refused with :class:`~apiexec.llm.prices.UnknownPrice`
   (never priced at 0).
2. **settle** trues the reservation up to what the answer's ``usage`` says
   it cost. An answer without usage, or a call that failed without an HTTP
   answer (timeout, broken connection, cut stream), stays charged at its
   worst case: it may have been billed. A call the server answered with an
   error status is not billed and costs nothing.
3. **release** gives the reservation back when an admitted call never runs.

So ``spent`` never passes ``max_cost`` (up to what a provider bills beyond
the estimate of a prompt). With ``storage=`` (``sqlite:///...``,
``redis://...``) and ``key=`` the budget is shared by every process naming
them, and persists across runs until :meth:`BudgetAdmission.reset`.

Example:
    >>> from apiexec import RateLimitedExecutor
    >>> cap = BudgetAdmission(max_cost=5.00)
    >>> ex = RateLimitedExecutor(limit_requests=500, policies=[cap])
    >>> cap.spent, cap.remaining
    (0.0, 5.0)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Final

from apiexec._checks import check_positive_number
from apiexec.clock import REAL, Waiter
from apiexec.errors import APIStatusError, BudgetExceeded, ConfigError, DeadlineExceeded, StorageError
from apiexec.execution.event import ExecutionStatus
from apiexec.limits.budget import BudgetStore, budget_from_url, from_nanos, to_nanos
from apiexec.limits.storage import DEFAULT_KEY, DEFAULT_STORAGE
from apiexec.llm.prices import Prices, UnknownPrice
from apiexec.llm.sdk import SDKCall, request_body

logger = logging.getLogger(__name__)

#: Seconds to wait for calls in flight in *other* processes to settle before
#: refusing (their reservations may be what keeps this call out). A process
#: killed with calls in flight leaves their worst case charged: they may
#: have been billed.
DEFAULT_SHARED_WAIT: Final = 60.0

#: Longest single wait before the shared totals are read again (other
#: processes cannot wake this one).
SHARED_RECHECK: Final = 0.25


class BudgetAdmission:
    """Admission policy: no call starts that could take spending past ``max_cost``.

    Args:
        max_cost: The cap, in US dollars (> 0).
        prices: The price table (default: :meth:`Prices.builtin`).
        storage: Where the budget lives: ``memory://`` (this policy only),
            ``sqlite:///path.db`` or ``redis://host:port/db`` (shared).
        key: Name of the shared budget inside ``storage``.
        store: A ready :class:`~apiexec.limits.budget.BudgetStore` instead
            of ``storage``/``key``.
        shared_wait: Seconds to wait for other processes' calls in flight
            before refusing.
        unsent_errors: Exception types meaning a call was never sent (e.g.
            a batch run's refusal to send after it stopped): such a call
            costs nothing.
        waiter: Clock and blocking (tests inject a fake one).

    Raises:
        ConfigError: ``max_cost`` is not a positive number, or the storage
            URL or key is invalid.
        StorageError: The storage cannot be reached.

    Example:
        >>> policy = BudgetAdmission(max_cost=1.0, prices=Prices({"m": {"input": 1, "output": 2}}))
        >>> policy
        BudgetAdmission(max_cost=1.0, spent=0.0, reserved=0.0, storage='memory://')
    """

    #: Each reservation is atomic, so the cap holds whatever the order: calls
    #: need not be admitted one at a time (a call waiting for its model's
    #: rate limit must not hold up the others).
    blocking = False

    def __init__(
        self,
        max_cost: float,
        prices: Prices | None = None,
        *,
        storage: str = DEFAULT_STORAGE,
        key: str = DEFAULT_KEY,
        store: BudgetStore | None = None,
        shared_wait: float = DEFAULT_SHARED_WAIT,
        unsent_errors: tuple[type[BaseException], ...] = (),
        waiter: Waiter = REAL,
    ) -> None:
        check_positive_number("max_cost", max_cost)
        check_positive_number("shared_wait", shared_wait)
        if store is not None and (storage != DEFAULT_STORAGE or key != DEFAULT_KEY):
            raise ConfigError("storage", "give storage=/key= or store=, not both")
        self.max_cost = float(max_cost)
        self.prices = prices if prices is not None else Prices.builtin()
        self.storage = storage
        self.key = key
        self.store: BudgetStore = store if store is not None else budget_from_url(storage, key=key)
        self._cap = to_nanos(self.max_cost)
        self._shared_wait = float(shared_wait)
        self._unsent = tuple(unsent_errors)
        self._waiter = waiter
        self._cond = threading.Condition()
        self._in_flight = 0  # calls of this policy holding a reservation

    def __repr__(self) -> str:
        return (f"BudgetAdmission(max_cost={self.max_cost!r}, spent={self.spent!r}, "
                f"reserved={self.reserved!r}, storage={self.storage!r})")

    # -- views -------------------------------------------------------------------

    @property
    def spent(self) -> float:
        """Dollars spent under this budget (all processes sharing it)."""
        return from_nanos(self.store.view().spent)

    @property
    def reserved(self) -> float:
        """Dollars reserved by calls in flight."""
        return from_nanos(self.store.view().reserved)

    @property
    def remaining(self) -> float:
        """Dollars left under the cap, calls in flight counted at their worst case."""
        return max(from_nanos(self._cap - self.store.view().committed), 0.0)

    def reset(self) -> None:
        """Forget what this budget has spent (every process sharing it)."""
        self.store.reset()

    # -- the Admission protocol ----------------------------------------------------

    def admit(self, event: Any, *, stop: threading.Event, deadline: float | None) -> int | None:
        """Reserve the event's worst-case cost, waiting while calls in flight may free enough.

        Returns:
            The nano-dollars reserved (0 for an event that is not an API
            request); None when ``stop`` was set while waiting.

        Raises:
            UnknownPrice: The request's model has no price.
            BudgetExceeded: The call could cross the cap even once every
                call in flight has settled.
            DeadlineExceeded: The event's deadline passed while it waited.
            StorageError: The shared storage failed.
        """
        request = _request_of(event)
        if request is None:
            return 0  # not an API request (a plain function): nothing to price
        model = request.get("model")
        worst = self.prices.worst_case(request)
        if worst is None:
            raise UnknownPrice(model if isinstance(model, str) else None)
        amount = to_nanos(worst)
        started = self._waiter.now()
        with self._cond:
            while True:
                grant = self.store.reserve(amount, self._cap)
                if grant.granted:
                    self._in_flight += 1
                    return amount
                view = grant.view
                if view.spent + amount > self._cap:
                    raise BudgetExceeded(
                        f"the next call (model {model!r}, up to ${worst:.6f}) could take spending past the cap of "
                        f"${self.max_cost:g}: ${from_nanos(view.spent):.6f} spent, "
                        f"${from_nanos(view.reserved):.6f} reserved by calls in flight",
                        cap=self.max_cost,
                        spent=from_nanos(view.committed),
                    )
                if stop.is_set():
                    return None
                now = self._waiter.now()
                if deadline is not None and now >= deadline:
                    raise DeadlineExceeded("admission", getattr(event, "timeout", None) or 0.0)
                if not self._in_flight and now - started >= self._shared_wait:
                    raise BudgetExceeded(
                        f"the next call (model {model!r}, up to ${worst:.6f}) does not fit under the cap of "
                        f"${self.max_cost:g} while ${from_nanos(view.reserved):.6f} stays reserved by calls "
                        f"in other processes (waited {self._shared_wait:g}s)",
                        cap=self.max_cost,
                        spent=from_nanos(view.committed),
                    )
                # Our own settles notify at once; other processes' are seen on the next read.
                timeout = SHARED_RECHECK if deadline is None else min(SHARED_RECHECK, deadline - now)
                self._waiter.wait(self._cond, max(timeout, 0.0))

    def admit_retry(self, stop: threading.Event) -> bool:
        """A retry is covered by the call's reservation (providers bill only the answer)."""
        return True

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Responses tell a budget nothing until the call ends."""

    def settle(self, event: Any, reserved: int) -> None:
        """True the reservation up to what the answer cost (see the module docstring)."""
        if _request_of(event) is None:
            return
        try:
            self.store.settle(reserved, self._actual_cost(event, reserved))
        except StorageError as exc:  # the answer must not be lost; the reservation stays counted
            logger.warning("budget true-up not recorded: %s", exc)
        finally:
            self._finished()

    def release(self, event: Any, reserved: int) -> None:
        """An admitted call will not run: give its reservation back."""
        if _request_of(event) is None:
            return
        try:
            self.store.release(reserved)
        except StorageError as exc:
            logger.warning("budget refund not recorded: %s", exc)
        finally:
            self._finished()

    def wake(self) -> None:
        """Wake the call waiting for budget (shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def after_fork(self) -> None:
        """Fresh locks in a forked child; the parent's calls are not ours."""
        self._cond = threading.Condition()
        self._in_flight = 0
        reset = getattr(self.store, "after_fork", None)
        if callable(reset):
            reset()

    # -- helpers -------------------------------------------------------------------

    def _finished(self) -> None:
        with self._cond:
            self._in_flight = max(self._in_flight - 1, 0)
            self._cond.notify_all()

    def _actual_cost(self, event: Any, reserved: int) -> int:
        """Nano-dollars to charge for a finished call."""
        execution = getattr(event, "execution", None)
        status = getattr(execution, "status", None)
        error = getattr(execution, "exception", None)
        if status is ExecutionStatus.FAILED and isinstance(error, (APIStatusError, *self._unsent)):
            return 0  # the server answered with an error (not billed), or nothing was sent
        if status is ExecutionStatus.COMPLETED:
            request = _request_of(event) or {}
            model = request.get("model")
            answer = _answer_of(getattr(execution, "result", None))
            cost = self.prices.usage_cost(answer, model if isinstance(model, str) else None)
            if cost is not None:
                return to_nanos(cost)
            logger.info("an answer reported no usage: its worst case stays charged")
        return reserved


def _request_of(event: Any) -> Mapping[str, Any] | None:
    """The JSON body of an API call (an SDK call's keyword arguments less its options)."""
    request = getattr(event, "request", None)
    if not isinstance(request, Mapping):
        return None
    return request_body(request) if isinstance(event, SDKCall) else request


def _answer_of(result: Any) -> Any:
    """A decoded answer as a mapping: SDK objects (pydantic, raw responses) are dumped."""
    if result is None or isinstance(result, Mapping):
        return result
    try:
        if not hasattr(result, "usage") and callable(getattr(result, "parse", None)):
            result = result.parse()  # with_raw_response: the SDK caches the parsed body
        dump = getattr(result, "model_dump", None)
        return dump() if callable(dump) else None
    except Exception:  # an answer we cannot read is charged at its worst case
        logger.debug("could not read the usage of an SDK answer", exc_info=True)
        return None


__all__ = ["DEFAULT_SHARED_WAIT", "BudgetAdmission"]
