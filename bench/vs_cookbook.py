"""``apiexec run`` against the OpenAI cookbook's ``api_request_parallel_processor.py``.

Both read the same 20,000-line file of chat requests (one request body per
line: the cookbook's input format, which ``apiexec run`` also reads) and send
it to the same server: a fresh nginx on loopback answering a chat
completion with ``usage`` at once (0 ms latency), so the clients are what is
measured. Both are configured with the same limits, high enough never to
bind (1,000,000 requests and 1,000,000,000 tokens per minute), so both pay
for their limiter and token counting but neither waits. Each runs as its own
process; its CPU (user + system) and peak RSS are that process's alone
(``child_usage``: ``wait4`` from a tiny launcher), the 429s from the server's access log. Rounds alternate
between the two.

The cookbook script is not part of this repository (its licence and ours
differ): pass its path. It is run unchanged except for two things a
loopback run needs, applied by a small wrapper: its URL parser only accepts
``https://`` (ours is ``http://127.0.0.1``), and when tiktoken cannot load
``cl100k_base`` (no network, nothing cached) its token counter uses
apiexec's offline heuristic - the same one ``apiexec run`` then falls back
to - and the output says so. Its logging level is WARNING (at its default,
INFO, it logs a line per request). ``apiexec run`` runs as a user runs it
(its default ``--concurrency``, 16, unless ``--concurrency`` is given here)
with no progress bar; the cookbook has no concurrency setting (aiohttp's
default connection limit, 100, bounds it).

    python bench/vs_cookbook.py --cookbook /tmp/cookbook.py
    python bench/vs_cookbook.py --cookbook /tmp/cookbook.py --quick      # 5,000 lines, 1 round
    python bench/vs_cookbook.py --cookbook /tmp/cookbook.py --server-rate 200 --server-burst 200

Without ``--cookbook`` (or with a path that does not exist) only apiexec is
measured and the output says the comparison was skipped.

Two more rows (``--no-floor`` skips them) measure the *floor*
(``bench/floor_client.py``): a reader thread and 1 or 16 worker threads that
send each line through apiexec's ``Endpoint`` and write its row, and do
nothing else (no limits, journal, retries or cost). They show how much of
``apiexec run``'s CPU per line is the threaded ``requests`` road itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import child_usage
from nginx import Nginx
from report import Load, machine, num, table

LINES: Final = 20_000
QUICK_LINES: Final = 5_000
ROUNDS: Final = 3
REQUESTS_PER_MINUTE: Final = 1_000_000
TOKENS_PER_MINUTE: Final = 1_000_000_000
#: No run may take longer than this (seconds): a stuck client is killed and reported.
RUN_TIMEOUT: Final = 900.0
#: The floor client (``bench/floor_client.py``) and its thread counts: 1, and ``apiexec run``'s default concurrency.
FLOOR_CLIENT: Final = Path(__file__).with_name("floor_client.py")
FLOOR_WORKERS: Final = (1, 16)

# Runs the cookbook script from its path, unchanged but for what a loopback
# run needs (see the module docstring). argv: script, input, output, url, rpm, tpm.
_COOKBOOK_WRAPPER: Final = r"""
import asyncio, importlib.util, logging, sys
script, inp, out, url, rpm, tpm = sys.argv[1:7]
spec = importlib.util.spec_from_file_location("api_request_parallel_processor", script)
cookbook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cookbook)
# Its parser accepts https://.../v1/<endpoint> only; ours is http on loopback.
cookbook.api_endpoint_from_url = lambda request_url: request_url.split("/v1/", 1)[1]
try:
    cookbook.tiktoken.get_encoding("cl100k_base")
    print("tokenizer: tiktoken cl100k_base", file=sys.stderr)
except Exception:
    from apiexec.llm.tokenizer import heuristic_count

    class OfflineEncoding:
        def encode(self, text):
            return [0] * heuristic_count(text)

    class OfflineTiktoken:
        @staticmethod
        def get_encoding(name):
            return OfflineEncoding()

    cookbook.tiktoken = OfflineTiktoken()
    print("tokenizer: apiexec heuristic (tiktoken cl100k_base unavailable offline)", file=sys.stderr)
