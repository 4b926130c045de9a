"""apiexec against the usual ways to send many POSTs, on one nginx, in one run.

Every client sends the same N ``POST /v1/chat/completions`` (a small JSON
body) to a real nginx on loopback that answers a fixed chat completion in
microseconds, so what is measured is the client. Each client checks every
answer (status 200, JSON parsed), as real code would. Widths 16, 64 and 256;
at each width the clients run in interleaved rounds (the order rotates each
round, so machine noise and warm caches hit all alike) and the table shows
medians:

* **apiexec** - ``RateLimitedExecutor`` (no limit configured) +
  ``Endpoint`` + ``APICalling``, ``executor.map``;
* **requests + ThreadPoolExecutor** - one ``requests.Session`` shared by the
  threads, its adapter's pool sized to the width (the reference, ratio 1.00);
* **requests-futures** - ``FuturesSession(max_workers=width)`` (it sizes its
  own pool to ``max_workers``);
* **httpx in threads** - one ``httpx.Client`` (pool limits = width) shared by
  a ``ThreadPoolExecutor``;
* **urllib3 in threads** - one ``PoolManager(maxsize=width)``: what a
  synchronous client can reach in Python (the sync ceiling);
* **aiohttp** - one ``ClientSession`` (connector limit = width), width
  coroutines: the async ceiling.

Wall time runs from the first call to the last answer parsed: building the
client object (a ``Session``, an ``httpx.Client`` - which loads a TLS context,
0.2-0.8 s here -, an ``Endpoint``) is left out, as a program pays it once;
opening connections and starting threads, which happen with the first calls,
are in. CPU is this process's CPU
time (all threads, user + system, ``time.process_time``) per call: nginx runs
in another process and is not counted.

    python bench/peers.py                  # 7 rounds of 4,000 at 16 wide; 3 of 2,000 at 64 and 256
    python bench/peers.py --quick          # 1,000 calls; 3 rounds at 16 wide, 1 at 64 and 256
    python bench/peers.py --widths 16 --rounds 9 --clients apiexec,requests+TPE
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import httpx
import requests
import urllib3
from nginx import Nginx
from report import Load, machine, num, table
from requests.adapters import HTTPAdapter
from requests_futures.sessions import FuturesSession

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor

BODY: Final = {"model": "bench", "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 5}
PATH: Final = "/v1/chat/completions"

#: Rounds and calls per width by default: the 16-wide comparison is the
#: headline (4,000 POSTs, >= 7 interleaved rounds); wider ones fewer, to keep a
#: default run near 3 minutes on 2 busy cores.
DEFAULT_ROUNDS: Final = {16: 7, 64: 3, 256: 3}
DEFAULT_CALLS: Final = {16: 4_000, 64: 2_000, 256: 2_000}
QUICK_ROUNDS: Final = {16: 3, 64: 1, 256: 1}
QUICK_CALLS: Final = 1_000
REFERENCE: Final = "requests+TPE"
WARM_UP_CALLS: Final = 100


def _check(status: int, answer: Any) -> None:
    if status != 200 or not isinstance(answer, dict) or "choices" not in answer:
        raise RuntimeError(f"unexpected answer: {status} {str(answer)[:200]}")


# ------------------------------------------------------------------ clients
# Each sends ``calls`` POSTs ``width`` at a time to ``base + PATH``, checks
# every answer, and returns how many succeeded. Each calls ``start()`` once its
# client object is built, just before the first call: the clock starts there.


def run_apiexec(base: str, calls: int, width: int, start: Callable[[], None]) -> int:
    """RateLimitedExecutor (no limit) + Endpoint + APICalling, as the README shows."""
    endpoint = Endpoint(EndpointConfig(provider="bench", base_url=base, endpoint=PATH.lstrip("/"), pool_maxsize=width))
    ok = 0
    with endpoint, RateLimitedExecutor(concurrency_limit=width) as executor:
        start()
        for answer in executor.map(APICalling(endpoint, BODY) for _ in range(calls)):
            _check(200, answer)
            ok += 1
    return ok


def run_requests_tpe(base: str, calls: int, width: int, start: Callable[[], None]) -> int:
    """One shared requests.Session (pool = width) in a ThreadPoolExecutor."""
    url = base + PATH
    with requests.Session() as session:
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=width)
        session.mount("http://", adapter)

        def one(_: int) -> None:
            response = session.post(url, json=BODY, timeout=30)
            _check(response.status_code, response.json())

        with cf.ThreadPoolExecutor(width) as pool:
            start()
            return sum(1 for _ in pool.map(one, range(calls)))


def run_requests_futures(base: str, calls: int, width: int, start: Callable[[], None]) -> int:
    """requests-futures: FuturesSession(max_workers=width) sizes its pool to width."""
    url = base + PATH
    ok = 0
    with FuturesSession(max_workers=width) as session:
        start()
        futures = [session.post(url, json=BODY, timeout=30) for _ in range(calls)]
        for future in futures:
            response = future.result()
            _check(response.status_code, response.json())
            ok += 1
    return ok


def run_httpx_threads(base: str, calls: int, width: int, start: Callable[[], None]) -> int:
    """One httpx.Client (pool limits = width) shared by a ThreadPoolExecutor."""
    url = base + PATH
    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    with httpx.Client(limits=limits, timeout=30) as client:

        def one(_: int) -> None:
            response = client.post(url, json=BODY)
            _check(response.status_code, response.json())

        with cf.ThreadPoolExecutor(width) as pool:
            start()
            return sum(1 for _ in pool.map(one, range(calls)))


def run_urllib3_threads(base: str, calls: int, width: int, start: Callable[[], None]) -> int:
    """One urllib3.PoolManager(maxsize=width) in a ThreadPoolExecutor: the sync ceiling."""
    url = base + PATH
    with urllib3.PoolManager(maxsize=width, timeout=30, retries=False) as manager:

        def one(_: int) -> None:
            response = manager.request("POST", url, json=BODY)
            _check(response.status, response.json())

        with cf.ThreadPoolExecutor(width) as pool:
            start()
            return sum(1 for _ in pool.map(one, range(calls)))


def run_aiohttp(base: str, calls: int, width: int, start: Callable[[], None]) -> int:
    """aiohttp: one ClientSession (connector limit = width), width coroutines: the async ceiling."""
    url = base + PATH

    async def main() -> int:
        ok = 0
        todo = iter(range(calls))  # shared by the coroutines: each call is taken once
        connector = aiohttp.TCPConnector(limit=width)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def worker() -> None:
                nonlocal ok
                for _ in todo:
                    async with session.post(url, json=BODY) as response:
                        _check(response.status, await response.json())
                    ok += 1

            start()
            await asyncio.gather(*(worker() for _ in range(width)))
        return ok

    return asyncio.run(main())


Client = Callable[[str, int, int, Callable[[], None]], int]

CLIENTS: Final[dict[str, Client]] = {
    "apiexec": run_apiexec,
    REFERENCE: run_requests_tpe,
    "requests-futures": run_requests_futures,
    "httpx (threads)": run_httpx_threads,
    "urllib3 (threads)": run_urllib3_threads,
    "aiohttp (async)": run_aiohttp,
}


# --------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One client's run: wall and CPU seconds."""

    wall: float
    cpu: float


