"""Thread fit: how many worker threads run at once, as few as keep the pace.

Python runs one thread's bytecode at a time (the GIL). While calls wait on a
server, more threads mean more calls in flight; once the client itself is
the bottleneck (a fast local server, a cache, a CPU-heavy answer), every
extra runnable thread only adds GIL hand-offs and context switches. Against
an instant server, one thread did a batch line with 38 % less CPU than 16
(``docs/benchmarks.md``).

:class:`ThreadFit` decides, epoch by epoch (:data:`EPOCH` s), how many of the
executor's worker threads may take calls (the others wait, parked, holding
nothing). It is hill climbing on throughput, as the .NET thread pool does
(Fuentes et al., "Optimizing concurrency levels in the .NET ThreadPool",
2008), behind one plain rule:

* **The process waits** (its CPU time is below :data:`BUSY_LOW` of the wall
  time: a slow server, a rate limit, a stalled call): threads cost nothing
  while they wait, so all of them may run, at once. (Right after a move to
  fewer threads, waiting means the move did not pay: the few left were
  stuck, e.g. on one model's rate limit, while others could have run.)
* **The process is busy**: try fewer threads — one thread first (against
  an instant server the best by far: two or four gain little over sixteen),
  then half as many each time; keep a move if the calls finished per second
  stay within :data:`DOWN_TOLERANCE` (fewer threads, same pace, less CPU),
  else go back and wait before trying again (1, 2, 4 ... :data:`MAX_HOLD`
  epochs). Below :data:`BUSY_HIGH` it tries twice as many instead, kept
  only for a gain of :data:`UP_GAIN`.

The decisions are a pure function of the clocks it is given (tests drive a
fake one).

Example:
    >>> now, cpu = [0.0], [0.0]
    >>> fit = ThreadFit(16, now=lambda: now[0], cpu=lambda: cpu[0])
    >>> now[0] = cpu[0] = 0.5           # an epoch, the CPU busy all of it
    >>> fit.decide(done=400)            # try one thread
    1
    >>> now[0] = cpu[0] = 1.0
    >>> fit.decide(done=600)            # a slower pace: back to 16...
    16
    >>> now[0] = cpu[0] = 1.5
    >>> fit.decide(done=1000)           # ...for an epoch...
    16
    >>> now[0] = cpu[0] = 2.0
    >>> fit.decide(done=1400)           # ...then half as many
    8
    >>> now[0], cpu[0] = 2.5, 2.1       # the process now mostly waits
    >>> fit.decide(done=1440)           # every thread may run again
    16
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

#: Seconds per decision.
EPOCH: Final = 0.5
#: CPU time / wall time below which the process is waiting, not working.
BUSY_LOW: Final = 0.6
#: CPU time / wall time from which fewer threads are tried (else more).
BUSY_HIGH: Final = 0.9
#: Fewer threads are kept when the pace drops by at most this fraction.
DOWN_TOLERANCE: Final = 0.05
#: More threads are kept only when the pace rises by at least this fraction.
UP_GAIN: Final = 0.05
#: Calls an epoch needs before its pace is compared (else it goes on).
MIN_CALLS: Final = 20
#: Most epochs to wait after a move that did not pay, before the next try.
MAX_HOLD: Final = 32


class ThreadFit:
    """The number of worker threads allowed to take calls now.

    Not thread-safe by itself: the runtime calls :meth:`decide` under its lock.

    Args:
        ceiling: Most threads (the executor's worker count).
        epoch: Seconds per decision.
        now: Wall clock (monotonic seconds).
        cpu: The process's CPU time in seconds (all threads).
    """

    def __init__(
        self,
        ceiling: int,
        *,
        epoch: float = EPOCH,
        now: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.ceiling = max(1, ceiling)
        #: Threads allowed to take calls now.
        self.allowed = self.ceiling
        self.epoch = epoch
        self.now = now
        self._cpu = cpu
        self._start = (now(), cpu(), 0)  # wall, CPU, calls done at the epoch's start
        self._next = self._start[0] + epoch  # when the next decision is due
        self._trial: tuple[int, float] | None = None  # (allowed before the move, its pace)
        self._hold = 0  # epochs to wait before the next move
        self._backoff = 1  # the next hold after a move that did not pay
        self._one_failed = False  # one thread was tried and was slower: halve instead

    def __repr__(self) -> str:
        return f"ThreadFit(allowed={self.allowed}, ceiling={self.ceiling})"

    def due(self, now: float) -> bool:
        """True when the next decision is due (time for :meth:`decide`)."""
        return now >= self._next

    def left(self, now: float) -> float:
        """Seconds until the next decision is due (at least a millisecond)."""
        return max(0.001, self._next - now)

    def decide(self, done: int) -> int:
        """End the epoch if it is over; return the threads allowed now.

        Args:
            done: Calls finished since the executor started (a running count).
        """
        now = self.now()
        if not self.due(now):
            return self.allowed
        cpu = self._cpu()
        wall = now - self._start[0]
        busy = (cpu - self._start[1]) / wall
        calls = done - self._start[2]
        self._next = now + self.epoch
        if busy >= BUSY_LOW and 0 < calls < MIN_CALLS:
            return self.allowed  # busy, yet too few calls to compare a pace: measure on, decide later
        self._start = (now, cpu, done)
        before = self.allowed
        trial_down = self._trial is not None and self.allowed < self._trial[0]
        if not trial_down and (busy < BUSY_LOW or not calls):
            self._reset()  # the process waits, or its calls are stuck: every thread
        else:
            self._climb(calls / wall, busy)
        if self.allowed != before:
            logger.debug("thread fit: %d -> %d threads (busy %.2f, %d calls)", before, self.allowed, busy, calls)
        return self.allowed

    def _reset(self) -> None:
        """The process waits: every thread may run.

        What the climb learnt stays (the hold, its growth, whether one
        thread was too slow): a server that keeps pausing one model must not
        make it try one thread again every other epoch.
        """
        self.allowed = self.ceiling
        self._trial = None

    def _climb(self, pace: float, busy: float) -> None:
        """One step of hill climbing on ``pace`` (calls per second)."""
        if self._trial is not None:
            before, before_pace = self._trial
            self._trial = None
            went_down = self.allowed < before
            if went_down:  # (a process left waiting by fewer threads: e.g. the one left waits for its model)
                paid = busy >= BUSY_LOW and pace >= before_pace * (1 - DOWN_TOLERANCE)
            else:
                paid = pace >= before_pace * (1 + UP_GAIN)
            if not paid:
                self._one_failed = self._one_failed or self.allowed == 1
                self.allowed = before
                self._hold = self._backoff
                self._backoff = min(2 * self._backoff, MAX_HOLD)
                return
            self._move(down=went_down, pace=pace)  # it paid: the same way again (the hold stays: noise pays too)
            return
        if self._hold:
            self._hold -= 1
            return
        self._move(down=busy >= BUSY_HIGH, pace=pace)

    def _move(self, *, down: bool, pace: float) -> None:
        halved = max(1, self.allowed // 2) if self._one_failed else 1  # one thread first
        target = halved if down else min(self.ceiling, 2 * self.allowed)
        if target != self.allowed:
            self._trial = (self.allowed, pace)
            self.allowed = target


__all__ = ["BUSY_HIGH", "BUSY_LOW", "DOWN_TOLERANCE", "EPOCH", "MAX_HOLD", "MIN_CALLS", "UP_GAIN", "ThreadFit"]
