"""Every head-to-head benchmark in one command: the tables ``docs/benchmarks.md`` shows.

Runs, in this order, each in this process and each against its own nginx on
loopback:

1. ``peers.py`` - apiexec vs requests + ThreadPoolExecutor, requests-futures,
   httpx and urllib3 in threads, aiohttp; 16/64/256 wide; CPU per call;
2. ``pacing.py`` - against nginx ``limit_req`` at 200 r/s: apiexec vs
   requests-ratelimiter vs pyrate-limiter vs no client limit;
3. ``vs_cookbook.py`` - ``apiexec run`` vs the OpenAI cookbook script (given
   with ``--cookbook PATH``; skipped, and said so, without it);
4. ``batch_memory.py`` - peak RSS of ``apiexec run`` by input size.

It writes one markdown file (machine, load before and after, every table,
the command behind each) and the raw numbers beside it as JSON, and draws
throughput vs concurrency from the peers' medians into a PNG.

    python bench/run_all.py --cookbook /tmp/cookbook.py             # about 12 minutes on 2 cores
    python bench/run_all.py --cookbook /tmp/cookbook.py --quick     # about 2 minutes
    python bench/run_all.py --memory-sizes 10000,100000,1000000     # + 1M lines (about 30 more minutes)
    python bench/run_all.py --only peers,pacing
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import batch_memory
import pacing
import peers
import vs_cookbook
from report import ROOT, Load, machine

SECTIONS: Final = ("peers", "pacing", "cookbook", "memory")
DEFAULT_OUTPUT: Final = ROOT / "bench" / "results" / "latest.md"
DEFAULT_PLOT: Final = ROOT / "docs" / "img" / "throughput_vs_concurrency.png"


def plot(peer_results: Sequence[dict[str, Any]], path: Path, subtitle: str) -> None:
    """Median calls/s of every client at every width, one line per client."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    widths = [r["width"] for r in peer_results]
    clients = list(peer_results[0]["clients"]) if peer_results else []
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name in clients:
        rates = [r["clients"][name]["calls_per_s"] for r in peer_results]
        ax.plot(widths, rates, marker="o", linewidth=2.5 if name == "apiexec" else 1.5, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("concurrency (threads / coroutines / connections)")
    ax.set_ylabel("calls per second (median)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput vs concurrency: POST to nginx on loopback\n" + subtitle, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run of every section (about 2 minutes)")
    parser.add_argument("--cookbook", default=None, help="path of the cookbook's api_request_parallel_processor.py")
    parser.add_argument(
        "--memory-sizes", default=None, help="comma-separated line counts (default 10k,100k; quick 10k)"
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated, from: " + ", ".join(SECTIONS))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG of throughput vs concurrency")
    args = parser.parse_args(argv)
    only = args.only.split(",")
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}")
    quick = ["--quick"] if args.quick else []
    memory_sizes = args.memory_sizes or ("10000" if args.quick else "10000,100000")
    cookbook = ["--cookbook", args.cookbook] if args.cookbook else []

    # (section, title, the command that prints the same table, how to run it)
    plan: list[tuple[str, str, str, Callable[[], tuple[str, Any]]]] = [
        ("peers", "Head to head: throughput and CPU per call", "python bench/peers.py " + " ".join(quick),
         lambda: peers.main(quick)),
        ("pacing", "Pacing against nginx limit_req (200 r/s)", "python bench/pacing.py " + " ".join(quick),
         lambda: pacing.main(quick)),
        ("cookbook", "apiexec run vs the OpenAI cookbook script",
         "python bench/vs_cookbook.py --cookbook PATH " + " ".join(quick), lambda: vs_cookbook.main(quick + cookbook)),
        ("memory", "Batch memory by input size", "python bench/batch_memory.py " + memory_sizes.replace(",", " "),
         lambda: batch_memory.main([s for s in memory_sizes.split(",") if s])),
    ]  # fmt: skip
    started = time.monotonic()
    sections: list[str] = []
    data: dict[str, Any] = {}
    with Load() as load:
        description = machine()
        for name, title, command, run in plan:
            if name not in only:
                continue
            print(f"\n== {title} ==", flush=True)
            markdown, raw = run()
            sections.append(f"## {title}\n\n`{command.strip()}`\n\n{markdown}")
            data[name] = raw
    minutes = (time.monotonic() - started) / 60
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    document = (
        f"# apiexec benchmarks - {now}\n\n"
        f"`python bench/run_all.py {' '.join(quick)}` ({minutes:.1f} min; whole run: {load.text()})\n\n"
        f"{description}\n\n" + "\n\n".join(sections) + "\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(document)
    args.output.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    if data.get("peers"):
        first = description.splitlines()[1].removeprefix("- machine: ")
        plot(data["peers"], args.plot, f"{first}; {now}")
        print(f"plot: {args.plot}")
    print(f"\nwrote {args.output} and {args.output.with_suffix('.json')} ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
