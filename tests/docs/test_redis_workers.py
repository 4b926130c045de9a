"""examples/redis_workers.py: worker processes sharing one quota in Redis.

Two real worker processes run against one mock server that enforces the
limits itself: sharing the buckets in Redis, the server refuses nothing;
each with its own buckets in memory (the counterfactual), it refuses some.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "redis_workers.py"


def _demo(storage: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "demo", "--storage", storage, "--key", f"docs-{uuid.uuid4().hex}",
         "--calls", "30"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_workers_sharing_redis_stay_inside_the_servers_limit(redis_server) -> None:
    result = _demo(redis_server.url)
    assert result["server_429"] == 0, result
    assert result["server_200"] == 60
    assert [r["answered"] for r in result["reports"]] == [30, 30]


def test_workers_with_their_own_buckets_overrun_it() -> None:
    result = _demo("memory://")
    assert result["server_429"] > 0, result  # each worker allowed the whole quota


def test_an_unreachable_redis_is_one_line_per_worker() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "demo", "--storage", "redis://127.0.0.1:1/0", "--calls", "2"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert sum(line.startswith("error: limit storage redis://127.0.0.1:1/0") for line in lines) == 2, lines
