"""A spending cap over loopback: 32 calls in flight against the mock server, which reports
known usage (prompt ceil(chars/4) + 3 per message, completion min(max_tokens, 12)).
The cap holds in every run, most of it is used, and a resumed run under a higher cap
finishes the rest; two processes sharing a SQLite budget never cross it together."""

import json
import multiprocessing

import pytest

from apiexec import APICalling, BatchOptions, BudgetExceeded, Endpoint, RateLimitedExecutor, run_batch
from apiexec.http.presets import preset_config
from apiexec.llm.prices import Prices
from apiexec.mock.server import MockServer, MockServerConfig
from apiexec.spending import BudgetAdmission

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Dollars per 1M tokens: large, so that each answer costs about a cent.
INPUT_PRICE, OUTPUT_PRICE = 100.0, 1000.0
PRICES = Prices({"gpt-4o-mini": {"input": INPUT_PRICE, "output": OUTPUT_PRICE}})


def body(i):
    return {"model": "gpt-4o-mini", "max_tokens": 64,
            "messages": [{"role": "user", "content": f"In one sentence, what is topic number {i}?"}]}


def write_input(path, n):
    path.write_text("".join(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": body(i)}) + "\n" for i in range(n)))


def billed(usage):
    """What an answer cost, computed by hand from the usage the server reported."""
    return (usage["prompt_tokens"] * INPUT_PRICE + usage["completion_tokens"] * OUTPUT_PRICE) / 1e6


def spent_in(*outputs):
    rows = [json.loads(line) for out in outputs if out.exists() for line in out.read_text().splitlines()]
    answered = [row["response"]["body"] for row in rows if row.get("response") and row["response"]["status_code"] == 200]
    return sum(billed(answer["usage"]) for answer in answered), len(answered)


@pytest.fixture
def server():
    with MockServer(MockServerConfig(latency_ms=150, latency_jitter_ms=50, seed=7)) as mock:
        yield mock


def options(server, inp, out, **changes):
    config = preset_config("openai-compatible", base_url=f"{server.url}/v1")
    return BatchOptions(input=inp, output=out, endpoint=config, concurrency=32, prices=PRICES, **changes)


@pytest.mark.parametrize("cap", [0.30, 2.50, 4.00])
def test_32_wide_the_cap_holds_and_most_of_it_is_used(tmp_path, server, cap):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 400)
    worst = PRICES.worst_case(body(100))
    summary = run_batch(options(server, inp, out, max_cost=cap, adaptive=False))
    spent, answered = spent_in(out)
    assert summary.exit_code == 3 and "budget" in summary.stopped
    if cap >= 32 * worst:  # room for 32 worst cases at once: all 32 workers were busy
        assert server.stats.max_in_flight >= 24
    assert server.stats.requests == answered == summary.succeeded  # nothing sent beyond what was answered
    assert spent <= cap
    assert spent >= 0.75 * cap
    assert summary.cost.total == pytest.approx(spent)
    assert summary.not_sent + summary.succeeded == summary.submitted


def test_resume_under_the_same_cap_sends_nothing_and_a_higher_cap_finishes_the_rest(tmp_path, server):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 120)
    first = run_batch(options(server, inp, out, max_cost=0.5))
    spent_first, answered_first = spent_in(out)
    assert first.exit_code == 3 and 0 < answered_first < 120 and spent_first <= 0.5

    again = run_batch(options(server, inp, out, max_cost=0.5))  # the cap covers the job, earlier runs included
    assert again.exit_code == 3 and again.succeeded == 0
    assert again.cost.earlier == pytest.approx(spent_first)

    requests_before = server.stats.requests
    final = run_batch(options(server, inp, out, max_cost=5.0))
    spent_all, answered_all = spent_in(out)
    assert final.exit_code == 0 and final.succeeded == 120 - answered_first
    assert final.skipped == answered_first
    assert answered_all == 120 and server.stats.requests - requests_before == final.succeeded
    assert spent_all <= 5.0


