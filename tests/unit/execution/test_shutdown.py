"""Leaving the executor: in-flight calls finish, unstarted calls are cancelled."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from unittest.mock import Mock

import pytest

from apiexec import APICalling, Event, ExecutionStatus, Executor, QueueConfig, RateLimitedExecutor
from tests.helpers import Recorder, work

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_exit_lets_inflight_finish_and_cancels_unstarted():
    rec = Recorder()
    gate = threading.Event()
    events = [work(rec, i, gate=gate) for i in range(10)]
    ex = Executor(Event, QueueConfig(queue_capacity=100, concurrency_limit=2))
    with ex:
        futures = [ex.submit(e) for e in events]
        deadline = time.monotonic() + 5
        while len(rec.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        threading.Timer(0.2, gate.set).start()  # in-flight calls finish while __exit__ waits
    statuses = [e.execution.status for e in events]
    assert statuses.count(ExecutionStatus.COMPLETED) == 2
    assert statuses.count(ExecutionStatus.CANCELLED) == 8
    assert sum(f.cancelled() for f in futures) == 8
    assert all(f.done() for f in futures)
    assert sum(rec.calls.values()) == 2
    assert ex.task_queue is None


def test_exit_by_exception_cancels_appended_but_not_forwarded():
    ex = Executor(Event, QueueConfig())
    event = Event(int)
    with pytest.raises(RuntimeError):
        with ex:
            future = ex.append(event)
            raise RuntimeError("boom")
    assert future.cancelled()
    assert event.execution.status is ExecutionStatus.CANCELLED
    assert ex.task_queue is None


def test_exit_cancels_event_waiting_for_rate_capacity_promptly():
    ex = RateLimitedExecutor(limit_requests=1, interval=3600.0, capacity_refresh_time=30.0)
    events = []
    for _ in range(3):
        e = Mock(spec=APICalling)
        e.id = uuid.uuid4()
        e.required_tokens = None
        e.invoke = Mock()
        e.execution = Mock()
        events.append(e)
    with ex:
        futures = [ex.submit(e) for e in events]
        futures[0].result(timeout=5)
        start = time.monotonic()
    assert time.monotonic() - start < 1.0  # no waiting out the hour or the refresh time
    assert [f.cancelled() for f in futures] == [False, True, True]
    events[1].invoke.assert_not_called()
    events[2].invoke.assert_not_called()
    assert events[1].execution.status == ExecutionStatus.CANCELLED


def test_shutdown_is_safe_twice_and_without_start():
    ex = Executor(Event)
    ex.shutdown()
    with ex:
        pass
    ex.shutdown()
    assert ex.task_queue is None


CTRL_C_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    sys.path.insert(0, {root!r})
    from apiexec import Event, Executor, QueueConfig
    events = []
    started = threading.Semaphore(0)
    def slow():
        started.release()
        time.sleep(0.3)
        return "ok"
    ex = Executor(Event, QueueConfig(queue_capacity=100, concurrency_limit=3))
    try:
        with ex:
            futures = [ex.submit(Event(slow)) for _ in range(50)]
            events = list(ex.events.values())
            for _ in range(3):
                started.acquire()
            print("ready", flush=True)
            ex.join()
    except KeyboardInterrupt:
        statuses = [e.execution.status.value for e in events]
        print(json.dumps({{
            "statuses": statuses,
            "futures_done": sum(f.done() for f in futures),
            "threads": [t.name for t in threading.enumerate() if t.name.startswith("apiexec")],
            "queue_none": ex.task_queue is None,
        }}), flush=True)
    """
)


@pytest.mark.timeout(60)
def test_ctrl_c_finishes_inflight_and_cancels_the_rest(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CTRL_C_CHILD.format(root=ROOT))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    elapsed = time.monotonic() - start
    report = json.loads(out.strip().splitlines()[-1])
    statuses = report["statuses"]
    assert len(statuses) == 50
    assert set(statuses) <= {"completed", "cancelled"}
    assert 3 <= statuses.count("completed") <= 9
    assert report["futures_done"] == 50
    assert report["threads"] == []
    assert report["queue_none"] is True
    assert elapsed < 5


BLOCKED_SUBMIT_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    sys.path.insert(0, {root!r})
    from apiexec import Event, Executor, QueueConfig
    ex = Executor(Event, QueueConfig(queue_capacity=1, capacity_refresh_time=5.0, concurrency_limit=1))
    events = [Event(lambda: time.sleep(0.5)) for _ in range(4)]
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        with ex:
            for e in events:
                ex.submit(e)  # the third blocks: one running, one queued
    except KeyboardInterrupt:
        pass
    print(json.dumps({{"statuses": [e.execution.status.value for e in events],
                       "all_processed": ex.is_all_processed, "joined": ex.join(timeout=1)}}))
    """
)


@pytest.mark.timeout(60)
def test_ctrl_c_while_submit_waits_on_a_full_queue_loses_nothing(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(BLOCKED_SUBMIT_CHILD.format(root=ROOT))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    first, second, third, never_submitted = report["statuses"]
    assert first == "completed"
    assert {second, third} <= {"cancelled", "completed"} and "cancelled" in {second, third}
    assert never_submitted == "pending"  # Ctrl-C came before its submit
    assert report["all_processed"] is True and report["joined"] is True
