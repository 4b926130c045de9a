"""Wake latency of a waiting call and CPU use of an idle executor.

Wake latency: with limit_requests=1 per INTERVAL (a bucket of one), each
call is due INTERVAL after the previous one took the request; the lateness
of its actual start (on a worker thread) is measured.
Idle CPU: process CPU time over a few seconds of an executor with nothing
to do (dispatcher and 32 workers started).

    python bench/wake_and_idle.py
"""

from __future__ import annotations

import statistics
import threading
import time

from apiexec import Event, RateLimitedExecutor

INTERVAL = 0.05
CALLS = 60


def wake_latency() -> list[float]:
    starts: list[float] = []
    lock = threading.Lock()

    def note() -> None:
        with lock:
            starts.append(time.monotonic())

    executor = RateLimitedExecutor(limit_requests=1, interval=INTERVAL, concurrency_limit=4, event_type=Event)
    with executor:
        futures = [executor.submit(Event(note)) for _ in range(CALLS)]
        for f in futures:
            f.result()
    return [(b - a - INTERVAL) * 1000 for a, b in zip(starts, starts[1:])]


def idle_cpu(seconds: float = 3.0) -> float:
    with RateLimitedExecutor(limit_requests=10, concurrency_limit=32, event_type=Event):
        time.sleep(0.2)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        return (time.process_time() - cpu0) / (time.monotonic() - wall0)


def main() -> None:
    late = wake_latency()
    late.sort()
    print(
        f"wake latency over {len(late)} waits: median {statistics.median(late):.2f} ms, "
        f"p90 {late[int(0.9 * len(late))]:.2f} ms, max {late[-1]:.2f} ms"
    )
    print(f"idle executor CPU: {100 * idle_cpu():.3f}% of one core")


if __name__ == "__main__":
    main()
