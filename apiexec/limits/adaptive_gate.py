"""The adaptive concurrency gate, and the admission policy built on it.

:class:`ConcurrencyGate` lets a call start only while fewer calls than the
adaptive limit are in flight (in this process, or in every process sharing
the store); callers wait in FIFO order on a condition that every release and
every increase of the limit notifies. :class:`AdaptiveAdmission` is the
executor's policy around it (it follows the
:class:`~apiexec.execution.admission.Admission` protocol without importing
the execution layer): a slot is taken in ``admit`` and given back in
``settle``/``release``; every response feeds the rules
(:mod:`apiexec.limits.adaptive`): a success with its latency, or an overload.

Overload signals: 502, 503, 504 and 529 responses; a 429 that names no rate
limit (a 429 *with* rate-limit headers is the rate limiter's business, not a
sign that the server is overloaded); an attempt that got no response at all
(connection reset or refused, a timeout) — seen when the call retries, or
when it ends, without a response since its last attempt began.

Example:
    >>> from apiexec.limits.adaptive import AIMD
    >>> from apiexec.limits.adaptive_store import MemoryAdaptiveStore
    >>> policy = AdaptiveAdmission(MemoryAdaptiveStore(AIMD(max_limit=8, initial=2)), AIMD(max_limit=8, initial=2))
    >>> stop = threading.Event()
    >>> policy.admit(object(), stop=stop, deadline=None), policy.in_flight
    (0, 1)
    >>> policy.observe(503, {}); policy.limit   # the first overload halves
    1.0
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import apiexec.clock as clock
from apiexec.call_context import check_deadline, time_left
from apiexec.errors import DeadlineExceeded, StorageError
from apiexec.limits.adaptive import AIMD, AIMDState
from apiexec.limits.adaptive_store import AdaptiveStore

logger = logging.getLogger(__name__)

#: Statuses that mean "too much load" (529: Anthropic's "overloaded").
OVERLOAD_STATUSES: Final = frozenset({502, 503, 504, 529})

#: Bounds of the re-check period of a wait on a shared store: other processes'
#: releases cannot notify this one, so a waiter re-reads the store about twice
#: per call latency (within these bounds).
SHARED_RECHECK_MIN: Final = 0.01
SHARED_RECHECK_MAX: Final = 0.25


def _never(headers: Mapping[str, str]) -> bool:
    return False


class ConcurrencyGate:
    """Slots below an adaptive limit, waited for in order.

    Args:
        store: Where the limit and the calls in flight live.
        rules: The AIMD rules applied to what calls report.
        waiter: Blocks on the gate's condition (a FakeClock in tests).
        max_wait: Longest single wait before re-checking cancellation.
    """

    def __init__(
        self, store: AdaptiveStore, rules: AIMD, *, waiter: clock.Waiter = clock.REAL, max_wait: float = 1.0
    ) -> None:
        self.store = store
        self.rules = rules
        self.waiter = waiter
        self._max_wait = max_wait
        self._lock = threading.Lock()
        # One condition per waiting call, in arrival order, all on ``_lock``:
        # a freed slot wakes the head only (notify_all woke every waiter on
        # every completion, and all but one went back to sleep).
        self._waiters: deque[threading.Condition] = deque()

    def __repr__(self) -> str:
        return f"ConcurrencyGate({self.store!r}, {self.rules!r})"

    def acquire(self, cancelled: Callable[[], bool], deadline: float | None = None) -> bool:
        """Block until a slot is taken (True), or cancelled / past ``deadline`` (False).

        Raises:
            StorageError: A shared store failed.
        """
        with self._lock:
            if not self._waiters and not cancelled() and self.store.try_acquire():
                return True  # nobody ahead and a slot free: no ticket
            # (Queued, it tries again at once: a release between the two tries saw no waiter to wake.)
            ticket = threading.Condition(self._lock)
            self._waiters.append(ticket)
            try:
                while not cancelled():
                    if self._waiters[0] is ticket and self.store.try_acquire():
                        return True
                    wait = self._recheck()
                    if deadline is not None:
                        left = deadline - self.waiter.now()
                        if left <= 0:
                            return False
                        wait = min(wait, left)
                    self.waiter.wait(ticket, wait)
                return False
            finally:
                self._waiters.remove(ticket)
                if self._waiters:  # the next in line may find a slot too
                    self._waiters[0].notify()

    def _recheck(self) -> float:
        if not self.store.shared:
            return self._max_wait  # a local release or increase notifies: this is only the shutdown re-check
        state, _ = self.store.read()
        latency = state.short_latency or SHARED_RECHECK_MAX
        return min(self._max_wait, max(SHARED_RECHECK_MIN, min(SHARED_RECHECK_MAX, latency / 2)))

    def release(self) -> None:
        """Give a slot back and wake the next waiter."""
        self.store.release()
        self.wake()

    def success(self, latency: float | None) -> AIMDState:
        """A call succeeded after ``latency`` s: maybe grow the limit."""
        rules = self.rules

        def grow(state: AIMDState, now: float, in_flight: int) -> AIMDState:
            return rules.on_success(state, latency=latency, in_flight=in_flight, now=now)

        state = self.store.update(grow)
        self.wake()
        return state

    def overload(self, why: str) -> AIMDState:
        """The server showed overload: shrink the limit (once per round trip)."""
        rules = self.rules

        def shrink(state: AIMDState, now: float, in_flight: int) -> AIMDState:
            return rules.on_overload(state, now=now)

        before, _ = self.store.read()
        state = self.store.update(shrink)
        if state.limit < before.limit:
            logger.info("adaptive concurrency: %s; limit %.1f -> %.1f", why, before.limit, state.limit)
        return state

    def wake(self) -> None:
        """Wake the first waiter to re-check (it wakes the next once it is done)."""
        if not self._waiters:
            return  # nobody waits: no lock taken (a waiter that joins later checks the store itself)
        with self._lock:
            if self._waiters:
                self._waiters[0].notify()

    def after_fork(self) -> None:
        """Fresh locks in a forked child."""
        self._lock = threading.Lock()
        self._waiters = deque()
        self.store.after_fork()


class _Call(threading.local):
    """What this worker thread's current call has shown so far."""

    held = False  # a slot is taken
    admitted = False  # between admit and settle/release (a retry may need a slot again)
    started = 0.0  # when the current attempt began
    responded = False  # the current attempt got a response