@dataclass
class WidthResult:
    """Every round of every client at one width."""

    width: int
    calls: int
    rounds: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    load: str = ""

    def median_wall(self, client: str) -> float:
        return statistics.median(s.wall for s in self.samples[client])

    def calls_per_s(self, client: str) -> float:
        return self.calls / self.median_wall(client)

    def cpu_us_per_call(self, client: str) -> float:
        return statistics.median(s.cpu for s in self.samples[client]) / self.calls * 1e6


def measure(client: Client, base: str, calls: int, width: int) -> Sample:
    """Runs one client once; raises unless every call succeeded."""
    gc.collect()  # garbage of the previous client is not this one's cost
    marks: list[tuple[float, float]] = []

    def start() -> None:
        marks.append((time.perf_counter(), time.process_time()))

    ok = client(base, calls, width, start)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    if ok != calls:
        raise RuntimeError(f"{getattr(client, '__name__', client)}: {ok} of {calls} calls succeeded")
    if len(marks) != 1:
        raise RuntimeError(f"{getattr(client, '__name__', client)} called start() {len(marks)} times, not once")
    wall0, cpu0 = marks[0]
    return Sample(wall1 - wall0, cpu1 - cpu0)


def run(widths: Sequence[int], calls: dict[int, int], rounds: dict[int, int], clients: Sequence[str],
        log: Callable[[str], None] = print) -> list[WidthResult]:  # fmt: skip
    """Every client at every width, in interleaved rounds, against one nginx."""
    results = []
    with Nginx(buffered_log=True) as server:
        for name in clients:  # warm-up, untimed: first-use imports and caches are no one's per-call cost
            measure(CLIENTS[name], server.url, min(WARM_UP_CALLS, *calls.values()), min(widths))
        for width in widths:
            result = WidthResult(width, calls[width], rounds[width], {name: [] for name in clients})
            with Load() as load:
                for index in range(rounds[width]):
                    order = list(clients[index % len(clients) :]) + list(clients[: index % len(clients)])
                    for name in order:
                        sample = measure(CLIENTS[name], server.url, calls[width], width)
                        result.samples[name].append(sample)
                        log(f"  {width:>3} wide, round {index + 1}/{rounds[width]}: {name:<18} "
                            f"{sample.wall:6.2f}s  {calls[width] / sample.wall:7.0f} calls/s")  # fmt: skip
            result.load = load.text()
            results.append(result)
    return results


