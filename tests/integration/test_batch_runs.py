"""run_batch from Python and a real full disk: every preset's URL join over loopback, Ctrl-C re-raised
after the journal is safe, a failing disk stopping admission at once."""

import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import urllib.parse

import pytest

from apiexec import BatchOptions, BatchSummary, run_batch
from apiexec.batch import BatchInterrupted
from apiexec.batch.journal import Journal
from apiexec.errors import ConfigError
from apiexec.http.presets import PRESETS, preset_config
from tests.integration.batch_support import LoopbackAPI, chat_answer, rows_of, run_cli, write_input
from tests.integration.test_batch_cli import Holding

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Roots of presets whose base URL the user gives (provider-facts.md).
USER_ROOTS = {"azure": "https://res.openai.azure.com/openai/v1"}


def options(api_url, inp, out, **changes):
    config = preset_config("openai-compatible", base_url=f"{api_url}/v1")
    return BatchOptions(input=inp, output=out, endpoint=config, **changes)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_sends_a_standard_batch_line_to_its_own_path(tmp_path, name):
    root = PRESETS[name].base_url or USER_ROOTS.get(name, "http://127.0.0.1/v1")
    prefix = urllib.parse.urlsplit(root).path.rstrip("/")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 2)
    with LoopbackAPI() as api:
        config = preset_config(name, base_url=api.url + prefix, api_key="test-key")
        summary = run_batch(BatchOptions(input=inp, output=out, endpoint=config, concurrency=2))
        paths = api.paths()
    assert summary.exit_code == 0 and summary.succeeded == 2
    assert paths == {f"{prefix}/chat/completions": 2}


def test_ctrl_c_from_python_is_reraised_after_the_answers_in_flight_are_written(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 40)
    hold = Holding()
    before = signal.getsignal(signal.SIGINT)

    stopped = threading.Event()

    class StopSeen(logging.Handler):
        def emit(self, record):
            if "no new calls" in record.getMessage():
                stopped.set()

    def interrupt_when_busy():
        api.wait_for_requests(3)
        os.kill(os.getpid(), signal.SIGINT)
        stopped.wait(10)  # answer only once the run stopped admitting
        hold.release.set()

    seen = StopSeen()
    logging.getLogger("apiexec.batch").addHandler(seen)
    with LoopbackAPI(hold) as api:
        threading.Thread(target=interrupt_when_busy, daemon=True).start()
        try:
            with pytest.raises(KeyboardInterrupt) as caught:
                run_batch(options(api.url, inp, out, concurrency=3))
        finally:
            logging.getLogger("apiexec.batch").removeHandler(seen)
        sent = len(api.requests)
    assert isinstance(caught.value, BatchInterrupted)
    summary = caught.value.summary
    assert summary.interrupted and summary.exit_code == 130 and summary.succeeded == sent == 3
    assert len(rows_of(out)) == 3
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.timeout(30)
def test_a_ctrl_c_between_a_submit_and_its_callback_does_not_hang_the_run(tmp_path, monkeypatch):
    """SIGINT not among the stop signals: Python raises KeyboardInterrupt at any point of the reader.

    Landing after a call was queued but before its done-callback was attached,
    it left a call counted that nothing would uncount: the run waited for a
    second Ctrl-C. It now ends once the executor has nothing left.
    """
    from apiexec.rate_limited import RateLimitedExecutor

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 50)
    submit = RateLimitedExecutor.submit
    count = [0]

    def interrupted_submit(self, call):
        future = submit(self, call)
        count[0] += 1
        if count[0] == 5:

            def ctrl_c(callback):
                raise KeyboardInterrupt  # as the default SIGINT handler would, before the callback is attached

            future.add_done_callback = ctrl_c
        return future

    monkeypatch.setattr(RateLimitedExecutor, "submit", interrupted_submit)
    with LoopbackAPI() as api:
        with pytest.raises(BatchInterrupted) as caught:
            run_batch(options(api.url, inp, out, concurrency=2, stop_signals=(signal.SIGTERM,)))
        summary = caught.value.summary
        assert summary.interrupted and summary.abandoned == 1  # the call without a callback: left for the next run
        assert len(rows_of(out)) == summary.succeeded <= 5
        monkeypatch.setattr(RateLimitedExecutor, "submit", submit)
        again = run_batch(options(api.url, inp, out, concurrency=2))
    assert again.exit_code == 0
    ids = [row["custom_id"] for row in rows_of(out)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 50  # one row per line, none twice


def test_a_failing_disk_stops_admitting_at_once(tmp_path, monkeypatch):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 300)
    real_write = Journal.write
    written = []
    lock = threading.Lock()

    def disk_fills_after_ten(self, row):
        with lock:
            if len(written) >= 10:
                raise OSError(28, "No space left on device")
            real_write(self, row)
            written.append(row["custom_id"])

    monkeypatch.setattr(Journal, "write", disk_fills_after_ten)
    with LoopbackAPI() as api:
        summary = run_batch(options(api.url, inp, out, concurrency=4))
        sent = len(api.requests)
    assert summary.exit_code == 3 and "No space left on device" in summary.stopped
    assert sent <= 10 + 4 + 2  # what was written, what was in flight, a couple racing the trip
    assert summary.unwritten == sent - 10 and len(rows_of(out)) == 10
    assert "could not be written" in summary.render()