class AdaptiveAdmission:
    """Admission policy: calls in flight stay below an adaptive limit.

    Args:
        store: Where the limit lives (memory, or shared through SQLite/Redis).
        rules: The AIMD rules (``max_limit`` is the upper bound).
        waiter: Clock and blocking (a FakeClock in tests).
        max_wait: Longest single wait before re-checking shutdown.
        names_rate_limit: True for the headers of a 429 that states a rate
            limit (then the 429 is not an overload signal).

    Raises:
        DeadlineExceeded: (from ``admit``) the call's deadline passed while
            it waited for a slot.
        StorageError: (from ``admit``) a shared store failed.
    """

    blocking = False  # waiters queue on the gate's own condition, in order

    def __init__(
        self,
        store: AdaptiveStore,
        rules: AIMD,
        *,
        waiter: clock.Waiter = clock.REAL,
        max_wait: float = 1.0,
        names_rate_limit: Callable[[Mapping[str, str]], bool] = _never,
    ) -> None:
        self.gate = ConcurrencyGate(store, rules, waiter=waiter, max_wait=max_wait)
        self._names_rate_limit = names_rate_limit
        self._call = _Call()
        self._last_limit = rules.start().limit

    def __repr__(self) -> str:
        return f"AdaptiveAdmission(limit={self.limit:.1f}, max={self.gate.rules.max_limit:g})"

    @property
    def limit(self) -> float:
        """The current limit (calls allowed in flight); the last known one while the storage fails."""
        try:
            self._last_limit = self.gate.store.read()[0].limit
        except StorageError:
            pass
        return self._last_limit

    @property
    def in_flight(self) -> int:
        """Calls in flight (every process sharing the store)."""
        return self.gate.store.read()[1]

    def admit(self, event: Any, *, stop: threading.Event, deadline: float | None) -> int | None:
        """Wait for a slot below the limit."""
        call = self._call
        if call.held:  # the previous call on this thread ended without settle(): give its slot back
            self._give_back()
        call.admitted = False
        if self.gate.acquire(stop.is_set, deadline):
            call.held = call.admitted = True
            self._begin_attempt()
            return 0
        if stop.is_set():
            return None
        raise DeadlineExceeded("admission", getattr(event, "timeout", None) or 0.0)

    def admit_retry(self, stop: threading.Event) -> bool:
        """A retry takes a slot below the current limit, in line with new calls.

        After an overload the call kept its slot through the backoff (so that
        no other call walked into the same overload); the limit has shrunk
        since, so the retry gives it back and waits its turn like a new call.
        An attempt that got no response at all was an overload too.

        Raises:
            DeadlineExceeded: The call's deadline passed while it waited.
        """
        call = self._call
        if call.held and not call.responded:
            self._signal(self.gate.overload, "a call got no response (connection failure or timeout)")
        if call.held:
            self._give_back()
        if call.admitted:
            left = time_left(self.gate.waiter)
            deadline = None if left is None else self.gate.waiter.now() + left
            if not self.gate.acquire(stop.is_set, deadline):
                if not stop.is_set():
                    check_deadline("retry", self.gate.waiter)
                return False
            call.held = True
        self._begin_attempt()
        return not stop.is_set()

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Feed the rules: a success with its latency, or an overload."""
        call = self._call
        if not call.held:
            return
        call.responded = True
        if status_code in OVERLOAD_STATUSES:
            self._signal(self.gate.overload, f"the server answered {status_code}")
        elif status_code == 429 and not self._names_rate_limit(headers):
            self._signal(self.gate.overload, "the server answered 429 without a rate limit")
        elif not 200 <= status_code < 300:
            # A call waiting to retry (a rate limit's retry-after, a backoff) is not
            # in flight: its slot goes to another call until the retry takes one
            # again. Not after an overload: a slot freed at once would let the next
            # call into the same overload, over and over within one round trip.
            self._give_back()
        else:
            self._signal(self.gate.success, self.gate.waiter.now() - call.started)

    def settle(self, event: Any, reserved: int) -> None:
        """Give the slot back; a call that ended without a response was an overload."""
        call = self._call
        call.admitted = False
        if not call.held:
            return
        if not call.responded and _failed(event):
            self._signal(self.gate.overload, "a call got no response (connection failure or timeout)")
        self._give_back()

    def release(self, event: Any, reserved: int) -> None:
        """An admitted call will not run: give its slot back."""
        self._call.admitted = False
        if self._call.held:
            self._give_back()

    def wake(self) -> None:
        """Wake every waiter (shutdown)."""
        self.gate.wake()

    def after_fork(self) -> None:
        """Fresh locks; the parent's calls in flight are not the child's."""
        self.gate.after_fork()
        self._call = _Call()

    def _begin_attempt(self) -> None:
        self._call.started = self.gate.waiter.now()
        self._call.responded = False

    def _give_back(self) -> None:
        self._call.held = False
        self._signal(lambda _: self.gate.release(), None)

    def _signal(self, apply: Callable[[Any], Any], argument: Any) -> None:
        """Bookkeeping after a response must never lose the response.

        A shared store that fails here is logged; a slot it could not take
        back returns when this process's lease expires.
        """
        try:
            apply(argument)
        except StorageError as exc:
            logger.warning("adaptive concurrency not updated: %s", exc)


def _failed(event: Any) -> bool:
    """Whether the event's execution says it failed (events without one: no)."""
    status = getattr(getattr(event, "execution", None), "status", None)
    return getattr(status, "value", status) == "failed"


__all__ = ["OVERLOAD_STATUSES", "AdaptiveAdmission", "ConcurrencyGate"]