def render(results: Sequence[WidthResult]) -> str:
    """The markdown tables: one per width."""
    parts = []
    for result in results:
        base = result.median_wall(REFERENCE) if REFERENCE in result.samples else None
        rows = []
        for name in result.samples:
            ratio = f"{base / result.median_wall(name):.2f}x" if base else "-"
            rows.append([
                name, f"{result.median_wall(name):.2f} s", num(result.calls_per_s(name)), ratio,
                num(result.cpu_us_per_call(name)),
            ])  # fmt: skip
        parts.append(
            f"**{result.width} wide** - {num(result.calls)} POSTs, median of {result.rounds} interleaved "
            f"round(s); {result.load}\n\n"
            + table(["client", "wall", "calls/s", f"vs {REFERENCE}", "CPU us/call"], rows)
        )
    return "\n\n".join(parts)


def to_json(results: Sequence[WidthResult]) -> list[dict[str, Any]]:
    """Every sample, for the plot and for anyone who wants the raw numbers."""
    return [
        {
            "width": r.width, "calls": r.calls, "rounds": r.rounds, "load": r.load,
            "clients": {name: {"calls_per_s": r.calls_per_s(name), "cpu_us_per_call": r.cpu_us_per_call(name),
                               "walls": [s.wall for s in r.samples[name]], "cpus": [s.cpu for s in r.samples[name]]}
                        for name in r.samples},
        }
        for r in results
    ]  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 calls, fewer rounds (under a minute)")
    parser.add_argument(
        "--calls", type=int, default=None, help="POSTs per client per round (default: 4,000 at 16 wide, else 2,000)"
    )
    parser.add_argument("--widths", default="16,64,256", help="comma-separated concurrencies")
    parser.add_argument("--rounds", type=int, default=None, help="rounds at every width (default: 7/3/3)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated, from: " + ", ".join(CLIENTS))
    parser.add_argument("--json", default=None, help="also write the raw samples to this file")
    args = parser.parse_args(argv)
    unknown = [c for c in args.clients.split(",") if c not in CLIENTS]
    if unknown:
        parser.error(f"--clients: unknown {', '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    args = parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    defaults = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    rounds = {w: args.rounds or defaults.get(w, 3) for w in widths}
    calls = {w: args.calls or (QUICK_CALLS if args.quick else DEFAULT_CALLS.get(w, 2_000)) for w in widths}
    print(machine(), flush=True)
    results = run(widths, calls, rounds, args.clients.split(","), log=lambda line: print(line, flush=True))
    markdown = render(results)
    print("\n" + markdown)
    data = to_json(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    return markdown, data


if __name__ == "__main__":
    main()
