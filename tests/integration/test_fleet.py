"""A fleet of processes shares one quota through the limit storage.

Four worker processes make 25 calls each, every one configured for 20
requests/s, against a loopback server that itself allows 21/s (burst 21).
Sharing the buckets in Redis or SQLite, the fleet stays inside the quota
(zero 429s) while using most of it; with ``memory://`` each process has its
own 20/s and the fleet overshoots (proving the test discriminates).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apiexec.mock.server import MockServer, MockServerConfig

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
CALLS = 25
LIMIT = 20  # requests/s each worker is configured for
SERVER_PER_MINUTE = 1260  # 21/s on the server
SERVER_BURST = 21

WORKER = r"""
import json, sys, time
from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor

url, storage, key, calls, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
config = EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=url, max_retries=0)
body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
executor = RateLimitedExecutor(limit_requests=limit, interval=1.0, concurrency_limit=4, storage=storage, key=key)
with Endpoint(config) as endpoint, executor:
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    futures = [executor.submit(APICalling(endpoint, body)) for _ in range(calls)]
    ok = sum(1 for future in futures if future.exception() is None)
    end = time.time()
print(json.dumps({"ok": ok, "start": start, "end": end}), flush=True)
"""


def run_fleet(storage, key):
    """Start the workers together; return (server stats, per-worker reports)."""
    config = MockServerConfig(requests_per_minute=SERVER_PER_MINUTE, request_burst=SERVER_BURST)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with MockServer(config) as server:
        args = [sys.executable, "-c", WORKER, server.url, storage, key, str(CALLS), str(LIMIT)]
        procs = [
            subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
            )
            for _ in range(PROCESSES)
        ]
        try:
            for proc in procs:
                line = proc.stdout.readline().strip()
                assert line == "ready", f"worker did not start: {line!r} {proc.stderr.read()[-2000:]}"
            for proc in procs:  # all ready: go
                proc.stdin.write("go\n")
                proc.stdin.flush()
            reports = []
            for proc in procs:
                out, err = proc.communicate(timeout=40)
                assert proc.returncode == 0, err[-2000:]
                reports.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return server.stats, reports


def summarize(label, stats, reports):
    """Aggregate rate over the run, and the sustained rate (after the first burst)."""
    ok = sum(r["ok"] for r in reports)
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    rate, sustained = ok / wall, max(0, ok - LIMIT) / wall
    # Printed with -s; docs/topologies.md quotes these figures.
    print(
        f"\nFLEET {label}: {PROCESSES}x{CALLS} calls in {wall:.2f}s: {ok} ok, {stats.rate_limited} x 429; "
        f"{rate:.1f}/s overall, {sustained:.1f}/s after the burst ({sustained / LIMIT:.0%} of {LIMIT}/s)"
    )
    return ok, wall, sustained


def assert_inside_the_quota(label, stats, reports):
    ok, wall, sustained = summarize(label, stats, reports)
    assert stats.rate_limited == 0, f"{stats.rate_limited} x 429: the fleet exceeded the shared quota"
    assert ok == PROCESSES * CALLS
    assert sustained >= 0.75 * LIMIT, f"only {sustained:.1f}/s of {LIMIT}/s used"
    assert ok <= LIMIT + LIMIT * wall + 1  # never more than burst + rate x time


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_fleet_sharing_redis_stays_inside_one_quota(redis_server):
    key = f"fleet-{time.monotonic_ns()}"
    assert_inside_the_quota("redis", *run_fleet(redis_server.url, key))


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_fleet_sharing_sqlite_stays_inside_one_quota(tmp_path):
    assert_inside_the_quota("sqlite", *run_fleet(f"sqlite:///{tmp_path}/limits.db", "fleet"))


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_fleet_with_memory_storage_exceeds_the_quota():
    stats, reports = run_fleet("memory://", "fleet")
    summarize("memory", stats, reports)
    assert stats.rate_limited > 0  # four private 20/s buckets: up to 80/s against 21/s
