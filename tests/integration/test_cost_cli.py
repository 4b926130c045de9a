"""``apiexec run`` with --max-cost, --prices, --report and --dry-run, as a user runs it."""

import json
from pathlib import Path

import pytest

from apiexec.mock.server import MockServer, MockServerConfig
from tests.integration.batch_support import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat.jsonl"


def target(server):
    return ["--provider", "openai-compatible", "--base-url", f"{server.url}/v1"]


def prices_file(tmp_path, **models):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(models or {"gpt-4o-mini": {"input": 100, "output": 1000}}))
    return path


def answers(out):
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return [row["response"]["body"] for row in rows if row.get("response") and row["response"]["status_code"] == 200]


def test_dry_run_sends_nothing_and_estimates_the_example_within_10_percent(tmp_path):
    out, plan = tmp_path / "out.jsonl", tmp_path / "plan.json"
    with MockServer(MockServerConfig()) as server:
        dry = run_cli("run", str(EXAMPLE), "-o", str(out), *target(server), "--dry-run", "--report", str(plan),
                      "--requests-per-minute", "600")
        assert server.stats.requests == 0 and not out.exists()
        real = run_cli("run", str(EXAMPLE), "-o", str(out), *target(server), "--no-progress")
    assert dry.returncode == 0, dry.stderr
    assert real.returncode == 0, real.stderr
    assert "nothing was sent" in dry.stdout and "50 to send" in dry.stdout
    estimate = json.loads(plan.read_text())
    billed_prompt = sum(answer["usage"]["prompt_tokens"] for answer in answers(out))
    assert abs(estimate["prompt_tokens"]["expected"] - billed_prompt) <= 0.10 * billed_prompt
    assert estimate["prompt_tokens"]["reserved"] >= estimate["prompt_tokens"]["expected"]
    assert estimate["output_tokens"]["max"] == 50 * 64
    billed_out = sum(answer["usage"]["completion_tokens"] for answer in answers(out))
    assert estimate["output_tokens"]["expected"] >= billed_out
    assert estimate["cost_usd"]["worst_case"] >= estimate["cost_usd"]["expected"] > 0
    assert estimate["minutes"] == pytest.approx(50 / 600)
    assert "about 5s" in dry.stdout


def test_dry_run_after_a_partial_run_counts_only_what_is_left(tmp_path):
    out = tmp_path / "out.jsonl"
    prices = prices_file(tmp_path)
    with MockServer(MockServerConfig()) as server:
        first = run_cli("run", str(EXAMPLE), "-o", str(out), *target(server), "--prices", str(prices),
                        "--max-cost", "0.4", "--no-progress")
        done = len(answers(out))
        dry = run_cli("run", str(EXAMPLE), "-o", str(out), *target(server), "--dry-run")
        assert server.stats.requests == done
    assert first.returncode == 3 and 0 < done < 50
    assert f"{50 - done} to send, {done} already done" in dry.stdout


def test_dry_run_lists_invalid_and_unpriced_lines(tmp_path):
    inp = tmp_path / "in.jsonl"
    good = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    inp.write_text("\n".join([
        json.dumps({"custom_id": "a", "body": good}),
        json.dumps({"custom_id": "b", "body": dict(good, model="mystery-model")}),
        json.dumps({"custom_id": "a", "body": good}),
        "{broken",
    ]) + "\n")
    dry = run_cli("run", str(inp), "-o", str(tmp_path / "out.jsonl"), "--mock", "--dry-run", "--max-cost", "1")
    assert dry.returncode == 2
    assert "1 to send" in dry.stdout and "3 invalid" in dry.stdout
    assert "mystery-model" in dry.stdout and "duplicate custom_id 'a'" in dry.stdout


