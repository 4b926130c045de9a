"""Adaptive concurrency against a server whose capacity changes: the limit over time.

A loopback server takes CAPACITY requests in flight (each takes LATENCY s)
and answers 503 beyond; its capacity changes during the run (8, then 16,
then 4). An executor with ``adaptive=True, concurrency_limit=64`` sends
calls as fast as it may. Every 20 ms the bench samples the executor's
adaptive limit and the server's calls in flight, and plots both against the
capacity (docs/img/adaptive_concurrency.png, with ``pip install
apiexec[bench]`` for matplotlib); the refused requests are marked.

    python bench/adaptive_concurrency.py [--out docs/img/adaptive_concurrency.png]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor  # noqa: E402
from apiexec.errors import ExecutorNotRunning  # noqa: E402
from tests.integration.fit_support import CappedServer  # noqa: E402

LATENCY = 0.1
#: (seconds from start, capacity) steps of the server.
PHASES = ((0.0, 8), (6.0, 16), (12.0, 4))
DURATION = 18.0
SAMPLE = 0.02


def run(out: Path | None) -> dict[str, float]:
    samples: list[tuple[float, float, int, int]] = []  # (t, limit, server in flight, capacity)
    with CappedServer(capacity=PHASES[0][1], latency=LATENCY) as server:
        config = EndpointConfig(provider="openai-compatible", base_url=server.url, endpoint="chat/completions")
        executor = RateLimitedExecutor(adaptive=True, concurrency_limit=64, queue_capacity=128)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        stop = threading.Event()
        with Endpoint(config) as endpoint, executor:
            start = time.monotonic()

            def feed() -> None:
                while not stop.is_set():
                    try:
                        executor.submit(APICalling(endpoint, body))  # blocks while the queue is full
                    except ExecutorNotRunning:  # the run is over
                        return

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            phase = 0
            while (now := time.monotonic() - start) < DURATION:
                if phase + 1 < len(PHASES) and now >= PHASES[phase + 1][0]:
                    phase += 1
                    server.capacity = PHASES[phase][1]
                limit = executor.metrics.snapshot()["concurrency_limit"]
                samples.append((now, limit, server.in_flight, server.capacity))
                time.sleep(SAMPLE)  # the bench's sampling period (not library code)
            stop.set()
            executor.shutdown(wait=False, cancel_futures=True)
        refused = [(t - server.first, n) for t, n, rejected in server.timeline if rejected]
        for i, (begin, capacity) in enumerate(PHASES):
            end = PHASES[i + 1][0] if i + 1 < len(PHASES) else DURATION + 1
            sent = [r for t, _, r in server.timeline if begin <= t - server.first < end]
            no = sum(sent)
            print(f"capacity {capacity:2d} ({begin:4.1f}-{min(end, DURATION):4.1f}s): {len(sent)} requests, "
                  f"{no} refused ({no / max(1, len(sent)):.1%})")
        figures = {
            "accepted": server.accepted,
            "rejected": server.rejected,
            "rejected_share": server.rejected / max(1, server.accepted + server.rejected),
            "utilisation": _utilisation(samples),
        }
    if out is not None:
        _plot(samples, refused, out)
    return figures


def _utilisation(samples: list[tuple[float, float, int, int]]) -> float:
    """Mean of (server calls in flight / capacity) over the run."""
    return sum(min(1.0, busy / cap) for _, _, busy, cap in samples) / max(1, len(samples))


def _plot(samples: list[tuple[float, float, int, int]], refused: list[tuple[float, int]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    ax.step(t, [s[3] for s in samples], where="post", color="black", lw=1.5, label="server capacity")
    ax.plot(t, [s[1] for s in samples], color="tab:blue", lw=1.5, label="adaptive limit (AIMD)")
    ax.plot(t, [s[2] for s in samples], color="tab:green", lw=0.8, alpha=0.7, label="calls in flight at the server")
    if refused:
        ax.scatter([r[0] for r in refused], [r[1] + 0.5 for r in refused], marker="x", color="tab:red", s=18,
                   label="refused (503)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("calls in flight")
    ax.set_ylim(0, max(s[3] for s in samples) + 6)
    ax.set_title(f"apiexec adaptive concurrency (upper bound 64; calls take {LATENCY * 1000:.0f} ms)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/adaptive_concurrency.png"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    figures = run(None if args.no_plot else args.out)
    print(
        f"accepted {figures['accepted']:.0f}, refused {figures['rejected']:.0f} "
        f"({figures['rejected_share']:.1%}), server utilisation {figures['utilisation']:.0%}"
    )


if __name__ == "__main__":
    main()
