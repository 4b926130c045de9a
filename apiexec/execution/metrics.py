"""Always-on, cheap counters of an executor's work.

A few integer additions under one lock per call, and a bounded sample of
latencies for percentiles.

Example:
    >>> m = Metrics()
    >>> m.record_finish("completed", latency=0.25, attempts=2)
    >>> m.snapshot()["retries"]
    1
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Final

#: Latencies kept for percentiles (the most recent ones).
LATENCY_SAMPLE: Final = 10_000


class Metrics:
    """Counts by status, retries, 429s, tokens reserved vs used, latencies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: collections.Counter[str] = collections.Counter()
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLE)
        self.retries = 0
        self.responses = 0
        self.rate_limited = 0
        self.tokens_reserved = 0
        self.tokens_used = 0

    def record_finish(self, status: str, *, latency: float | None = None, attempts: int | None = None) -> None:
        """Count one event reaching a terminal status."""
        with self._lock:
            self._status[status] += 1
            if latency is not None:
                self._latencies.append(latency)
            if isinstance(attempts, int) and attempts > 1:
                self.retries += attempts - 1

    def record_response(self, status_code: int) -> None:
        """Count one HTTP response (and a 429 among them)."""
        with self._lock:
            self.responses += 1
            if status_code == 429:
                self.rate_limited += 1

    def record_tokens(self, reserved: int, used: int | None) -> None:
        """Count tokens reserved at admission and reported used."""
        with self._lock:
            self.tokens_reserved += reserved
            if used is not None:
                self.tokens_used += used

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every figure, with latency percentiles (s)."""
        with self._lock:
            latencies = sorted(self._latencies)
            return {
                "completed": self._status["completed"],
                "failed": self._status["failed"],
                "cancelled": self._status["cancelled"],
                "retries": self.retries,
                "responses": self.responses,
                "rate_limited": self.rate_limited,
                "tokens_reserved": self.tokens_reserved,
                "tokens_used": self.tokens_used,
                "latency_p50": _percentile(latencies, 0.50),
                "latency_p90": _percentile(latencies, 0.90),
                "latency_p99": _percentile(latencies, 0.99),
            }


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
