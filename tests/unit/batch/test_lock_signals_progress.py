"""The output lock, the signal watcher and the progress report."""

import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from apiexec.batch.lock import OutputLock, OutputLocked
from apiexec.batch.progress import Progress, ProgressState, plain_line
from apiexec.batch.signals import SignalWatcher


def test_a_second_lock_fails_at_once_and_the_lock_file_goes_away(tmp_path):
    out = tmp_path / "out.jsonl"
    first = OutputLock(out)
    first.acquire()
    started = time.monotonic()
    with pytest.raises(OutputLocked, match="in use by another apiexec run"):
        OutputLock(out).acquire()
    assert time.monotonic() - started < 1.0
    first.release()
    first.release()
    assert not first.lock_path.exists()
    with OutputLock(out):
        pass


def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path):
    out = tmp_path / "out.jsonl"
    code = ("import sys, time; from pathlib import Path; from apiexec.batch.lock import OutputLock\n"
            "lock = OutputLock(Path(sys.argv[1])); lock.acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked):
            OutputLock(out).acquire()
    finally:
        holder.kill()  # kill -9: the kernel releases the lock; the stale file blocks nothing
        holder.wait(10)
    with OutputLock(out):
        pass


def test_signals_reach_the_callback_on_the_watcher_thread_and_handlers_are_restored():
    seen = []
    got = threading.Semaphore(0)

    def on_signal():
        seen.append(threading.current_thread().name)
        got.release()

    before = signal.getsignal(signal.SIGUSR1)
    watcher = SignalWatcher((signal.SIGUSR1, signal.SIGUSR2), on_signal)
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR2)
    assert got.acquire(timeout=5) and got.acquire(timeout=5)
    watcher.close()
    watcher.close()
    assert seen == ["apiexec-signals", "apiexec-signals"]
    assert signal.getsignal(signal.SIGUSR1) is before


def test_off_the_main_thread_no_handler_is_installed():
    before = signal.getsignal(signal.SIGUSR1)
    result = {}

    def run():
        watcher = SignalWatcher((signal.SIGUSR1,), lambda: None)
        result["handler"] = signal.getsignal(signal.SIGUSR1)
        watcher.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert result["handler"] is before


def test_plain_line_counts_sent_lines_only_and_shows_waiting():
    state = ProgressState(total=100, done=10, failed=2, skipped=900, tokens=1234, elapsed=5.0, waiting=75.0)
    line = plain_line(state)
    assert line.startswith("apiexec: 10/100 sent, 900 skipped, 2 failed, 2.0/s, ETA 45s, 1234 tokens")
    assert line.endswith("waiting on a limit for 1m15s")
    assert "ETA" not in plain_line(ProgressState(total=None, done=3, elapsed=1.0))


def test_lines_mode_prints_a_line_every_interval_and_stops_on_close():
    stream = io.StringIO()
    states = iter(range(1000))
    progress = Progress("lines", lambda: ProgressState(done=next(states), elapsed=1.0), stream, interval=0.05)
    time.sleep(0.3)
    progress.close()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 12
    count = len(lines)
    time.sleep(0.15)
    assert len(stream.getvalue().splitlines()) == count


def test_bar_mode_shows_failures_tokens_and_waiting():
    stream = io.StringIO()
    progress = Progress("bar", lambda: ProgressState(total=10, done=4, failed=1, tokens=99, elapsed=1.0, waiting=3.0),
                        stream)
    progress.close()
    text = stream.getvalue()
    assert "4/10" in text and "failed=1" in text and "tokens=99" in text and "waiting on limit=3s" in text


def test_off_mode_prints_nothing():
    stream = io.StringIO()
    Progress("off", lambda: ProgressState(), stream, interval=0.01).close()
    assert stream.getvalue() == ""


def test_a_terminal_reporting_no_size_still_gets_a_bar():
    import pty
    import select

    master, slave = pty.openpty()  # a fresh pty reports 0x0, as some CI and `docker -t` terminals do
    try:
        with os.fdopen(slave, "w", closefd=False) as stream:
            progress = Progress("bar", lambda: ProgressState(total=8, done=2, tokens=5, elapsed=1.0), stream)
            progress.close()
        chunks = []
        while select.select([master], [], [], 0.2)[0]:  # everything written is already in the pty
            chunks.append(os.read(master, 65536))
        text = b"".join(chunks).decode(errors="replace")
    finally:
        os.close(slave)
        os.close(master)
    assert "2/8" in text and "tokens=5" in text
