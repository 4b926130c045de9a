"""Progress of a batch run: a tqdm bar on a terminal, plain lines elsewhere.

Only lines actually sent count towards the rate and the ETA: lines a
previous run already answered, and invalid lines, shrink the total instead
(else a resumed run would show thousands of "requests" per second). Besides
the count the report shows failures, tokens and, when calls are queued
while fewer than ``concurrency`` are in flight, that the run is waiting on a
limit (requests, tokens, or the adaptive concurrency) and for how
long.

Without a terminal (CI logs, ``nohup``, Kubernetes) a bar would be noise:
one plain line is printed every ``interval`` seconds instead.

Example:
    >>> state = ProgressState(total=10, done=4, failed=1, tokens=900, elapsed=2.0)
    >>> plain_line(state)
    'apiexec: 4/10 sent, 1 failed, 2.0/s, ETA 3s, 900 tokens'
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Final

#: Seconds between plain progress lines by default.
DEFAULT_PROGRESS_INTERVAL: Final = 10.0
#: Seconds between refreshes of a terminal bar.
BAR_REFRESH: Final = 0.5


@dataclass(frozen=True, kw_only=True)
class ProgressState:
    """A snapshot of a run, for display.

    Attributes:
        total: Lines still to send in this run (None when unknown: stdin, gzip).
        done: Sent lines finished (answered or failed).
        failed: Of those, failures.
        skipped: Lines not sent: already done, or invalid.
        tokens: Tokens the answers report.
        cost: Dollars the answers cost so far (earlier runs included), or None.
        elapsed: Seconds since the first line was sent.
        waiting: Seconds the run has been waiting on a limit, or None.
        concurrency: The adaptive limit on calls in flight, or None.
    """

    total: int | None = None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    tokens: int = 0
    cost: float | None = None
    elapsed: float = 0.0
    waiting: float | None = None
    concurrency: float | None = None


def plain_line(state: ProgressState) -> str:
    """One line describing ``state``."""
    total = f"/{state.total}" if state.total is not None else ""
    parts = [f"apiexec: {state.done}{total} sent"]
    if state.skipped:
        parts.append(f"{state.skipped} skipped")
    parts.append(f"{state.failed} failed")
    rate = state.done / state.elapsed if state.elapsed > 0 else 0.0
    parts.append(f"{rate:.1f}/s")
    if state.total is not None and rate > 0:
        parts.append(f"ETA {_duration(max(state.total - state.done, 0) / rate)}")
    parts.append(f"{state.tokens} tokens")
    if state.cost is not None:
        parts.append(f"${state.cost:.4f}" if state.cost >= 0.01 else f"${state.cost:.6f}")
    if state.concurrency is not None:
        parts.append(f"concurrency {state.concurrency:.0f}")
    if state.waiting is not None:
        parts.append(f"waiting on a limit for {_duration(state.waiting)}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _columns(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class Progress:
    """Reports a run's progress from a thread of its own until closed.

    Args:
        mode: ``"bar"`` (tqdm), ``"lines"`` (plain lines) or ``"off"``.
        state: Returns the current :class:`ProgressState`.
        stream: Where to write (standard error).
        interval: Seconds between plain lines.
    """

    def __init__(
        self, mode: str, state: Callable[[], ProgressState], stream: IO[str], interval: float = DEFAULT_PROGRESS_INTERVAL
    ) -> None:
        self._mode = mode
        self._state = state
        self._stream = stream
        self._interval = interval
        self._stop = threading.Event()
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if mode == "off":
            return
        if mode == "bar":
            from tqdm.auto import tqdm

            # A terminal that reports no size (some CI or `docker -t` ptys) would get a
            # zero-width bar, i.e. nothing: give it a fixed width instead.
            sized = _columns(stream) > 0
            size: dict[str, Any] = {"dynamic_ncols": True} if sized else {"ncols": 100, "nrows": 20}
            self._bar = tqdm(total=None, unit="req", smoothing=0.1, file=stream, **size)
        self._thread = threading.Thread(target=self._loop, name="apiexec-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = BAR_REFRESH if self._bar is not None else self._interval
        # A timed wait on the stop event: it is the report's period, and close() ends it at once.
        while not self._stop.wait(period):
            try:
                self._report()
            except (OSError, ValueError):  # stderr closed (a pipe to `head`): stop reporting, not the run
                return

    def _report(self) -> None:
        state = self._state()
        if self._bar is None:
            print(plain_line(state), file=self._stream, flush=True)
            return
        bar = self._bar
        bar.total = state.total
        if state.done > bar.n:
            bar.update(state.done - bar.n)
        postfix = {"failed": state.failed, "tokens": state.tokens}
        if state.cost is not None:
            postfix["cost"] = f"${state.cost:.4f}" if state.cost >= 0.01 else f"${state.cost:.6f}"  # type: ignore[assignment]
        if state.skipped:
            postfix["skipped"] = state.skipped
        if state.concurrency is not None:
            postfix["concurrency"] = round(state.concurrency)
        if state.waiting is not None:
            postfix["waiting on limit"] = _duration(state.waiting)  # type: ignore[assignment]
        bar.set_postfix(postfix, refresh=True)

    def close(self) -> None:
        """Stop reporting (a last report first). Safe twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        if self._bar is not None:
            self._report()
            self._bar.close()
