"""`apiexec run` in real subprocesses against a loopback API: locks, signals, breaker, hostile lines, formats."""

import gzip
import json
import signal
import subprocess
import threading
import time

import anthropic.types.messages as anthropic_types
import pytest
from openai.types.chat import ChatCompletion

from tests.integration.batch_support import (
    SECRET,
    LoopbackAPI,
    chat_answer,
    command,
    openai_line,
    rows_of,
    run_cli,
    start_cli,
    write_input,
    write_lines,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUOTA_429 = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                       "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}


def base_args(api, inp, out, *extra):
    return ("run", str(inp), "-o", str(out), "--base-url", f"{api.url}/v1", "--no-progress", *extra)


class Holding:
    """A server answer that waits for `release` after the first `free` requests."""

    def __init__(self, free=0):
        self.free = free
        self.release = threading.Event()
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, path, body):
        with self.lock:
            self.count += 1
            mine = self.count
        if mine > self.free:
            self.release.wait(30)
        return chat_answer(body, path)


def test_a_second_run_on_the_same_output_exits_1_at_once(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 12)
    hold = Holding()
    with LoopbackAPI(hold) as api:
        first = start_cli(*base_args(api, inp, out, "--concurrency", "4"))
        assert api.wait_for_requests(4)
        started = time.monotonic()
        second = run_cli(*base_args(api, inp, out, "--concurrency", "4"))
        took = time.monotonic() - started
        hold.release.set()
        _, err = first.communicate(timeout=30)
        total = len(api.requests)
    assert second.returncode == 1 and took < 10
    assert second.stderr.strip().splitlines() == [line for line in second.stderr.strip().splitlines()
                                                  if line.startswith("apiexec: error:")]
    assert "in use by another apiexec run" in second.stderr
    assert first.returncode == 0, err
    assert total == 12 and len(rows_of(out)) == 12


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_finishes_and_writes_calls_in_flight_then_exits_130(tmp_path, signum):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 30)
    hold = Holding()
    with LoopbackAPI(hold) as api:
        args = base_args(api, inp, out, "--concurrency", "4")
        proc = start_cli(*args)
        assert api.wait_for_requests(4)
        proc.send_signal(signum)
        said = ""
        while "no new calls" not in said:  # the run says it stopped admitting: only then answer
            line = proc.stderr.readline()
            assert line, "the run ended without saying it stopped admitting"
            said += line
        assert "no new calls; finishing the 4 in flight (signal again to abandon them)" in said
        hold.release.set()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        sent_first = len(api.requests)
        rows = rows_of(out)
        assert sent_first == 4 and len(rows) == 4  # every answer in flight written, nothing more sent
        again = run_cli(*args)
        total = len(api.requests)
    assert again.returncode == 0, again.stderr
    assert sorted(r["custom_id"] for r in rows_of(out)) == sorted(f"q{i}" for i in range(30))
    assert total == 30  # nothing sent twice


def test_a_second_sigint_abandons_calls_in_flight_but_keeps_every_answer_received(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 20)
    hold = Holding(free=2)
    with LoopbackAPI(hold) as api:
        proc = start_cli(*base_args(api, inp, out, "--concurrency", "5"))
        assert api.wait_for_requests(7)  # 2 answered, then 5 held in flight
        deadline = time.monotonic() + 10
        while len(rows_of(out) if out.exists() else []) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = proc.communicate(timeout=15)
        took = time.monotonic() - started
        hold.release.set()
    assert proc.returncode == 130, err
    assert took < 10  # did not wait for the held calls
    assert "5 calls in flight were abandoned" in err, err
    assert len(rows_of(out)) == 2


def test_a_refused_account_stops_after_about_the_concurrency(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 400)
    with LoopbackAPI(lambda path, body: (429, QUOTA_429)) as api:
        proc = run_cli(*base_args(api, inp, out, "--concurrency", "8", "--max-retries", "3"))
        sent = len(api.requests)
    assert proc.returncode == 3, proc.stderr
    assert sent <= 8 + 4
    assert "stopped early: the account was refused service (HTTP 429, insufficient_quota)" in proc.stderr
    rows = rows_of(out)
    assert rows and all(r["response"]["status_code"] == 429 and r["response"]["body"] == QUOTA_429 for r in rows)


def test_a_dead_host_stops_the_run(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 200)
    with LoopbackAPI() as api:
        dead = api.url  # the port is closed once the server stops
    proc = run_cli("run", str(inp), "-o", str(out), "--base-url", f"{dead}/v1", "--no-progress",
                   "--concurrency", "4", "--max-retries", "0", "--stop-after-connection-failures", "5")
    assert proc.returncode == 3, proc.stderr
    assert "the host failed to answer 5 calls in a row" in proc.stderr
    rows = rows_of(out)
    assert 5 <= len(rows) <= 4 + 5 and all(r["error"]["code"] == "connection_error" for r in rows)


