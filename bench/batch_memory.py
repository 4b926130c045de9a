"""Peak memory of ``apiexec run`` as the input grows: it must stay flat.

Writes N batch lines, runs the real command against a mock server in a
separate process, and reports the command's peak RSS (ru_maxrss) and rate.

    python bench/batch_memory.py 10000 100000 1000000
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_input(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": f"line {i} of the benchmark"}]}
            f.write(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
            f.write("\n")


def peak_rss_mib(cmd: list[str]) -> tuple[float, float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024, elapsed, proc.returncode


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    server = subprocess.Popen(
        [sys.executable, "-m", "apiexec", "mock-server", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().split()[-1]
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                inp, out = Path(tmp, f"in{n}.jsonl"), Path(tmp, f"out{n}.jsonl")
                write_input(inp, n)
                # Each size in a fresh child: RUSAGE_CHILDREN keeps the max of all children so far,
                # so sizes go in increasing order and each figure is an upper bound for that size.
                cmd = [sys.executable, "-m", "apiexec", "run", str(inp), "-o", str(out), "--base-url", url,
                       "--concurrency", "32", "--no-progress"]
                rss, elapsed, code = peak_rss_mib(cmd)
                lines = sum(1 for _ in out.open())
                print(f"{n:>9} lines: exit {code}, {lines} answered, peak RSS <= {rss:6.1f} MiB, "
                      f"{elapsed:7.1f}s, {n / elapsed:6.0f} lines/s", flush=True)
                os.remove(inp)
                os.remove(out)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
