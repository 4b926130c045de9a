"""The runnable programs of examples/ do what their recipes promise.

Each runs as a real process, as a reader would run it, against the built-in
mock server it starts itself (no key, no network).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "plain_script.py"
RUN_TIMEOUT = 60.0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_plain_script_writes_every_answer_and_every_failure(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--count", "60", "--fail-every", "20", "--output", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env(),
    )
    assert done.returncode == 2, done.stderr  # some failed
    rows = _rows(out)
    assert [row["n"] for row in rows] == list(range(60))  # input order, nothing lost
    failed = [row["n"] for row in rows if row["status"] == "failed"]
    assert failed == [19, 39, 59]
    assert all("400" in row["error"] and "messages" in row["error"] for row in rows if row["status"] == "failed")
    assert "done: {'completed': 57, 'failed': 3}" in done.stderr


def test_plain_script_exits_0_when_every_call_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--count", "30", "--output", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env(),
    )
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert len(rows) == 30 and all(row["answer"].startswith("mock reply to:") for row in rows)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_plain_script_stops_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    out = tmp_path / "answers.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--count", "400", "--mock-latency-ms", "200", "--concurrency", "4",
         "--output", str(out)],
        stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 8):
            time.sleep(0.05)  # test-side wait for the run to be under way
        assert out.exists(), "the script never started writing"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    rows = _rows(out)
    summary = stderr.strip().splitlines()[-1]
    assert summary.startswith("interrupted: "), stderr
    counts = ast.literal_eval(summary.removeprefix("interrupted: "))  # the dict the script printed
    # Every call that finished is written (the ones in flight at the signal too),
    # nothing else; the rest were cancelled or never submitted, and none failed.
    assert len(rows) == counts["completed"] and all(row["status"] == "completed" for row in rows)
    assert counts.get("cancelled", 0) > 0 and "failed" not in counts
    assert sum(counts.values()) == 400 and len(rows) < 400


def test_sdk_example_runs_both_sdks_under_the_limits() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sdk_under_limits.py")],
        capture_output=True, text=True, timeout=RUN_TIMEOUT * 2, env=_env(),  # the SDKs import slowly
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("openai:    'mock reply to: Say hello") for line in lines) == 3
    assert sum(line.startswith("anthropic: 'mock reply to: Say goodbye") for line in lines) == 2
    # The scripted 429 was seen by the executor and retried once, through its buckets.
    assert lines[-1] == "responses 6, 429s 1, retries 1", done.stdout


def test_cookbook_migration_round_trip_keeps_metadata_and_failures(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from migrate_cookbook import from_results, metadata_path, to_batch
    finally:
        sys.path.remove(str(ROOT / "examples"))
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"model": "m", "input": "a", "metadata": {"row": 1}}) + "\n\n" + json.dumps({"model": "m", "input": "b"}) + "\n"
    )
    batch = tmp_path / "batch.jsonl"
    assert to_batch(requests, batch, "/v1/embeddings") == 2
    lines = _rows(batch)
    assert lines[0] == {"custom_id": "line-1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "a"}}
    assert lines[1]["custom_id"] == "line-3"  # line numbers of the source, blank lines counted
    assert _rows(metadata_path(batch))[1] == {"custom_id": "line-3", "metadata": None}
    results = tmp_path / "results.jsonl"
    error_body = {"error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": None}}
    results.write_text("\n".join(json.dumps(row) for row in [
        {"custom_id": "line-3", "response": {"status_code": 400, "request_id": "r2", "body": error_body}, "error": None},
        {"custom_id": "line-1", "response": {"status_code": 200, "request_id": "r1", "body": {"data": []}}, "error": None},
    ]) + "\n")
    out = tmp_path / "cookbook.jsonl"
    assert from_results(batch, results, out) == 2
    failed, succeeded = _rows(out)
    assert failed == [{"model": "m", "input": "b"}, [json.dumps(error_body)]]  # no metadata: two items
    assert succeeded == [{"model": "m", "input": "a"}, {"data": []}, {"row": 1}]


def test_every_example_is_run_by_some_test() -> None:
    """A program in examples/ that no test runs would rot unseen."""
    tests_text = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("*.py"))
    examples = [path for path in (ROOT / "examples").iterdir() if not path.name.startswith(("_", "."))]
    data = {".jsonl"}  # inputs of the docs' commands, run by tests/docs/test_code_blocks.py
    unrun = [
        path.name for path in examples
        if path.suffix not in data and path.name != "__pycache__" and path.stem not in tests_text
    ]
    assert not unrun, f"examples no test runs: {unrun}"


def test_plain_script_without_a_key_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in _env().items() if k != "OPENAI_API_KEY"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--provider", "openai", "--output", str(tmp_path / "a.jsonl")],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert "OPENAI_API_KEY" in done.stderr and "Traceback" not in done.stderr
