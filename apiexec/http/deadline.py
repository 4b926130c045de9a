"""A call's total deadline, and the watchdog that enforces it on sockets.

A read timeout bounds one ``recv``; a server that sends one byte every half
second never trips it. So every call also has a total deadline: the earlier
of ``EndpointConfig.total_timeout`` (from the call's start) and the
executor's deadline for the call (:func:`apiexec.call_context.time_left`).

Checks between steps (before an attempt, between body chunks) catch most
overruns. What they cannot catch is a read blocked inside ``http.client``
(headers or a body trickling in). For that, an attempt arms an
:class:`Alarm`; the session's connections attach their socket to the alarm
of the attempt running on their thread (see :mod:`apiexec.http.session`),
and one :class:`Watchdog` thread shuts the socket down when the alarm's time
comes, which ends the blocked read at once. The reader then asks
``alarm.fired`` and reports :class:`~apiexec.errors.DeadlineExceeded` (or a
stream's idle timeout) instead of a broken connection. A connection given
back to the pool is detached first, so an alarm never touches a connection
another call is using.

The watchdog blocks on a condition until the earliest alarm is due; it never
polls. Arming an alarm that is not due before the watchdog's next look takes
no lock and wakes nothing (see :class:`Watchdog`). It is a daemon thread,
restarted lazily after ``fork()``.

Example:
    >>> deadline = CallDeadline(total_timeout=30.0)
    >>> 29.0 < deadline.left() <= 30.0
    True
"""

from __future__ import annotations

import contextvars
import math
import os
import socket
import threading
from typing import Any, Final

from apiexec.call_context import call_context
from apiexec.clock import REAL, Waiter
from apiexec.errors import DeadlineExceeded

#: The alarm of the attempt running in this context (read by connections).
CURRENT_ALARM: Final[contextvars.ContextVar[Alarm | None]] = contextvars.ContextVar(
    "apiexec_alarm", default=None
)