def test_options_are_checked_naming_the_field(tmp_path):
    config = preset_config("openai-compatible", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="^concurrency: must be at most 1024"):
        BatchOptions(input=tmp_path / "i", output=tmp_path / "o", endpoint=config, concurrency=100_000_000)
    with pytest.raises(ConfigError, match="^errors_output: must not be the output"):
        BatchOptions(input=tmp_path / "i", output=tmp_path / "o", endpoint=config, errors_output=tmp_path / "o")
    with pytest.raises(ConfigError, match="^output: must not be the input"):
        BatchOptions(input=tmp_path / "i", output=tmp_path / "i", endpoint=config)
    assert isinstance(BatchSummary().exit_code, int)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and mount(8)); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the simulated full disk test covers this")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_tiny_disk_filling_up_stops_the_run_and_the_rest_is_sent_later(tmp_path, tiny_disk):
    inp, out = tmp_path / "in.jsonl", tiny_disk / "out.jsonl"
    write_input(inp, 200)
    padding = "x" * 3000  # ~3 KB rows: the 64 KiB disk holds about 20

    def big(path, body):
        status, answer = chat_answer(body, path)
        answer["choices"][0]["message"]["content"] += padding
        return status, answer

    with LoopbackAPI(big) as api:
        args = ("run", str(inp), "-o", str(out), "--base-url", f"{api.url}/v1", "--no-progress", "--concurrency", "4")
        proc = run_cli(*args)
        sent = len(api.requests)
        assert proc.returncode == 3, proc.stderr
        assert "No space left on device" in proc.stderr and "could not be written" in proc.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]  # every row whole
        assert 5 <= len(rows) < 200 and sent <= len(rows) + 4 + 2
        # Free space elsewhere: the same journal moved to a roomy disk resumes.
        roomy = tmp_path / "out.jsonl"
        shutil.copy(out, roomy)
        again = run_cli("run", str(inp), "-o", str(roomy), "--base-url", f"{api.url}/v1", "--no-progress")
        total = len(api.requests)
    assert again.returncode == 0, again.stderr
    assert sorted(r["custom_id"] for r in rows_of(roomy)) == sorted(f"q{i}" for i in range(200))
    assert total <= 200 + (sent - len(rows))  # only the answers that could not be written are paid twice


def test_failures_kept_in_the_errors_file_are_dropped_once_they_succeed(tmp_path):
    inp, out, errs = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    write_input(inp, 6)
    failing = {"on": True}

    def respond(path, body):
        if failing["on"] and body["messages"][0]["content"].endswith(("2", "5")):
            return 400, {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}}
        return chat_answer(body, path)

    with LoopbackAPI(respond) as api:
        first = run_batch(options(api.url, inp, out, errors_output=errs))
        assert first.exit_code == 2 and sorted(r["custom_id"] for r in rows_of(errs)) == ["q2", "q5"]
        failing["on"] = False
        second = run_batch(options(api.url, inp, out, errors_output=errs))
        total = len(api.requests)
    assert second.exit_code == 0 and second.skipped == 4 and second.succeeded == 2
    assert total == 8
    assert sorted(r["custom_id"] for r in rows_of(out)) == [f"q{i}" for i in range(6)]
    assert rows_of(errs) == []


def test_bare_bodies_of_another_input_are_not_taken_for_done(tmp_path):
    first, second, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    body = {"model": "m", "messages": [{"role": "user", "content": ""}]}
    first.write_text("".join(json.dumps({**body, "messages": [{"role": "user", "content": f"a{i}"}]}) + "\n"
                             for i in range(3)))
    second.write_text("".join(json.dumps({**body, "messages": [{"role": "user", "content": f"b{i}"}]}) + "\n"
                              for i in range(3)))
    with LoopbackAPI() as api:
        run_batch(options(api.url, first, out))
        summary = run_batch(options(api.url, second, out))
    assert summary.skipped == 0 and summary.succeeded == 3 and summary.changed == 3 and summary.set_aside == 3
    answers = sorted(r["response"]["body"]["choices"][0]["message"]["content"] for r in rows_of(out))
    assert answers == ["echo: b0", "echo: b1", "echo: b2"]


def test_from_another_thread_no_signal_is_taken_over_and_the_run_completes(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 10)
    before = signal.getsignal(signal.SIGINT)
    result = {}
    with LoopbackAPI() as api:
        worker = threading.Thread(target=lambda: result.update(summary=run_batch(options(api.url, inp, out))))
        worker.start()
        worker.join(30)
    assert result["summary"].exit_code == 0 and len(rows_of(out)) == 10
    assert signal.getsignal(signal.SIGINT) is before