def test_each_hostile_line_gets_its_own_error_row_and_the_run_goes_on(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        "\ufeff" + openai_line(0),
        openai_line(1, custom_id="brew", method="BREW"),
        openai_line(2, custom_id="root", url="/"),
        openai_line(3, custom_id="escape", url="/v1/../../admin/keys"),
        openai_line(4, custom_id="absolute", url="http://evil.example/v1/chat/completions"),
        openai_line(5, custom_id="dots", url="/v1/chat/./x/../completions"),
        "{not json",
        openai_line(7),
    ]
    inp.write_bytes("".join(line + "\n" for line in lines).encode() + b'{"custom_id": "bad-utf8", "body": {"t": "\xff"}}\n')
    with LoopbackAPI() as api:
        proc = run_cli(*base_args(api, inp, out))
        paths = api.paths()
    assert proc.returncode == 2, proc.stderr
    rows = {r["custom_id"]: r for r in rows_of(out)}
    assert rows["q0"]["error"] is None and rows["q7"]["error"] is None and rows["dots"]["error"] is None
    expected = {"brew": "method 'BREW'", "root": "names no endpoint", "escape": "climbs above the API root",
                "absolute": "not a full URL", "7": "not valid JSON", "9": "not valid UTF-8"}
    for custom_id, fragment in expected.items():
        assert rows[custom_id]["response"] is None and fragment in rows[custom_id]["error"]["message"], custom_id
    assert set(paths) == {"/v1/chat/completions"}
    assert "6 invalid" in proc.stderr


def test_stdin_and_gzip_inputs(tmp_path):
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    gz = tmp_path / "in.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write("".join(openai_line(i) + "\n" for i in range(5)))
    with LoopbackAPI() as api:
        piped = run_cli("run", "-", "-o", str(out1), "--base-url", f"{api.url}/v1", "--no-progress",
                        input="".join(openai_line(i) + "\n" for i in range(5)))
        packed = run_cli(*base_args(api, gz, out2))
    assert piped.returncode == 0 and packed.returncode == 0, (piped.stderr, packed.stderr)
    assert len(rows_of(out1)) == len(rows_of(out2)) == 5


@pytest.mark.parametrize("provider, prefix", [("groq", "/openai/v1"), ("perplexity", "")])
def test_standard_batch_urls_reach_the_providers_path(tmp_path, provider, prefix):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 3)
    with LoopbackAPI() as api:
        proc = run_cli("run", str(inp), "-o", str(out), "--provider", provider, "--base-url", api.url + prefix,
                       "--api-key-env", "K", "--no-progress", env={"K": SECRET})
        paths = api.paths()
    assert proc.returncode == 0, proc.stderr
    assert paths == {f"{prefix}/chat/completions": 3}


def test_openai_format_consumers_read_our_rows_and_errors_file(tmp_path):
    inp, out, errs = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    write_input(inp, 6)
    bad_request = {"error": {"message": "Invalid 'max_tokens'", "type": "invalid_request_error",
                             "param": "max_tokens", "code": None}}

    def respond(path, body):
        return (400, bad_request) if body["messages"][0]["content"].endswith(("1", "4")) else chat_answer(body, path)

    with LoopbackAPI(respond) as api:
        proc = run_cli(*base_args(api, inp, out, "--errors-output", str(errs)))
    assert proc.returncode == 2
    # As OpenAI's batch guide reads results: successes in the output, failures in the error file.
    answers = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        assert row["error"] is None and row["response"]["status_code"] == 200
        answers[row["custom_id"]] = ChatCompletion.model_validate(row["response"]["body"]).choices[0].message.content
    assert set(answers) == {"q0", "q2", "q3", "q5"}
    failures = [json.loads(line) for line in errs.read_text().splitlines()]
    assert {f["custom_id"] for f in failures} == {"q1", "q4"}
    for row in failures:
        assert row["error"] is None and row["response"]["status_code"] == 400
        assert row["response"]["body"] == bad_request and row["response"]["request_id"].startswith("req_")


