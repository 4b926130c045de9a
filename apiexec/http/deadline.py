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
polls. It is a daemon thread, restarted lazily after ``fork()``.

Example:
    >>> deadline = CallDeadline(total_timeout=30.0)
    >>> 29.0 < deadline.left() <= 30.0
    True
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
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
        self.generation = 0
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
        with self._watchdog.lock:
            if self.deadline_at is not None or self.connection is not None:
                self._watchdog.stale += 1
            self.generation += 1
            self.connection = self.sock = None


class Watchdog:
    """One thread that fires due alarms, earliest first.

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
        self._heap: list[tuple[float, int, int, Alarm]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        #: Heap entries known to be dead (cancelled or rescheduled alarms).
        self.stale = 0

    def now(self) -> float:
        """The watchdog's clock."""
        return self._clock.now()

    def alarm(self, deadline: CallDeadline | None = None) -> Alarm:
        """A new, unscheduled alarm for a call with ``deadline``."""
        return Alarm(self, deadline)

    def schedule(self, alarm: Alarm, when: float, reason: str) -> None:
        with self.lock:
            if alarm.generation:
                self.stale += 1  # its earlier entry (if any) is dead now
            self._compact()
            alarm.generation += 1
            alarm.reason = reason
            entry = (when, next(self._seq), alarm.generation, alarm)
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="apiexec-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:  # due before everything else: the thread must wait less
                self._due.notify()

    def _compact(self) -> None:
        """Drop dead entries once they are most of the heap (lock held).

        Cancelled alarms are left in the heap (removing one is O(n)); without
        this, a busy process would keep one entry per call for a whole
        ``total_timeout``. Amortised O(1) per alarm.
        """
        if self.stale > 1024 and self.stale * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[3].generation == entry[2]]
            heapq.heapify(self._heap)
            self.stale = 0

    def pending(self) -> int:
        """Entries in the heap, dead ones included (for tests and metrics)."""
        with self.lock:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self.lock:
                alarm = self._next_due()
                if alarm is None:
                    continue
                alarm.fired = alarm.reason
                sock = alarm.sock
            if sock is not None:
                _shutdown(sock)

    def _next_due(self) -> Alarm | None:
        """Block (lock held) until an alarm is due; None when woken to re-check."""
        while self._heap and self._heap[0][3].generation != self._heap[0][2]:
            heapq.heappop(self._heap)  # cancelled or rescheduled
        if not self._heap:
            self._due.wait()
            return None
        delay = self._heap[0][0] - self._clock.now()
        if delay > 0:
            self._due.wait(delay)
            return None
        return heapq.heappop(self._heap)[3]

    def _after_fork(self) -> None:
        self.lock = threading.Lock()
        self._due = threading.Condition(self.lock)
        self._heap = []
        self._thread = None
        self.stale = 0


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
