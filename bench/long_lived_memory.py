"""RSS of one long-lived executor over 1,000,000 submits, futures dropped.

What a Django/Flask process does: one executor for the life of the
process, a call per request, the future read and then dropped. The
executor must hold only calls not yet finished, so RSS stays flat.

Prints RSS after each checkpoint (10k, 100k, 1M submits) for a plain
Executor and a RateLimitedExecutor (limits high enough never to bind).

    python bench/long_lived_memory.py            # 1,000,000 submits
    python bench/long_lived_memory.py 200000     # fewer
"""

from __future__ import annotations

import gc
import os
import sys
import time

from apiexec import Event, Executor, QueueConfig, RateLimitedExecutor

CHECKPOINTS = (10_000, 100_000, 1_000_000)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(executor: Executor, total: int) -> list[tuple[int, float, float]]:
    """Submit ``total`` calls (each reading its result), RSS at checkpoints."""
    rows = []
    done = 0
    start = time.perf_counter()
    with executor:
        for checkpoint in [c for c in CHECKPOINTS if c <= total]:
            while done < checkpoint:
                batch = [executor.submit(Event(pow, {"base": done, "exp": 2})) for _ in range(1000)]
                for future in batch:
                    future.result()
                done += len(batch)
            gc.collect()
            rows.append((done, rss_mib(), time.perf_counter() - start))
        rows.append((len(executor.events), float("nan"), float("nan")))  # calls still held
    return rows


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else CHECKPOINTS[-1]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, RSS at start {rss_mib():.1f} MiB")
    config = QueueConfig(queue_capacity=1000, concurrency_limit=16)
    for name, executor in (
        ("Executor", Executor(queue_config=config)),
        (
            "RateLimitedExecutor",
            RateLimitedExecutor(
                queue_capacity=1000, concurrency_limit=16, limit_requests=1e9, limit_tokens=1e12, event_type=Event
            ),
        ),
    ):
        *rows, (held, _, _) = run(executor, total)
        for submits, rss, seconds in rows:
            print(f"{name:20s} {submits:>9,} submits  RSS {rss:6.1f} MiB  {seconds:6.1f} s")
        print(f"{name:20s} calls still held after the last result: {held:,}")


if __name__ == "__main__":
    main()
