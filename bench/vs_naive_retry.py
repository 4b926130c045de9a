"""apiexec against the usual glue (ThreadPoolExecutor + requests + a 429 retry loop).

The mock server allows RATE requests/s with a small burst and answers 429
with retry-after-ms beyond it. Measured in the same run: wall time, the
achieved rate as a share of the server's, and 429s the server had to send.

    python bench/vs_naive_retry.py --calls 600 --rate 50 --burst 5
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import time

import requests
from requests.adapters import HTTPAdapter

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor
from apiexec.mock.server import MockServer, MockServerConfig

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def naive(url: str, calls: int, concurrency: int) -> None:
    """The cookbook pattern: each thread retries its own 429 after retry-after."""
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=concurrency))

    def one(_: int) -> dict:
        while True:
            response = session.post(url, json=BODY, timeout=30)
            if response.status_code != 429:
                response.raise_for_status()
                return response.json()
            time.sleep(float(response.headers.get("retry-after-ms", "1000")) / 1000)

    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(calls)))


def with_apiexec(base_url: str, calls: int, concurrency: int, rate: float | None) -> None:
    endpoint = Endpoint(EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=base_url, max_retries=50))
    executor = RateLimitedExecutor(
        concurrency_limit=concurrency, limit_requests=rate, interval=1.0 if rate else 60.0
    )
    with endpoint, executor:
        list(executor.map(APICalling(endpoint, BODY) for _ in range(calls)))


def measure(name: str, rate: float, burst: int, calls: int, run) -> None:
    with MockServer(MockServerConfig(requests_per_minute=rate * 60, request_burst=burst)) as server:
        start = time.perf_counter()
        run(server)
        elapsed = time.perf_counter() - start
        stats = server.stats
    ideal = (calls - burst) / rate
    print(f"{name:34s} {elapsed:6.2f}s (ideal {ideal:.2f}s, x{elapsed / ideal:4.2f})  429s: {stats.rate_limited:5d}  requests: {stats.requests}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n, c = args.calls, args.concurrency
    measure("naive threads + 429 retry loop", args.rate, args.burst, n, lambda s: naive(f"{s.url}/v1/chat/completions", n, c))
    measure("apiexec, no limit given (learns)", args.rate, args.burst, n, lambda s: with_apiexec(s.url, n, c, None))
    measure("apiexec, limit_requests=rate/s", args.rate, args.burst, n, lambda s: with_apiexec(s.url, n, c, args.rate))


if __name__ == "__main__":
    main()