def test_library_executor_32_wide_never_crosses_the_cap(server):
    cap = BudgetAdmission(max_cost=0.5, prices=PRICES)
    config = preset_config("openai-compatible", base_url=f"{server.url}/v1", endpoint="chat")
    with Endpoint(config) as endpoint, RateLimitedExecutor(concurrency_limit=32, policies=[cap]) as executor:
        calls = [APICalling(endpoint, body(i)) for i in range(200)]
        futures = [executor.submit(call) for call in calls]
        outcomes = [future.exception(30) for future in futures]
    answers = [call.execution.result for call, error in zip(calls, outcomes) if error is None]
    spent = sum(billed(answer["usage"]) for answer in answers)
    refused = [error for error in outcomes if error is not None]
    assert refused and all(isinstance(error, BudgetExceeded) for error in refused)
    assert spent <= 0.5 and spent >= 0.75 * 0.5
    assert cap.spent == pytest.approx(spent) and cap.reserved == 0
    assert server.stats.requests == len(answers)


def test_unknown_price_lines_are_refused_under_a_cap_and_never_sent(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = []
    for i in range(6):
        request = body(i) if i % 2 else dict(body(i), model="mystery-model")
        lines.append(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": request}))
    inp.write_text("\n".join(lines) + "\n")
    with MockServer(MockServerConfig(record_bodies=True)) as mock:
        summary = run_batch(options(mock, inp, out, max_cost=1.0))
        sent = [json.loads(raw)["model"] for raw in mock.stats.bodies]
    rows = {row["custom_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert sent == ["gpt-4o-mini"] * 3
    assert summary.succeeded == 3 and summary.invalid == 3 and summary.exit_code == 2
    refused = rows["q0"]["error"]
    assert "mystery-model" in refused["message"] and "--prices" in refused["message"]


def _run_share(url, storage, inp, out, results, start):
    config = preset_config("openai-compatible", base_url=f"{url}/v1")
    start.wait(30)  # both processes start spending together
    summary = run_batch(BatchOptions(input=inp, output=out, endpoint=config, concurrency=16, prices=PRICES,
                                     max_cost=0.6, limit_storage=storage, limit_key="shared-budget"))
    results.put((summary.exit_code, summary.succeeded))


def test_two_processes_sharing_a_sqlite_budget_never_cross_it_together(tmp_path, server):
    storage = f"sqlite:///{tmp_path}/limits.db"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = context.Barrier(2)
    jobs = []
    for name in ("a", "b"):
        inp = tmp_path / f"{name}.jsonl"
        write_input(inp, 150)
        jobs.append(context.Process(target=_run_share, args=(server.url, storage, inp, tmp_path / f"out-{name}.jsonl",
                                                             results, start)))
    for job in jobs:
        job.start()
    outcomes = [results.get(timeout=50) for _ in jobs]
    for job in jobs:
        job.join(10)
    spent, answered = spent_in(tmp_path / "out-a.jsonl", tmp_path / "out-b.jsonl")
    # Both stopped at the one budget (a process that started late may find it spent by the other).
    assert sorted(code for code, _ in outcomes) == [3, 3]
    assert sum(succeeded for _, succeeded in outcomes) == answered
    assert spent <= 0.6 and spent >= 0.75 * 0.6
    assert server.stats.requests == answered


def test_the_cap_holds_when_answers_arrive_while_others_wait(tmp_path):
    # A slow server: most of the budget sits in reservations of calls in flight at any moment.
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 150)
    with MockServer(MockServerConfig(latency_ms=120, latency_jitter_ms=100, seed=3)) as mock:
        summary = run_batch(options(mock, inp, out, max_cost=0.4, adaptive=False))
        spent, answered = spent_in(out)
        assert mock.stats.requests == answered
    assert spent <= 0.4 and spent >= 0.75 * 0.4 and summary.exit_code == 3
