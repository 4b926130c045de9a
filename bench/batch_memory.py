"""Peak memory of ``apiexec run`` as the input grows: it must stay flat.

Writes N batch lines (OpenAI Batch format), runs the real command against a
fresh nginx on loopback (a chat completion at once), and reports that
command's own peak RSS (``child_usage``: each size is measured alone, not
as the maximum of every run so far nor with the benchmark's own memory), its CPU and its rate, and checks that every
line was answered.

    python bench/batch_memory.py                       # 10,000 / 100,000 / 1,000,000 lines
    python bench/batch_memory.py --quick               # 10,000 / 100,000
    python bench/batch_memory.py 10000 50000           # any sizes
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import child_usage
from nginx import Nginx
from report import Load, machine, num, table

SIZES: Final = (10_000, 100_000, 1_000_000)
QUICK_SIZES: Final = (10_000, 100_000)
CONCURRENCY: Final = 32


def write_input(path: Path, n: int) -> None:
    """``n`` OpenAI Batch lines of small chat requests."""
    with path.open("w") as f:
        for i in range(n):
            body = {
                "model": "m",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"line {i} of the benchmark"}],
            }
            f.write(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
            f.write("\n")


def answered(path: Path) -> int:
    """Rows of ``path`` with a 200 answer."""
    with path.open() as f:
        return sum((json.loads(line).get("response") or {}).get("status_code") == 200 for line in f)


def measure(n: int, tmp: Path) -> dict[str, Any]:
    inp, out = tmp / f"in{n}.jsonl", tmp / f"out{n}.jsonl"
    write_input(inp, n)
    with Load() as load, Nginx(buffered_log=True) as server:
        cmd = [sys.executable, "-m", "apiexec", "run", str(inp), "-o", str(out), "--base-url", server.url + "/v1",
               "--concurrency", str(CONCURRENCY), "--no-progress", "--quiet"]  # fmt: skip
        usage = child_usage.run(cmd)
    if usage.exit_code != 0:
        print(f"apiexec run exited {usage.exit_code}: {usage.stderr[-1500:]}", file=sys.stderr)
    ok = answered(out) if out.exists() else 0
    inp.unlink()
    out.unlink(missing_ok=True)
    return {"lines": n, "ok": ok, "exit": usage.exit_code, "peak_rss_mib": usage.peak_rss_mib, "wall": usage.wall,
            "cpu": usage.cpu, "load": load.text()}  # fmt: skip


def run(sizes: Sequence[int], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="apiexec-bench-memory-") as tmp:
        for n in sizes:
            r = measure(n, Path(tmp))
            log(f"  {n:>9,} lines: exit {r['exit']}, {r['ok']:,} answered, peak RSS {r['peak_rss_mib']:6.1f} MiB, "
                f"{r['wall']:7.1f}s, {n / r['wall']:6.0f} lines/s, CPU {r['cpu']:.1f}s")  # fmt: skip
            results.append(r)
    return results


def render(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        [num(r["lines"]), num(r["ok"]), f"{r['peak_rss_mib']:.1f} MiB", f"{r['wall']:.1f} s", num(r["lines"] / r["wall"]),
         num(r["cpu"] / r["lines"] * 1e6), r["load"]]
        for r in results
    ]  # fmt: skip
    return f"`apiexec run --concurrency {CONCURRENCY}` against nginx (0 ms), each size in a fresh process\n\n" + table(
        ["lines", "answered", "peak RSS", "wall", "lines/s", "CPU us/line", "load before -> after"], rows
    )


def main(argv: Sequence[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, help="input sizes in lines (default 10k, 100k, 1M)")
    parser.add_argument("--quick", action="store_true", help="10,000 and 100,000 lines only")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    print(machine(), flush=True)
    results = run(sizes, log=lambda line: print(line, flush=True))
    markdown = render(results)
    print("\n" + markdown)
    return markdown, results


if __name__ == "__main__":
    main()