asyncio.run(cookbook.process_api_requests_from_file(
    requests_filepath=inp, save_filepath=out, request_url=url, api_key="bench",
    max_requests_per_minute=float(rpm), max_tokens_per_minute=float(tpm),
    token_encoding_name="cl100k_base", max_attempts=5, logging_level=logging.WARNING,
))
"""


def write_input(path: Path, lines: int) -> None:
    """``lines`` chat request bodies, one per line (``custom_id`` = the line number for apiexec)."""
    with path.open("w") as f:
        for i in range(lines):
            body = {"model": "gpt-4o-mini", "max_tokens": 8,
                    "messages": [{"role": "user", "content": f"Line {i} of the benchmark: answer ok."}]}  # fmt: skip
            f.write(json.dumps(body) + "\n")


@dataclass
class Run:
    """One process: how long, how much CPU and memory, what it wrote, what the server saw."""

    client: str
    lines: int
    wall: float
    cpu: float
    peak_rss_mib: float
    exit_code: int
    rows_ok: int
    rows: int
    rejected: int
    sent: int
    tokenizer: str = ""


def count_apiexec_rows(path: Path) -> tuple[int, int]:
    ok = rows = 0
    with path.open() as f:
        for line in f:
            rows += 1
            response = json.loads(line).get("response") or {}
            ok += response.get("status_code") == 200 and "choices" in (response.get("body") or {})
    return ok, rows


def count_cookbook_rows(path: Path) -> tuple[int, int]:
    ok = rows = 0
    if not path.exists():
        return 0, 0
    with path.open() as f:
        for line in f:
            rows += 1
            row = json.loads(line)
            ok += isinstance(row[1], dict) and "choices" in row[1]
    return ok, rows


def run_apiexec(server: Nginx, inp: Path, out: Path, lines: int, concurrency: int | None) -> Run:
    cmd = [sys.executable, "-m", "apiexec", "run", str(inp), "-o", str(out), "--base-url", server.url + "/v1",
           "--endpoint", "chat/completions", "--no-progress", "--quiet",
           "--requests-per-minute", str(REQUESTS_PER_MINUTE), "--tokens-per-minute", str(TOKENS_PER_MINUTE)]  # fmt: skip
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]
    usage = child_usage.run(cmd, timeout=RUN_TIMEOUT)
    if usage.exit_code not in (0, 2):
        print(f"apiexec run exited {usage.exit_code}: {usage.stderr[-1500:]}", file=sys.stderr)
    ok, rows = count_apiexec_rows(out) if out.exists() else (0, 0)
    return Run("apiexec run", lines, usage.wall, usage.cpu, usage.peak_rss_mib, usage.exit_code, ok, rows, 0, 0)


def run_cookbook(server: Nginx, inp: Path, out: Path, lines: int, cookbook: Path) -> Run:
    cmd = [sys.executable, "-c", _COOKBOOK_WRAPPER, str(cookbook), str(inp), str(out), server.chat_url,
           str(REQUESTS_PER_MINUTE), str(TOKENS_PER_MINUTE)]  # fmt: skip
    usage = child_usage.run(cmd, timeout=RUN_TIMEOUT)
    lines_err = usage.stderr.splitlines()
    tokenizer = next((line.partition(": ")[2] for line in lines_err if line.startswith("tokenizer:")), "?")
    if usage.exit_code != 0:
        print(f"cookbook script exited {usage.exit_code}: {usage.stderr[-1500:]}", file=sys.stderr)
    ok, rows = count_cookbook_rows(out)
    return Run("cookbook script", lines, usage.wall, usage.cpu, usage.peak_rss_mib, usage.exit_code, ok, rows, 0, 0,
               tokenizer)  # fmt: skip


def run_floor(server: Nginx, inp: Path, out: Path, lines: int, workers: int) -> Run:
    cmd = [sys.executable, str(FLOOR_CLIENT), str(inp), str(out), server.url + "/v1", "--workers", str(workers)]
    usage = child_usage.run(cmd, timeout=RUN_TIMEOUT)
    if usage.exit_code != 0:
        print(f"floor client exited {usage.exit_code}: {usage.stderr[-1500:]}", file=sys.stderr)
    ok, rows = count_cookbook_rows(out)
    return Run(f"floor, {workers} thread(s)", lines, usage.wall, usage.cpu, usage.peak_rss_mib, usage.exit_code, ok,
               rows, 0, 0)  # fmt: skip


def run(lines: int, rounds: int, cookbook: Path | None, concurrency: int | None, server_rate: float | None,
        server_burst: int, log: Callable[[str], None] = print, floor: bool = True) -> tuple[list[Run], str]:  # fmt: skip
    runs: list[Run] = []
    with Load() as load, tempfile.TemporaryDirectory(prefix="apiexec-bench-cookbook-") as tmp:
        inp = Path(tmp, "requests.jsonl")
        write_input(inp, lines)
        for index in range(rounds):
            clients = ["apiexec", "cookbook"] if cookbook else ["apiexec"]
            if floor:
                clients += [f"floor-{workers}" for workers in FLOOR_WORKERS]
            if index % 2:
                clients.reverse()
            for client in clients:
                out = Path(tmp, f"{client}-{index}.jsonl")
                with Nginx(rate=server_rate, burst=server_burst, buffered_log=True) as server:
                    if client == "apiexec":
                        result = run_apiexec(server, inp, out, lines, concurrency)
                    elif client.startswith("floor-"):
                        result = run_floor(server, inp, out, lines, int(client.partition("-")[2]))
                    else:
                        assert cookbook is not None
                        result = run_cookbook(server, inp, out, lines, cookbook)
                statuses = server.statuses()
                result.sent, result.rejected = len(statuses), statuses.count(429)
                out.unlink(missing_ok=True)
                log(f"  round {index + 1}/{rounds}: {result.client:<16} {result.wall:6.2f}s "
                    f"{lines / result.wall:6.0f} lines/s  CPU {result.cpu:6.2f}s  peak RSS {result.peak_rss_mib:5.1f} MiB  "
                    f"{result.rows_ok}/{lines} ok  {result.rejected} x 429  exit {result.exit_code}")  # fmt: skip
                runs.append(result)
    return runs, load.text()


def render(runs: Sequence[Run], load: str, concurrency: int | None, server: str, skipped: str) -> str:
    by_client: dict[str, list[Run]] = {}
    for r in runs:
        by_client.setdefault(r.client, []).append(r)
    lines = runs[0].lines
    medians = {name: statistics.median(r.wall for r in rs) for name, rs in by_client.items()}
    cookbook = medians.get("cookbook script")
    rows = []
    for name, rs in by_client.items():
        wall = medians[name]
        cpu = statistics.median(r.cpu for r in rs)
        rows.append([
            name, f"{wall:.2f} s", num(lines / wall), f"{cookbook / wall:.2f}x" if cookbook else "-",
            f"{cpu:.2f} s", num(cpu / lines * 1e6), f"{max(r.peak_rss_mib for r in rs):.1f} MiB",
            num(sum(r.rejected for r in rs)), f"{min(r.rows_ok for r in rs):,}/{lines:,}",
        ])  # fmt: skip
    flag = f" --concurrency {concurrency}" if concurrency else ""
    head = (f"{num(lines)} lines, median of {len(next(iter(by_client.values())))} alternating round(s); server: {server}; "
            f"`apiexec run{flag}`; {load}")  # fmt: skip
    tokenizers = {r.tokenizer for r in runs if r.tokenizer}
    notes = [f"cookbook token counting: {', '.join(sorted(tokenizers))}"] if tokenizers else []
    if skipped:
        notes.append(skipped)
    return (
        head
        + "\n\n"
        + table(
            [
                "client",
                "wall",
                "lines/s",
                "vs cookbook",
                "CPU",
                "CPU us/line",
                "peak RSS",
                "429s (all rounds)",
                "rows ok (worst round)",
            ],
            rows,
        )  # fmt: skip
        + "".join(f"\n\n_{note}_" for note in notes)
    )


def main(argv: Sequence[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cookbook", type=Path, default=None, help="path of api_request_parallel_processor.py")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_LINES:,} lines, 1 round")
    parser.add_argument("--lines", type=int, default=None, help=f"lines in the file (default {LINES:,})")
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds (default {ROUNDS})")
    parser.add_argument("--concurrency", type=int, default=None, help="apiexec run --concurrency (default: its own)")
    parser.add_argument("--server-rate", type=float, default=None, help="nginx limit_req rate, r/s (default none)")
    parser.add_argument("--server-burst", type=int, default=0, help="nginx limit_req burst (with --server-rate)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor client (bench/floor_client.py)")
    args = parser.parse_args(argv)
    lines = args.lines or (QUICK_LINES if args.quick else LINES)
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    cookbook, skipped = args.cookbook, ""
    if cookbook is None or not cookbook.is_file():
        skipped = (f"cookbook comparison skipped: no script at {cookbook}" if cookbook
                   else "cookbook comparison skipped: pass --cookbook PATH")  # fmt: skip
        print(skipped, flush=True)
        cookbook = None
    server = "nginx, 0 ms" + (
        f", limit_req rate={args.server_rate:g}r/s burst={args.server_burst}" if args.server_rate else ""
    )
    print(machine(), flush=True)
    runs, load = run(lines, rounds, cookbook, args.concurrency, args.server_rate, args.server_burst,
                     log=lambda line: print(line, flush=True), floor=not args.no_floor)  # fmt: skip
    markdown = render(runs, load, args.concurrency, server, skipped)
    print("\n" + markdown)
    return markdown, [r.__dict__ for r in runs]


if __name__ == "__main__":
    main()