def test_an_anthropic_message_batches_file(tmp_path):
    inp, out = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    params = {"model": "claude-3-5-haiku-latest", "max_tokens": 16}
    write_lines(inp, [json.dumps({"custom_id": f"req-{i}", "params": {**params, "messages": [
        {"role": "user", "content": f"hello {i}"}]}}) for i in range(4)])
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    def respond(path, body):
        return (400, overloaded) if body["messages"][0]["content"] == "hello 2" else chat_answer(body, path)

    with LoopbackAPI(respond) as api:
        proc = run_cli("run", str(inp), "-o", str(out), "--provider", "anthropic", "--base-url", f"{api.url}/v1",
                       "--api-key-env", "K", "--no-progress", env={"K": SECRET})
        paths = api.paths()
        headers = api.requests[0][2]
    assert proc.returncode == 2, proc.stderr
    assert paths == {"/v1/messages": 4}
    assert headers.get("x-api-key") == SECRET and headers.get("anthropic-version") == "2023-06-01"
    results = {}
    for line in out.read_text().splitlines():
        parsed = anthropic_types.MessageBatchIndividualResponse.model_validate_json(line)
        results[parsed.custom_id] = parsed.result
    assert {k: v.type for k, v in results.items()} == {"req-0": "succeeded", "req-1": "succeeded",
                                                       "req-2": "errored", "req-3": "succeeded"}
    assert results["req-0"].message.content[0].text == "echo: hello 0"
    assert results["req-2"].error.error.type == "overloaded_error"
    assert SECRET not in out.read_text() + proc.stderr


def test_a_different_input_into_an_existing_output_is_sent_and_the_old_rows_set_aside(tmp_path):
    first, second, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    write_lines(first, [openai_line(i, content=f"apples {i}") for i in range(4)])
    write_lines(second, [openai_line(i, content=f"pears {i}") for i in range(3)])  # same ids, other prompts
    with LoopbackAPI() as api:
        assert run_cli(*base_args(api, first, out)).returncode == 0
        proc = run_cli(*base_args(api, second, out))
        total = len(api.requests)
    assert proc.returncode == 0, proc.stderr
    assert total == 7
    rows = rows_of(out)
    assert sorted(r["response"]["body"]["choices"][0]["message"]["content"] for r in rows) == [
        f"echo: pears {i}" for i in range(3)]
    assert "3 lines changed since their earlier answer" in proc.stderr
    assert "4 rows moved to" in proc.stderr
    aside = rows_of(tmp_path / "out.jsonl.set-aside.jsonl")
    assert sorted(r["custom_id"] for r in aside) == ["q0", "q1", "q2", "q3"]


def test_an_output_apiexec_did_not_write_is_refused_unless_forced(tmp_path):
    inp, other = tmp_path / "in.jsonl", tmp_path / "other-input.jsonl"
    write_input(inp, 3)
    write_lines(other, [openai_line(i, content="keep me") for i in range(3)])
    before = other.read_bytes()
    with LoopbackAPI() as api:
        refused = run_cli(*base_args(api, inp, other))
        assert refused.returncode == 1 and other.read_bytes() == before
        assert refused.stderr.count("\n") == 1 and "not an apiexec output file" in refused.stderr
        assert "--force" in refused.stderr
        forced = run_cli(*base_args(api, inp, other, "--force"))
    assert forced.returncode == 0, forced.stderr
    assert len(rows_of(other)) == 3
    assert (tmp_path / "other-input.jsonl.set-aside.jsonl").read_bytes() == before


@pytest.mark.parametrize("args, fragment", [
    (("run", "x.jsonl", "-o", "o.jsonl", "--concurrency", "100000000"), "--concurrency: must be at most 1024"),
    (("run", "x.jsonl", "-o", "o.jsonl", "--concurrency", "0"), "--concurrency: must be >= 1"),
    (("run", "x.jsonl", "-o", "o.jsonl", "--requests-per-minute", "nan"), "--requests-per-minute: must be a finite"),
    (("run", "x.jsonl"), "-o/--output"),
    (("run", "x.jsonl", "-o", "o.jsonl", "--bogus"), "unrecognized arguments: --bogus"),
    (("run", "x.jsonl", "-o", "o.jsonl", "--header", "no colon"), "--header"),
    (("run", "nope.jsonl", "-o", "o.jsonl"), "input: no such file"),
    (("launch",), "invalid choice: 'launch'"),
    (("run", "in.jsonl", "-o", "-"), "output: must be a file"),
    (("run", "in.jsonl", "-o", "no/such/dir/out.jsonl"), "output: directory no/such/dir does not exist"),
    (("run", "in.jsonl", "-o", "o.jsonl", "--errors-output", "nodir/e.jsonl"), "errors_output: directory nodir"),
])
def test_usage_errors_are_one_line_exit_1(tmp_path, monkeypatch, capsys, args, fragment):
    from apiexec.cli import main

    monkeypatch.chdir(tmp_path)
    write_input(tmp_path / "in.jsonl", 1)
    assert main(list(args)) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment in err and err.startswith("apiexec: error: "), err
    assert "usage:" not in err