class CallDeadline:
    """When one call must be done: the earlier of its own and the executor's.

    Args:
        total_timeout: Seconds the call may take from now.
        waiter: The clock (tests inject a fake one).
    """

    def __init__(self, total_timeout: float, waiter: Waiter = REAL) -> None:
        self._waiter = waiter
        self.at = waiter.now() + total_timeout
        self.timeout = total_timeout
        with call_context() as ctx:  # joins the executor's context, if any
            if ctx.deadline is not None and ctx.deadline < self.at:
                self.at = ctx.deadline
                self.timeout = ctx.timeout if ctx.timeout is not None else total_timeout

    def left(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - self._waiter.now()

    def error(self, phase: str) -> DeadlineExceeded:
        """The error to raise when the deadline passed during ``phase``."""
        return DeadlineExceeded(phase, self.timeout)

    def check(self, phase: str) -> None:
        """Raise :class:`DeadlineExceeded` if no time is left.

        Raises:
            DeadlineExceeded: The deadline passed.
        """
        if self.left() <= 0:
            raise self.error(phase)

    def __repr__(self) -> str:
        return f"CallDeadline(left={self.left():.3f}s, timeout={self.timeout:g}s)"


class Alarm:
    """One attempt's alarm: shuts its attached connection down when due.

    ``reason`` says why it is set: ``"deadline"`` (the call's total deadline)
    or ``"idle"`` (a stream's limit for the next event). After it went off,
    ``fired`` holds that reason.

    Example:
        >>> alarm = WATCHDOG.alarm()
        >>> alarm.set(10**9, "deadline")   # far away
        >>> alarm.cancel(); alarm.fired is None
        True
    """

    __slots__ = ("_watchdog", "deadline", "connection", "sock", "sent", "fired", "reason", "when", "deadline_at")

    def __init__(self, watchdog: Watchdog, deadline: CallDeadline | None = None) -> None:
        self._watchdog = watchdog
        #: The call's deadline this alarm enforces.
        self.deadline = deadline
        self.connection: Any = None
        self.sock: Any = None
        #: The request went out (the connection waited for its response).
        self.sent = False
        self.fired: str | None = None
        self.reason = "deadline"
        #: Monotonic time the alarm goes off; None while not set.
        self.when: float | None = None
        #: Monotonic time of the call's deadline (caps socket timeouts).
        self.deadline_at: float | None = None

    def set(self, when: float, reason: str = "deadline") -> None:
        """(Re)schedule the alarm for monotonic time ``when``."""
        if reason == "deadline":
            self.deadline_at = when
        self._watchdog.schedule(self, when, reason)

    def seconds_left(self) -> float | None:
        """Seconds until the call's deadline, None when unknown."""
        return None if self.deadline_at is None else self.deadline_at - self._watchdog.now()

    def attach(self, connection: Any) -> None:
        """The connection whose socket to shut down (set by the session).

        Its socket is kept too: ``http.client`` drops ``connection.sock``
        when a response says ``Connection: close``, while the response goes
        on reading from the same socket.
        """
        with self._watchdog.lock:
            self.connection = connection
            self.sock = getattr(connection, "sock", None)
            self.sent = True
            fired = self.fired is not None
        if fired:  # already due: the read must not start
            _shutdown(self.sock)

    def detach(self, connection: Any) -> None:
        """Forget ``connection`` (it goes back to the pool)."""
        with self._watchdog.lock:
            if self.connection is connection:
                self.connection = self.sock = None

    def cancel(self) -> None:
        """Never go off; forget the connection. Safe twice."""
        with self._watchdog.lock:  # the watchdog fires under this lock: never after this
            self._watchdog.active.pop(self, None)
            self.when = None
            self.connection = self.sock = None


class Watchdog:
    """One thread that fires due alarms.

    Arming an alarm is cheap, because deadlines are far and calls are short:
    it joins the set of active alarms (no lock, no heap, no thread wake-up)
    unless it is due before the thread's next look (``_wake_at``), which is
    rare: the first alarm after an idle spell, or one shorter than those
    running. Cancelling drops it from the set. The thread sleeps on a
    condition until the earliest active alarm is due, then looks at the
    active alarms (as many as calls in flight): at most one look per
    deadline's length while every call ends in time, never a poll.

    Args:
        clock: The monotonic clock alarms are set on.

    Example:
        >>> dog = Watchdog()
        >>> dog.alarm().fired is None
        True
    """

    def __init__(self, clock: Waiter = REAL) -> None:
        self._clock = clock
        self.lock = threading.Lock()
        self._due = threading.Condition(self.lock)
        #: The alarms set and not cancelled nor fired (a dict: ordered, O(1) removal).
        self.active: dict[Alarm, None] = {}
        #: When the thread looks next at the latest; +inf while it is looking
        #: or not running (then whoever arms an alarm wakes it).
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        """The watchdog's clock."""
        return self._clock.now()

    def alarm(self, deadline: CallDeadline | None = None) -> Alarm:
        """A new, unscheduled alarm for a call with ``deadline``."""
        return Alarm(self, deadline)

    def schedule(self, alarm: Alarm, when: float, reason: str) -> None:
        """Arm ``alarm`` for ``when``; wake the thread only if it would look too late."""
        alarm.reason = reason
        alarm.when = when
        self.active[alarm] = None  # before reading _wake_at: the thread's look sees it, or we wake it
        if when >= self._wake_at:
            return
        with self.lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="apiexec-watchdog", daemon=True)
                self._thread.start()
            self._due.notify()

    def pending(self) -> int:
        """Alarms armed and not yet cancelled or fired (for tests and metrics)."""
        return len(self.active)

    def _run(self) -> None:
        socks: list[Any] = []
        while True:
            for sock in socks:
                _shutdown(sock)
            with self.lock:
                self._wake_at = math.inf  # looking: alarms armed from now on wake us
                now = self._clock.now()
                socks, earliest = self._fire_due(now)
                if socks:
                    continue  # shut them down outside the lock, then look again
                self._wake_at = earliest
                self._due.wait(None if earliest == math.inf else earliest - now)

    def _fire_due(self, now: float) -> tuple[list[Any], float]:
        """Fire every due alarm (lock held): their sockets, and when the next one is due."""
        socks: list[Any] = []
        earliest = math.inf
        for alarm in list(self.active):  # a copy: arming goes on without the lock
            when = alarm.when
            if when is None:
                continue
            if when <= now:
                self.active.pop(alarm, None)
                alarm.fired = alarm.reason
                if alarm.sock is not None:
                    socks.append(alarm.sock)
            elif when < earliest:
                earliest = when
        return socks, earliest

    def _after_fork(self) -> None:
        self.lock = threading.Lock()
        self._due = threading.Condition(self.lock)
        self.active = {}
        self._wake_at = math.inf
        self._thread = None


def _shutdown(sock: Any) -> None:
    """End every blocked read on the socket."""
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, also for an SSLSocket: its override
        # would tear down the TLS state under a reader in another thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass  # already closed, or not a real socket


#: The process-wide watchdog.
WATCHDOG: Final = Watchdog()

if hasattr(os, "register_at_fork"):  # the thread does not survive fork()
    os.register_at_fork(after_in_child=WATCHDOG._after_fork)