def test_max_cost_stops_with_exit_3_and_a_higher_cap_finishes(tmp_path):
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    prices = prices_file(tmp_path)
    with MockServer(MockServerConfig(latency_ms=20)) as server:
        args = ["run", str(EXAMPLE), "-o", str(out), *target(server), "--prices", str(prices), "--concurrency", "32"]
        first = run_cli(*args, "--max-cost", "0.3", "--report", str(report), "--no-progress")
        spent_first = sum((a["usage"]["prompt_tokens"] * 100 + a["usage"]["completion_tokens"] * 1000) / 1e6
                          for a in answers(out))
        stopped = json.loads(report.read_text())
        second = run_cli(*args, "--max-cost", "2", "--report", str(report), "--no-progress")
        finished = json.loads(report.read_text())
    assert first.returncode == 3, first.stderr
    assert "stopped early: budget reached" in first.stderr
    assert "the unsent lines are left for the next run" in first.stderr
    assert spent_first <= 0.3
    assert stopped["status"] == "stopped" and stopped["exit_code"] == 3
    assert stopped["cost"]["total_usd"] == pytest.approx(spent_first)
    assert stopped["cost"]["max_cost_usd"] == 0.3
    assert second.returncode == 0, second.stderr
    assert len(answers(out)) == 50
    assert finished["counts"]["skipped"] == stopped["counts"]["succeeded"]
    assert finished["cost"]["earlier_runs_usd"] == pytest.approx(spent_first)
    assert "with earlier runs" in second.stderr and "cap $2" in second.stderr


def test_report_has_counts_tokens_cost_timings_429s_and_retries(tmp_path):
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    with MockServer(MockServerConfig(faults=("429:50", "500"))) as server:
        result = run_cli("run", str(EXAMPLE), "-o", str(out), *target(server), "--report", str(report),
                         "--no-progress", "--concurrency", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["format"] == "apiexec-run-report/1" and data["status"] == "done"
    assert data["counts"]["lines"] == 50 and data["counts"]["succeeded"] == 50
    billed = answers(out)
    assert data["tokens"]["input"] == sum(a["usage"]["prompt_tokens"] for a in billed)
    assert data["tokens"]["output"] == sum(a["usage"]["completion_tokens"] for a in billed)
    assert data["rate_limited_429"] == 1 and data["retries"] == 2
    assert data["timings"]["wall_seconds"] > 0
    model = data["cost"]["by_model"]
    assert list(model) == ["gpt-4o-mini"] and model["gpt-4o-mini"]["calls"] == 50
    assert data["cost"]["total_usd"] > 0 and data["cost"]["prices_as_of"]
    assert "list prices as of" in result.stderr and "gpt-4o-mini $" in result.stderr


def test_the_progress_line_shows_the_cost_so_far(tmp_path):
    out = tmp_path / "out.jsonl"
    prices = prices_file(tmp_path)
    with MockServer(MockServerConfig(latency_ms=100)) as server:
        result = run_cli("run", str(EXAMPLE), "-o", str(out), *target(server), "--prices", str(prices),
                         "--concurrency", "4", "--progress-interval", "0.3")
    progress = [line for line in result.stderr.splitlines() if " sent, " in line]
    assert result.returncode == 0 and progress
    assert all("$" in line for line in progress)


def test_bad_prices_or_cap_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpt-4o-mini": {"input": 1}}')
    result = run_cli("run", str(EXAMPLE), "-o", str(tmp_path / "o.jsonl"), "--mock", "--prices", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["apiexec: error: prices: model 'gpt-4o-mini': missing output "
                                                  "(USD per 1M tokens)"]
    result = run_cli("run", str(EXAMPLE), "-o", str(tmp_path / "o.jsonl"), "--mock", "--max-cost", "-1")
    assert result.returncode == 1 and "--max-cost" in result.stderr
    result = run_cli("run", str(EXAMPLE), "-o", str(tmp_path / "o.jsonl"), "--mock", "--report",
                     str(tmp_path / "no" / "r.json"))
    assert result.returncode == 1 and "report" in result.stderr and not (tmp_path / "o.jsonl").exists()
