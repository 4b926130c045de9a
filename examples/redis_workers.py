"""Worker processes (Celery, RQ, or your own) sharing one rate-limit quota in Redis.

Every worker process has its own executor, but all of them keep their
buckets in one Redis under one key, so together they stay inside the
account's limits: the limits are the account's, not the worker's. Nothing
here depends on Celery or RQ; ``docs/recipes/workers.md`` shows the wiring.

Try it against the built-in mock server, which enforces the limits itself
and counts what it refused (needs a Redis server)::

    python examples/redis_workers.py demo --storage redis://localhost:6379/0
    # 2 workers, 60 calls: 60 answered, the server refused 0 (429)

    python examples/redis_workers.py demo --storage memory://
    # the same without sharing: each worker allows the whole quota, the server refuses some

One worker, as a job runner would start it::

    python examples/redis_workers.py worker --storage redis://localhost:6379/0 \
        --base-url http://127.0.0.1:8000/v1 --calls 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from apiexec import APICalling, APIExecError, Endpoint, RateLimitedExecutor

#: The account's limits, as every worker states them (the same in each process).
REQUESTS_PER_MINUTE = 1100
BURST = 8
QUOTA_KEY = "openai-prod"


def make_executor(storage: str, key: str = QUOTA_KEY, *, concurrency: int = 8) -> RateLimitedExecutor:
    """The worker process's executor; its buckets live in ``storage`` under ``key``.

    Every process naming the same storage and key shares one quota.
    """
    return RateLimitedExecutor(
        limit_requests=REQUESTS_PER_MINUTE, burst=BURST, concurrency_limit=concurrency, storage=storage, key=key
    )


def make_endpoint(base_url: str, api_key: str | None = None) -> Endpoint:
    """One pooled HTTP session for the process."""
    return Endpoint.for_provider("openai", "chat", base_url=base_url, api_key=api_key or "sk-mock")


def run_job(executor: RateLimitedExecutor, endpoint: Endpoint, prompts: Sequence[str]) -> list[Any]:
    """What a task does: every prompt answered (or its error), in order."""
    calls = [
        APICalling(endpoint, {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": p}]})
        for p in prompts
    ]
    outcomes = executor.map(calls, return_exceptions=True)
    return [o["choices"][0]["message"]["content"] if isinstance(o, dict) else repr(o) for o in outcomes]


def worker(args: argparse.Namespace) -> int:
    """One worker process: a job of ``--calls`` prompts; prints what happened as JSON."""
    with make_endpoint(args.base_url) as endpoint, make_executor(args.storage, args.key) as executor:
        answers = run_job(executor, endpoint, [f"job {args.name} prompt {n}" for n in range(args.calls)])
        figures = executor.metrics.snapshot()
    print(json.dumps({
        "worker": args.name,
        "answered": sum(a.startswith("mock reply") for a in answers),
        "failed": figures["failed"],
        "rate_limited": figures["rate_limited"],
    }))
    return 0


def demo(args: argparse.Namespace) -> int:
    """A mock server enforcing the limits, and ``--workers`` worker processes sharing them."""
    from apiexec.mock import MockServer, MockServerConfig

    # The server allows the account's limits (a little above what the workers state: headroom).
    config = MockServerConfig(requests_per_minute=1200, request_burst=10)
    with MockServer(config) as server:
        command = [sys.executable, __file__, "worker", "--storage", args.storage, "--key", args.key,
                   "--base-url", f"{server.url}/v1", "--calls", str(args.calls)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_repo_root(), os.environ.get("PYTHONPATH")]))}
        workers = [subprocess.Popen([*command, "--name", str(n)], stdout=subprocess.PIPE, text=True, env=env)
                   for n in range(args.workers)]
        outputs = [w.communicate()[0] for w in workers]
        stats = server.stats
    failed = [n for n, w in enumerate(workers) if w.returncode != 0]
    if failed:  # each worker said why on its stderr
        print(f"error: worker(s) {failed} failed", file=sys.stderr)
        return 1
    reports = [json.loads(output) for output in outputs]
    answered = sum(r["answered"] for r in reports)
    print(f"{args.workers} workers, {args.workers * args.calls} calls: {answered} answered, "
          f"the server refused {stats.rate_limited} (429)")
    print(json.dumps({"reports": reports, "server_429": stats.rate_limited, "server_200": stats.by_status[200]}))
    return 0


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("worker", "demo"):
        sub = commands.add_parser(name)
        sub.add_argument("--storage", default="redis://localhost:6379/0", help="redis://..., sqlite:///..., memory://")
        sub.add_argument("--key", default=QUOTA_KEY, help="the quota's name in the storage")
        sub.add_argument("--calls", type=int, default=30, help="prompts per worker")
    commands.choices["worker"].add_argument("--base-url", required=True)
    commands.choices["worker"].add_argument("--name", default="0")
    commands.choices["demo"].add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        return worker(args) if args.command == "worker" else demo(args)
    except APIExecError as exc:  # Redis unreachable, a bad URL: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
