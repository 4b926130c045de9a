"""The batch run's cost meter, earlier runs' cost, the run report and the dry-run plan."""

import json
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from apiexec.batch.cost import CostMeter, journal_cost, unpriced_problem, usd, with_cost
from apiexec.batch.dry_run import dry_run
from apiexec.batch.progress import ProgressState
from apiexec.batch.report import REPORT_FORMAT, build_report, write_report
from apiexec.batch.rows import Outcome, anthropic_row, openai_row
from apiexec.batch.summary import BatchSummary
from apiexec.llm.prices import Prices

PRICES = Prices({"m": {"input": 1.0, "output": 2.0}})


def answer(model="m", prompt=1000, completion=500):
    return {"model": model, "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def test_meter_adds_per_model_and_keeps_unpriced_models_apart():
    meter = CostMeter(PRICES)
    meter.add(answer())
    meter.add(answer("m-2025-01-01"))
    meter.add(answer("mystery"))
    meter.add({"model": "m"})  # no usage: nothing to count
    assert meter.total == pytest.approx(2 * 0.002)
    assert meter.unpriced == ["mystery"]
    snapshot = meter.snapshot()
    assert snapshot["m"].calls == 1 and snapshot["mystery"].cost is None
    lines = meter.render_lines()
    assert "mystery no price" in lines[0] and "no price for mystery" in lines[1]


def test_meter_counts_only_answered_calls():
    meter = CostMeter(PRICES)
    call = SimpleNamespace(request={"model": "m"})
    ok, failed, cancelled = Future(), Future(), Future()
    ok.set_result(answer())
    failed.set_exception(RuntimeError("x"))
    cancelled.cancel()
    for future in (ok, failed, cancelled):
        meter.on_done(call, future)
    assert meter.total == pytest.approx(0.002)


def test_live_cost_is_shown_only_once_something_is_priced():
    meter = CostMeter(PRICES)
    state = with_cost(lambda: ProgressState(done=1), meter)
    assert state().cost is None
    meter.add(answer())
    assert state().cost == pytest.approx(0.002)


def test_earlier_runs_cost_from_both_row_layouts(tmp_path):
    out = tmp_path / "out.jsonl"
    rows = [
        openai_row("a", "fp", Outcome(status_code=200, body=answer())),
        openai_row("b", "fp", Outcome(status_code=500, body={"error": {"message": "x"}})),
        anthropic_row("c", "fp", Outcome(status_code=200, body={"model": "m", "usage": {"input_tokens": 1000,
                                                                                       "output_tokens": 500}})),
    ]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"torn": ')
    assert journal_cost(out, PRICES) == pytest.approx(0.004)
    assert journal_cost(tmp_path / "none.jsonl", PRICES) == 0.0


def test_unpriced_problem_names_the_model():
    assert unpriced_problem({"model": "m"}, PRICES) is None
    assert "'x'" in unpriced_problem({"model": "x"}, PRICES)
    assert "names no model" in unpriced_problem({}, PRICES)


def test_usd_keeps_the_digits_that_matter():
    assert (usd(1234.5), usd(0.5), usd(0.000123)) == ("$1,234.50", "$0.5000", "$0.000123")


def test_report_of_a_run_without_and_with_cost(tmp_path):
    summary = BatchSummary(lines=3, submitted=3, succeeded=2, failed=1, retries=4, rate_limited=2, wall_seconds=2.0,
                           tokens=30)
    report = build_report(summary)
    assert report["format"] == REPORT_FORMAT and report["status"] == "done" and report["exit_code"] == 2
    assert report["retries"] == 4 and report["rate_limited_429"] == 2
    assert report["timings"] == {"wall_seconds": 2.0, "requests_per_second": 1.5}
    assert "cost" not in report
    summary.cost = CostMeter(PRICES, max_cost=1.0, earlier=0.5)
    summary.cost.add(answer())
    summary.stopped = "budget reached: x"
    report = build_report(summary)
    assert report["status"] == "stopped" and report["exit_code"] == 3
    assert report["cost"]["total_usd"] == pytest.approx(0.002) and report["cost"]["earlier_runs_usd"] == 0.5
    assert report["tokens"] == {"total": 30, "input": 1000, "output": 500, "cached": 0}
    path = tmp_path / "r.json"
    write_report(path, report)
    assert json.loads(path.read_text()) == report
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_dry_run_plan_and_duration(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    bodies = [{"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "x" * 40}]} for _ in range(3)]
    lines = [{"custom_id": f"q{i}", "body": body} for i, body in enumerate(bodies)]
    inp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    plan = dry_run(inp, base_url="http://h/v1", default_endpoint="chat/completions", prices=PRICES,
                   requests_per_minute=60, tokens_per_minute=60)
    assert (plan.lines, plan.to_send, plan.invalid) == (3, 3, 0)
    assert plan.total("prompt_expected") == 3 * (10 + 3)
    assert plan.total("output_max") == plan.total("output_expected") == 300
    assert plan.minutes == pytest.approx(max(3 / 60, (39 + 300) / 60))
    assert plan.cost("worst_cost") >= plan.cost("expected_cost") > 0
    assert not out.exists()


def test_dry_run_with_an_unpriced_model_has_no_total_cost(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"model": "x", "messages": []}) + "\n")
    plan = dry_run(inp, base_url="http://h/v1", default_endpoint="chat/completions", prices=PRICES)
    assert plan.to_send == 1 and plan.cost("worst_cost") is None
    assert "unknown (a model has no price)" in plan.render()
    assert "no rate limit set" in plan.render()


def test_dry_run_duration_follows_each_models_own_limits(tmp_path):
    from apiexec.limits.keyed import KeyedLimits

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"model": model, "max_tokens": 1, "messages": []}) + "\n"
                           for model in ["m"] * 30 + ["x"] * 10))
    limits = KeyedLimits.from_mapping({"m": {"requests_per_minute": 10}})
    plan = dry_run(inp, base_url="http://h/v1", default_endpoint="chat/completions", prices=PRICES,
                   requests_per_minute=100, limits=limits)
    assert plan.minutes == pytest.approx(3.0)  # 30 lines of m at 10 a minute; the overall 40 at 100 is faster
    assert "about 3m00s" in plan.render()


def test_a_run_of_unpriced_models_says_its_cost_is_unknown():
    meter = CostMeter(PRICES)
    meter.add(answer("mystery"))
    assert meter.render_lines()[0].startswith("apiexec: cost unknown (list prices")
