"""Always-on, cheap counters of an executor's work.

A few integer additions under one lock per call, and bounded samples of
latencies and admission waits for percentiles. ``snapshot()`` is what a
service exports (see :mod:`apiexec.execution.prometheus` for Prometheus).

Example:
    >>> m = Metrics()
    >>> m.record_finish("completed", latency=0.25, attempts=2)
    >>> m.snapshot()["retries"]
    1
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, Final

#: Latencies kept for percentiles (the most recent ones).
LATENCY_SAMPLE: Final = 10_000


class Metrics:
    """Counts by status, retries, 429s, tokens reserved vs used, latencies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: collections.Counter[str] = collections.Counter()
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLE)
        self._admission_waits: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLE)
        self._gauges: dict[str, Callable[[], float]] = {}
        self.started = 0
        self.admission_wait_total = 0.0
        self.retries = 0
        self.responses = 0
        self.rate_limited = 0
        self.tokens_reserved = 0
        self.tokens_used = 0

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Report ``read()`` as ``name`` in every snapshot (e.g. queue depth)."""
        with self._lock:
            self._gauges[name] = read

    def after_fork(self) -> None:
        """A fresh lock in a forked child (the parent's may be held)."""
        self._lock = threading.Lock()

    def record_start(self, admission_wait: float) -> None:
        """Count one call admitted after ``admission_wait`` s (in flight until it ends)."""
        with self._lock:
            self.started += 1
            self._admission_waits.append(admission_wait)
            self.admission_wait_total += admission_wait

    def record_finish(
        self,
        status: str,
        *,
        latency: float | None = None,
        attempts: int | None = None,
        reserved: int = 0,
        used: int | None = None,
    ) -> None:
        """Count one event reaching a terminal status, with its tokens."""
        with self._lock:
            self._status[status] += 1
            self.tokens_reserved += reserved
            if used is not None:
                self.tokens_used += used
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
            waits = sorted(self._admission_waits)
            finished_after_start = self._status["completed"] + self._status["failed"]
            gauges = dict(self._gauges)
            figures: dict[str, Any] = {
                "completed": self._status["completed"],
                "failed": self._status["failed"],
                "cancelled": self._status["cancelled"],
                "in_flight": max(0, self.started - finished_after_start),
                "admission_wait_total": self.admission_wait_total,
                "admission_wait_p50": _percentile(waits, 0.50),
                "admission_wait_p99": _percentile(waits, 0.99),
                "retries": self.retries,
                "responses": self.responses,
                "rate_limited": self.rate_limited,
                "tokens_reserved": self.tokens_reserved,
                "tokens_used": self.tokens_used,
                "latency_p50": _percentile(latencies, 0.50),
                "latency_p90": _percentile(latencies, 0.90),
                "latency_p99": _percentile(latencies, 0.99),
            }
        for name, read in gauges.items():  # outside the lock: a gauge may take its own
            figures[name] = read()
        return figures


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
