"""`apiexec run` fits the server: adaptive concurrency against a capped server, limits per model."""

import json
import time

import pytest

from tests.integration.batch_support import rows_of, run_cli
from tests.integration.fit_support import CappedServer, PerModelServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Seconds each call takes at the capped server (ideal run: 240 / 8 * LATENCY).
LATENCY = 0.1


def write_models(path, models):
    with path.open("w") as f:
        for i, model in enumerate(models):
            body = {"model": model, "messages": [{"role": "user", "content": f"line {i}"}], "max_tokens": 5}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
            f.write("\n")


def statuses(out):
    return [row["response"]["status_code"] if row.get("response") else None for row in rows_of(out)]


def test_a_run_at_concurrency_64_fits_a_server_that_takes_8(tmp_path):
    """The issue's acceptance test: <= 10 % rejected, within 2x of the ideal time."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_models(inp, ["m"] * 240)
    with CappedServer(capacity=8, latency=LATENCY) as server:
        started = time.monotonic()
        proc = run_cli("run", str(inp), "-o", str(out), "--base-url", server.url, "--concurrency", "64",
                       "--no-progress")
        wall = time.monotonic() - started
    ideal = 240 / 8 * LATENCY
    sent = server.accepted + server.rejected
    print(f"accepted {server.accepted}, rejected {server.rejected} ({server.rejected / sent:.1%}), "
          f"server span {server.span:.2f}s, wall {wall:.2f}s, ideal {ideal:.2f}s")
    assert proc.returncode == 0, proc.stderr
    assert statuses(out) == [200] * 240
    assert server.accepted == 240
    assert server.rejected <= 0.10 * sent
    assert server.span <= 2 * ideal


def test_without_adaptation_the_same_run_floods_the_server(tmp_path):
    """The control: a fixed --concurrency 64 gets most first attempts refused."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_models(inp, ["m"] * 64)
    with CappedServer(capacity=8, latency=0.1) as server:
        run_cli("run", str(inp), "-o", str(out), "--base-url", server.url, "--concurrency", "64",
                "--no-progress", "--no-adaptive", "--max-retries", "0")
    assert server.rejected >= 40  # 64 at once, 8 taken


def test_a_slow_model_does_not_hold_up_the_other_models_lines(tmp_path):
    """One model limited to 2 req/s by the server (429 + headers): the other finishes long before it."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    models = ["slow" if i % 5 == 0 else "fast" for i in range(60)]  # 12 slow, 48 fast, interleaved
    write_models(inp, models)
    with PerModelServer(slow_model="slow", rate=2.0, burst=2.0) as server:
        proc = run_cli("run", str(inp), "-o", str(out), "--base-url", server.url, "--no-progress")
    slow_done, fast_done = max(server.done["slow"]), max(server.done["fast"])
    print(f"fast lines done at {fast_done:.2f}s, slow lines at {slow_done:.2f}s; 429s {server.rejected}")
    assert proc.returncode == 0, proc.stderr
    assert statuses(out) == [200] * 60
    assert len(server.done["fast"]) == 48 and len(server.done["slow"]) == 12
    assert slow_done >= 4.0  # the server's pace: 12 calls at 2/s after a burst of 2
    assert fast_done < 0.5 * slow_done
    assert server.rejected.get("fast", 0) == 0


def test_limits_file_paces_a_model_before_the_server_must_refuse(tmp_path):
    """--limits (TOML) gives the slow model its limit up front: (almost) no 429s, others unlimited."""
    inp, out, limits = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "limits.toml"
    write_models(inp, ["slow" if i % 4 == 0 else "fast" for i in range(24)])  # 6 slow, 18 fast
    limits.write_text('[slow]\nrequests_per_minute = 120\nburst = 1\n\n["*"]\n')
    with PerModelServer(slow_model="slow", rate=2.0, burst=2.0) as server:
        proc = run_cli("run", str(inp), "-o", str(out), "--base-url", server.url, "--no-progress",
                       "--limits", str(limits))
    assert proc.returncode == 0, proc.stderr
    assert statuses(out) == [200] * 24
    assert server.rejected.get("slow", 0) == 0
    assert max(server.done["fast"]) < 0.5 * max(server.done["slow"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"gpt-4o": {"requests_per_minut": 5}}', "limits limits.json[gpt-4o].requests_per_minut: unknown setting"),
        ('{"gpt-4o": {"requests_per_minute": 0}}', "limits limits.json[gpt-4o].requests_per_minute: must be"),
        ('{"gpt-4o": 5}', "limits limits.json[gpt-4o]: must be a table"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_a_bad_limits_file_is_a_one_line_usage_error(tmp_path, text, message):
    inp, out, limits = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "limits.json"
    write_models(inp, ["m"])
    limits.write_text(text)
    proc = run_cli("run", str(inp), "-o", str(out), "--base-url", "http://127.0.0.1:9/v1", "--no-progress",
                   "--limits", str(limits))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_slow_models_lines_never_fill_the_whole_window(tmp_path):
    """More slow lines than the run holds at once (window 16 at --concurrency 2): the fast ones still go."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    models = ["slow"] * 30 + ["fast"] * 30  # file order puts every slow line first
    write_models(inp, models)
    with PerModelServer(slow_model="slow", rate=8.0, burst=2.0) as server:
        proc = run_cli("run", str(inp), "-o", str(out), "--base-url", server.url, "--no-progress",
                       "--concurrency", "2")
    slow_done, fast_done = max(server.done["slow"]), max(server.done["fast"])
    print(f"fast lines done at {fast_done:.2f}s, slow lines at {slow_done:.2f}s; 429s {server.rejected}")
    assert proc.returncode == 0, proc.stderr
    assert statuses(out) == [200] * 60
    assert slow_done >= 3.0  # 30 calls at 8/s
    assert fast_done < 0.5 * slow_done


def test_two_processes_share_one_adaptive_limit_through_sqlite(tmp_path):
    """Two runs naming one SQLite storage stay below the server's 8 together."""
    from tests.integration.batch_support import start_cli

    storage = f"sqlite:///{tmp_path / 'limits.db'}"
    runs = []
    with CappedServer(capacity=8, latency=LATENCY) as server:
        for name in ("a", "b"):
            inp, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-out.jsonl"
            write_models(inp, ["m"] * 120)
            runs.append((out, start_cli("run", str(inp), "-o", str(out), "--base-url", server.url,
                                        "--concurrency", "64", "--no-progress", "--limit-storage", storage,
                                        "--limit-key", "fleet")))
        for _, proc in runs:
            proc.wait(50)
            assert proc.returncode == 0, proc.stderr.read()
    sent = server.accepted + server.rejected
    print(f"two processes: accepted {server.accepted}, rejected {server.rejected} ({server.rejected / sent:.1%}), "
          f"server span {server.span:.2f}s")
    assert all(statuses(out) == [200] * 120 for out, _ in runs)
    assert server.rejected <= 0.10 * sent
    assert server.span <= 2 * (240 / 8 * LATENCY) + 1.0  # two interpreters start: a second's slack
