"""Throughput of apiexec against a bare ThreadPoolExecutor + requests.Session.

Both send the same N chat requests to the built-in mock server on loopback
with the same concurrency, no limits, in the same run; the ratio is what the
executor stack (queue, dispatcher, bucket, retry wrapper, events) costs.

    python bench/overhead.py --calls 3000 --concurrency 16
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import time

import requests
from requests.adapters import HTTPAdapter

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor
from apiexec.mock.server import MockServer, MockServerConfig

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def bare(url: str, calls: int, concurrency: int) -> float:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=concurrency))

    def one(_: int) -> dict:
        response = session.post(url, json=BODY, timeout=30)
        response.raise_for_status()
        return response.json()

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(calls)))
    elapsed = time.perf_counter() - start
    assert len(results) == calls
    session.close()
    return elapsed


def apiexec_run(base_url: str, calls: int, concurrency: int, limited: bool) -> float:
    endpoint = Endpoint(EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=base_url))
    executor = RateLimitedExecutor(
        concurrency_limit=concurrency,
        limit_requests=10**9 if limited else None,
        limit_tokens=10**12 if limited else None,
    )
    start = time.perf_counter()
    with endpoint, executor:
        results = list(executor.map(APICalling(endpoint, BODY, requires_tokens=limited) for _ in range(calls)))
    elapsed = time.perf_counter() - start
    assert len(results) == calls
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    with MockServer(MockServerConfig(latency_ms=args.latency_ms)) as server:
        url = f"{server.url}/v1/chat/completions"
        rows = {"bare": [], "apiexec": [], "apiexec+limits": []}
        for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
            rows["bare"].append(bare(url, args.calls, args.concurrency))
            rows["apiexec"].append(apiexec_run(server.url, args.calls, args.concurrency, False))
            rows["apiexec+limits"].append(apiexec_run(server.url, args.calls, args.concurrency, True))
    base = statistics.median(rows["bare"])
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:16s} median {med:6.2f}s  {args.calls / med:7.0f} calls/s  ratio to bare {med / base:5.2f}")


if __name__ == "__main__":
    main()
