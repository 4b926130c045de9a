"""What the mock server saw: :class:`MockServerStats` and its thread-safe recorder.

Example:
    >>> recorder = StatsRecorder(record_bodies=True)
    >>> recorder.request_started("/v1/chat/completions", b"{}")
    >>> recorder.request_finished(429)
    >>> snapshot = recorder.snapshot()
    >>> snapshot.requests, snapshot.rate_limited, snapshot.bodies
    (1, 1, [b'{}'])
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MockServerStats:
    """A snapshot of what the server saw since start or :meth:`MockServer.reset_stats`.

    A request is counted as answered (or dropped) just before its answer is
    written, so a client that has its response already sees it in the stats.

    Attributes:
        requests: Requests received (answered, failed or dropped).
        by_status: Count of answers per HTTP status.
        rate_limited: Count of 429 answers (limiter and faults).
        dropped: Requests whose socket was closed without an answer.
        connections: TCP connections accepted.
        max_in_flight: Most requests being handled at the same time.
        in_flight: Requests being handled now (received, not yet answered).
        bodies: Raw request bodies in arrival order (only with ``record_bodies``).
        paths: Count of requests per path.
    """

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    dropped: int = 0
    connections: int = 0
    max_in_flight: int = 0
    in_flight: int = 0
    bodies: list[bytes] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)


class StatsRecorder:
    """Thread-safe counters behind :class:`MockServerStats`."""

    def __init__(self, record_bodies: bool) -> None:
        self._lock = threading.Lock()
        self._record_bodies = record_bodies
        self._in_flight = 0
        self._clear_locked()

    def _clear_locked(self) -> None:
        self._requests = 0
        self._by_status: Counter[int] = Counter()
        self._dropped = 0
        self._connections = 0
        self._max_in_flight = self._in_flight
        self._bodies: list[bytes] = []
        self._paths: Counter[str] = Counter()

    def reset(self) -> None:
        with self._lock:
            self._clear_locked()

    def connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    def request_started(self, path: str, body: bytes) -> None:
        with self._lock:
            self._requests += 1
            self._paths[path] += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self._record_bodies:
                self._bodies.append(body)

    def request_finished(self, status: int | None) -> None:
        """Record the end of a request; ``status`` None means it was dropped."""
        with self._lock:
            self._in_flight -= 1
            if status is None:
                self._dropped += 1
            else:
                self._by_status[status] += 1

    def snapshot(self) -> MockServerStats:
        with self._lock:
            return MockServerStats(
                requests=self._requests,
                by_status=Counter(self._by_status),
                rate_limited=self._by_status[429],
                dropped=self._dropped,
                connections=self._connections,
                max_in_flight=self._max_in_flight,
                in_flight=self._in_flight,
                bodies=list(self._bodies),
                paths=Counter(self._paths),
            )

