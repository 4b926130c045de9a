"""The real `apiexec` command in subprocesses, against loopback mock servers."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from apiexec.mock.server import MockServer, MockServerConfig

pytestmark = pytest.mark.integration

SECRET = "apiexec-test-credential-4f9a1c"


def write_input(path, n, *, extra_lines=()):
    with path.open("w") as f:
        for i in range(n):
            body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": f"question {i}"}]}
            f.write(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def cli(*args, env=None, **kwargs):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    return [sys.executable, "-m", "apiexec", *args], full_env


def run_cli(*args, env=None, timeout=120):
    cmd, full_env = cli(*args, env=env)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sent_custom_ids(server):
    counts = collections.Counter()
    for body in server.stats.bodies:
        if not body:
            continue
        text = json.loads(body)["messages"][0]["content"]
        counts["q" + text.split()[-1]] += 1
    return counts


@pytest.mark.timeout(180)
def test_500_lines_through_20_percent_failures_all_answered(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 500)
    with MockServer(MockServerConfig(fail_rate=0.2, seed=7)) as server:
        proc = run_cli("run", str(inp), "-o", str(out), "--base-url", f"{server.url}/v1",
                       "--concurrency", "16", "--max-retries", "8", "--no-progress")
        stats = server.stats
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(out)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"q{i}" for i in range(500))
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in rows)
    assert stats.requests > 500  # failures were injected and retried
    assert "500 succeeded" in proc.stderr


@pytest.mark.timeout(180)
def test_kill_9_then_rerun_answers_every_line_once(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n, concurrency = 300, 8
    write_input(inp, n)
    with MockServer(MockServerConfig(latency_ms=15, record_bodies=True)) as server:
        args = ("run", str(inp), "-o", str(out), "--base-url", f"{server.url}/v1", "--concurrency", str(concurrency), "--no-progress")
        cmd, env = cli(*args)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_text().count("\n") >= n // 3:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = len(rows_of(out))
        assert n // 3 <= before < n
        second = run_cli(*args)
        sent = sent_custom_ids(server)
    assert second.returncode == 0, second.stderr
    rows = rows_of(out)
    ids = [r["custom_id"] for r in rows]
    assert len(ids) == n and set(ids) == {f"q{i}" for i in range(n)}
    resent = sum(sent.values()) - n
    assert 0 <= resent <= 2 * concurrency
    assert f"{before}" in second.stderr or "already done" in second.stderr


@pytest.mark.timeout(120)
def test_ctrl_c_stops_cleanly_and_rerun_completes(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 200)
    with MockServer(MockServerConfig(latency_ms=20)) as server:
        args = ("run", str(inp), "-o", str(out), "--base-url", f"{server.url}/v1", "--concurrency", "4", "--no-progress")
        cmd, env = cli(*args)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (out.exists() and out.read_text().count("\n") >= 20):
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert "Traceback" not in err
        partial = rows_of(out)
        assert len({r["custom_id"] for r in partial}) == len(partial) < 200
        second = run_cli(*args)
    assert second.returncode == 0
    assert sorted(r["custom_id"] for r in rows_of(out)) == sorted(f"q{i}" for i in range(200))


def test_bad_lines_are_reported_and_the_rest_done(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 5, extra_lines=["{broken", '{"custom_id": "nobody"}', json.dumps({"custom_id": "q1", "body": {"model": "m"}})])
    with MockServer(MockServerConfig()) as server:
        proc = run_cli("run", str(inp), "-o", str(out), "--base-url", f"{server.url}/v1", "--no-progress")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    all_rows = rows_of(out)
    answered = {r["custom_id"] for r in all_rows if r["error"] is None}
    assert answered == {f"q{i}" for i in range(5)}
    rows = {r["custom_id"]: r for r in all_rows if r["error"] is not None}
    assert "duplicate custom_id 'q1'" in rows["q1"]["error"]["message"]  # its own row, beside q1's answer
    assert "not valid JSON" in rows["6"]["error"]["message"]
    assert "missing or non-object body" in rows["nobody"]["error"]["message"]
    assert "3 invalid" in proc.stderr
    assert "duplicate custom_id 'q1'" in proc.stderr


def test_secret_never_appears_in_output_logs_or_stderr(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 20)
    with MockServer(MockServerConfig(api_key=SECRET)) as server:
        ok = run_cli("run", str(inp), "-o", str(out), "--base-url", f"{server.url}/v1", "--api-key-env", "MY_KEY",
                     "--no-progress", "-vv", env={"MY_KEY": SECRET})
        out_wrong = tmp_path / "wrong.jsonl"
        wrong = run_cli("run", str(inp), "-o", str(out_wrong), "--base-url", f"{server.url}/v1", "--api-key-env", "MY_KEY",
                        "--no-progress", "-vv", env={"MY_KEY": SECRET + "-wrong"})
    assert ok.returncode == 0, ok.stderr
    assert wrong.returncode == 3  # a refused key stops the run: the circuit breaker
    for text in (ok.stdout, ok.stderr, out.read_text(), wrong.stdout, wrong.stderr, out_wrong.read_text()):
        assert SECRET not in text
    assert all(r["response"]["status_code"] == 401 for r in rows_of(out_wrong))


def test_missing_key_is_a_one_line_error(tmp_path):
    inp = tmp_path / "in.jsonl"
    write_input(inp, 1)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run([sys.executable, "-m", "apiexec", "run", str(inp), "-o", str(tmp_path / "o.jsonl"), "--provider", "openai"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["apiexec: error: api_key_env: environment variable OPENAI_API_KEY is not set"]


def test_missing_input_and_bad_flags_are_usage_errors(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--mock")
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run_cli("run", "x.jsonl", "-o", "o.jsonl", "--concurrency", "0")
    assert proc.returncode == 1 and "--concurrency: must be >= 1" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "usage:" not in proc.stderr


def test_mock_flag_runs_the_shipped_example_offline(tmp_path):
    out = tmp_path / "results.jsonl"
    env = {"HTTP_PROXY": "http://192.0.2.1:9", "HTTPS_PROXY": "http://192.0.2.1:9", "NO_PROXY": "127.0.0.1,localhost"}
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "examples", "chat.jsonl")
    proc = run_cli("run", example, "-o", str(out), "--mock", "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(out)
    assert len(rows) == 50
    assert all(r["response"]["body"]["object"] == "chat.completion" for r in rows)
    assert "50 succeeded" in proc.stderr


def test_output_must_not_be_the_input(tmp_path):
    inp = tmp_path / "same.jsonl"
    write_input(inp, 3)
    before = inp.read_text()
    proc = run_cli("run", str(inp), "-o", str(inp), "--mock", "--no-progress", timeout=30)
    assert proc.returncode == 1
    assert "output: must not be the input file" in proc.stderr
    assert inp.read_text() == before


def test_a_row_that_cannot_be_written_stops_the_run(tmp_path, monkeypatch):
    from apiexec import EndpointConfig
    from apiexec.batch.journal import Journal
    from apiexec.batch.runner import BatchOptions, run_batch

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 5)
    real_write = Journal.write

    def failing_write(self, row):
        if row["custom_id"] == "q3":
            raise OSError(28, "No space left on device")
        real_write(self, row)

    monkeypatch.setattr(Journal, "write", failing_write)
    with MockServer(MockServerConfig()) as server:
        config = EndpointConfig(provider="mock", endpoint="chat/completions", base_url=f"{server.url}/v1")
        summary = run_batch(BatchOptions(input=inp, output=out, endpoint=config, concurrency=2))
    assert summary.exit_code == 3 and "No space left" in summary.stopped and summary.unwritten >= 1
    assert "q3" not in out.read_text()
