"""Lanes: a slow model's lines never take the whole run's window.

A run keeps at most ``window`` lines in the executor at once. Lines of a
model held back by its limit (its own buckets, a 429 pause) wait there; read
in file order, they would soon fill the whole window and the other models'
lines behind them would wait too, although nothing limits those. So lines
are submitted by *lane* (one per model, or per endpoint path): while other
lanes have lines to send, one lane holds at most half of the window, and
lines of a full lane are held back (up to ``hold`` of them, in memory) while
the reader goes on to the next lines. Within a lane, lines keep their order;
across lanes, the earliest line that may go goes first.

Example:
    >>> lanes = Lanes(window=4, wait=lambda ready: None)
    >>> sent = []
    >>> for model in ["slow"] * 5 + ["fast"]:
    ...     _ = lanes.offer(model, model, lambda item: sent.append(item) or True)
    >>> sent                     # slow alone may take the whole window (4)...
    ['slow', 'slow', 'slow', 'slow']
    >>> lanes.done("slow")         # two lanes now: mixed
    True
    >>> lanes.pump(lambda item: sent.append(item) or True)   # ...not once fast waits
    True
    >>> sent[4:]
    ['fast']
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

#: Lines held back at most, by default, before the reader waits.
DEFAULT_HOLD: Final = 4096

#: Submits one line; False when the run must stop.
Send = Callable[[Any], bool]


def line_key(body: Any, path: str | None) -> str:
    """The lane of a line: its model, else its endpoint path, else ``"*"``."""
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and model:
        return model
    return path or "*"


class Lanes:
    """Lines submitted by lane, inside one window.

    Args:
        window: Most lines in the executor at once (all lanes).
        wait: Blocks until ``ready()`` is true; called with ``ready``. (The
            run's ``wait_until``: every finished line wakes it.)
        halted: True once the run stops admitting lines (then nothing more
            is sent and every wait ends).
        hold: Most lines held back before :meth:`offer` waits for room.
    """

    def __init__(
        self,
        window: int,
        wait: Callable[[Callable[[], bool]], None],
        *,
        halted: Callable[[], bool] = lambda: False,
        hold: int = DEFAULT_HOLD,
    ) -> None:
        self.window = window
        self._wait = wait
        self._hold = max(hold, window)
        self._held: dict[str, deque[tuple[int, Any]]] = {}
        self._busy: dict[str, int] = {}
        self._count = 0  # lines held back
        self._in_window = 0
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._halted = halted
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Nothing more is sent (``send`` said stop, or the run halted)."""
        return self._stopped or self._halted()

    @property
    def mixed(self) -> bool:
        """More than one lane has lines in the window or held back."""
        with self._lock:
            return self._mixed()

    def _mixed(self) -> bool:
        """:attr:`mixed`, the lock held."""
        return len(self._busy) + len(self._held) > 1 and len(self._busy.keys() | self._held.keys()) > 1

    def _share(self, active_lanes: int) -> int:
        """Places one lane may take: the whole window alone, half of it beside others."""
        return self.window if active_lanes <= 1 else max(1, self.window // 2)

    @property
    def held(self) -> int:
        """Lines held back now."""
        return self._count

    def offer(self, key: str, item: Any, send: Send) -> bool:
        """Queue ``item`` in lane ``key`` and send whatever may go; False to stop.

        Waits only while :attr:`held` is at the bound.
        """
        if self._take_at_once(key):  # the common case: nothing held, room in the window
            if not send(item):
                self.done(key)
                self._stopped = True
                return False
            return not self.stopped
        with self._lock:
            self._held.setdefault(key, deque()).append((next(self._order), item))
            self._count += 1
        if not self.pump(send):
            return False
        # Full is judged after each pump: one that sent every held line leaves
        # nothing to wait for (waiting then for a held line to go would never end).
        while self._count >= self._hold and not self.stopped:
            self._wait(lambda: self.stopped or self._pick(peek=True) is not None)
            if not self.pump(send):
                return False
        return not self.stopped

    def drain(self, send: Send) -> bool:
        """Send every held line, waiting for room; False if the run stopped."""
        while self._count and not self.stopped:
            self._wait(lambda: self.stopped or self._pick(peek=True) is not None)
            if not self.pump(send):
                return False
        return not self.stopped

    def pump(self, send: Send) -> bool:
        """Send every held line that may go now; False if ``send`` said stop."""
        while not self.stopped:
            picked = self._pick()
            if picked is None:
                return True
            key, item = picked
            if not send(item):
                self.done(key)
                self._stopped = True
                return False
        return False

    def done(self, key: str) -> bool:
        """A line of lane ``key`` left the window (its call ended); returns :attr:`mixed`."""
        with self._lock:
            self._busy[key] -= 1
            self._in_window -= 1
            if not self._busy[key]:
                del self._busy[key]
            return self._mixed()

    def _take_at_once(self, key: str) -> bool:
        """Give lane ``key`` a place now if no line is held and the lane may have one."""
        if self.stopped:
            return False
        with self._lock:
            if self._count or self._in_window >= self.window:
                return False
            busy = self._busy.get(key, 0)
            if busy >= self._share(len(self._busy) + (not busy)):
                return False
            self._busy[key] = busy + 1
            self._in_window += 1
            return True

    def _pick(self, *, peek: bool = False) -> tuple[str, Any] | None:
        """The earliest held line whose lane may take a place (taken unless ``peek``)."""
        with self._lock:
            if self._in_window >= self.window:
                return None
            lanes = [key for key, held in self._held.items() if held]
            active = set(lanes) | set(self._busy)
            share = self._share(len(active))
            best: str | None = None
            for key in lanes:
                if self._busy.get(key, 0) < share and (best is None or self._held[key][0][0] < self._held[best][0][0]):
                    best = key
            if best is None or peek:
                return None if best is None else (best, None)
            _, item = self._held[best].popleft()
            if not self._held[best]:
                del self._held[best]
            self._count -= 1
            self._busy[best] = self._busy.get(best, 0) + 1
            self._in_window += 1
            return best, item


__all__ = ["DEFAULT_HOLD", "Lanes", "line_key"]