def test_a_usage_error_from_the_real_command_is_one_line():
    proc = run_cli("run", "x.jsonl", "-o", "o.jsonl", "--concurrency", "100000000")
    assert proc.returncode == 1
    assert proc.stderr == "apiexec: error: argument --concurrency: must be at most 1024, got 100000000\n"


def test_version_and_help_show_defaults():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("apiexec ")
    helptext = run_cli("run", "--help").stdout
    for flag, default in [("--concurrency", "16"), ("--max-retries", "3"), ("--limit-storage", "memory://"),
                          ("--provider", "openai-compatible"), ("--progress-interval", "10.0")]:
        assert flag in helptext and f"(default: {default})" in " ".join(helptext.split())


def test_headers_reach_the_server_and_progress_lines_print_without_a_terminal(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 20)
    with LoopbackAPI(delay=0.05) as api:
        proc = run_cli("run", str(inp), "-o", str(out), "--base-url", f"{api.url}/v1", "--concurrency", "2",
                       "--header", f"X-Team: {SECRET}", "--progress-interval", "0.1")
        headers = api.requests[0][2]
        quiet = run_cli("run", str(inp), "-o", str(tmp_path / "q.jsonl"), "--base-url", f"{api.url}/v1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert headers.get("X-Team") == SECRET and SECRET not in proc.stderr
    progress = [line for line in proc.stderr.splitlines() if " sent, " in line]
    assert progress and "/20 sent" in progress[-1] and "tokens" in progress[-1]
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_the_limit_storage_going_down_stops_the_run(tmp_path, start_redis):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 300)
    redis = start_redis()
    with LoopbackAPI(delay=0.02) as api:
        proc = start_cli(*base_args(api, inp, out, "--concurrency", "4", "--limit-storage", redis.url,
                                    "--requests-per-minute", "100000", "--limit-key", "storage-down"))
        assert api.wait_for_requests(20)
        redis.stop()
        at_stop = len(api.requests)
        _, err = proc.communicate(timeout=30)
        sent = len(api.requests)
    assert proc.returncode == 3, err
    assert "stopped early: the limit storage failed" in err
    assert sent <= at_stop + 16 and sent < 300  # at most what was already admitted
    assert len(rows_of(out)) <= sent


def test_a_signal_while_only_rate_limited_calls_are_left_exits_at_once(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 6)  # all admitted at once; 2 per minute: 4 wait for capacity
    with LoopbackAPI() as api:
        proc = start_cli(*base_args(api, inp, out, "--concurrency", "6", "--requests-per-minute", "2"))
        deadline = time.monotonic() + 20
        while len(rows_of(out) if out.exists() else []) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, err = proc.communicate(timeout=20)
        took = time.monotonic() - started
        sent = len(api.requests)
    assert proc.returncode == 130, err
    assert took < 8 and sent == 2 and len(rows_of(out)) == 2


def test_on_a_terminal_the_bar_shows_sent_lines_tokens_failures_and_a_rate_limit_wait(tmp_path):
    """(A terminal reporting no size at all is covered in the unit tests of progress.)"""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 5)
    with LoopbackAPI() as api:
        cmd, env = command("run", str(inp), "-o", str(out), "--base-url", f"{api.url}/v1", "--requests-per-minute", "2")
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 300, 0, 0))  # wide: nothing cut
        proc = subprocess.Popen(cmd, env=env, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 20
        while b"waiting on limit" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
        os.close(master)
    text = seen.decode(errors="replace")
    assert "2/5" in text and "failed=0" in text and "tokens=16" in text and "waiting on limit=" in text


def test_a_run_over_https_writes_every_answer(tmp_path):
    # Real providers speak HTTPS only: the whole run over TLS, the CA given as
    # users give it to requests (REQUESTS_CA_BUNDLE).
    from tests.helpers import server_tls_context

    context, cert = server_tls_context(tmp_path)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 20)
    with LoopbackAPI(tls=context) as api:
        assert api.url.startswith("https://")
        result = run_cli(*base_args(api, inp, out, "--concurrency", "4"), env={"REQUESTS_CA_BUNDLE": str(cert)})
    assert result.returncode == 0, result.stderr
    rows = rows_of(out)
    assert len(rows) == 20
    assert all(row["response"]["status_code"] == 200 for row in rows)
    assert {row["response"]["body"]["object"] for row in rows} == {"chat.completion"}
