"""A SQLite limit file removed, truncated or made read-only under a running process.

Each test runs the backend in a child process (a crash must be seen as a
crash: SIGBUS kills the process, no exception is raised), changes the file
from outside, and checks that the child's calls fail with one clear
StorageError, fail fast while the file stays broken, recover on the breaker's
probe once it is usable, and that the child exits normally.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
from apiexec.errors import StorageError
from apiexec.limits.rate_limits import RateLimits
from apiexec.limits.sqlite import SQLiteBackend

backend = SQLiteBackend(sys.argv[1], key="k", limits=RateLimits(requests=10**6, interval=1.0, burst=10**6))
print("ready", flush=True)
for line in sys.stdin:
    outcomes, started = [], time.monotonic()
    for _ in range(int(line)):
        try:
            outcomes.append("ok" if backend.acquire(1, 0) == 0.0 else "wait")
        except StorageError as exc:
            outcomes.append("error: " + str(exc))
    print(json.dumps({"outcomes": outcomes, "seconds": time.monotonic() - started}), flush=True)
"""


class Child:
    def __init__(self, path):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()

    def calls(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"child died: return code {self.proc.wait(5)}, {self.proc.stderr.read()[-2000:]}"
        return json.loads(line)

    def finish(self):
        self.proc.stdin.close()
        code = self.proc.wait(10)
        assert code == 0, f"child ended with {code} ({signal.Signals(-code).name if code < 0 else 'exit'})"


@pytest.fixture
def child(tmp_path):
    made = []

    def start():
        made.append(Child(tmp_path / "limits.db"))
        return made[-1]

    yield start
    for one in made:
        if one.proc.poll() is None:
            one.proc.kill()
            one.proc.wait()


def assert_fails_then_fast(batch, cause):
    first, *rest = batch["outcomes"]
    assert first.startswith("error: limit storage sqlite:///") and cause in first, first
    assert all("unavailable after" in outcome for outcome in rest), rest[:3]
    assert batch["seconds"] < 1.0  # the breaker answers at once, no per-call wait


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_removed_file_fails_clearly_then_a_new_file_is_used(tmp_path, child):
    db = tmp_path / "limits.db"
    one = child()
    assert set(one.calls(20)["outcomes"]) == {"ok"}
    assert not (tmp_path / "limits.db-wal").exists() and not (tmp_path / "limits.db-shm").exists()  # nothing mmap'ed
    for path in tmp_path.glob("limits.db*"):
        path.unlink()
    assert_fails_then_fast(one.calls(50), "the file was removed")
    time.sleep(1.1)  # the breaker's cool-down
    assert set(one.calls(5)["outcomes"]) == {"ok"}  # the probe opened the path anew
    assert db.exists()
    one.finish()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_truncated_file_is_an_error_not_a_crash(tmp_path, child):
    one = child()
    one.calls(10)
    for path in tmp_path.glob("limits.db*"):
        os.truncate(path, 0)  # what kills a WAL user through its -shm (see the control below)
    first, *rest = one.calls(30)["outcomes"]
    assert first.startswith("error: limit storage sqlite:///") and "no such table" in first, first
    assert set(rest) == {"ok"}  # the next call re-opened the emptied file and set it up again
    one.finish()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_file_made_read_only_fails_clearly_and_recovers_when_writable(tmp_path, child):
    db = tmp_path / "limits.db"
    one = child()
    one.calls(10)
    db.chmod(0o444)
    try:
        assert_fails_then_fast(one.calls(50), "the file was made read-only")
    finally:
        db.chmod(0o644)
    time.sleep(1.1)
    assert set(one.calls(5)["outcomes"]) == {"ok"}
    one.finish()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_read_only_file_fails_at_start_in_one_line(tmp_path):
    from apiexec.errors import StorageError
    from apiexec.limits.sqlite import SQLiteBackend

    db = tmp_path / "limits.db"
    SQLiteBackend(db, key="k", limit_requests=5).close()
    db.chmod(0o444)
    try:
        with pytest.raises(StorageError) as info:
            SQLiteBackend(db, key="k", limit_requests=5)
    finally:
        db.chmod(0o644)
    assert "is read-only" in str(info.value) and "\n" not in str(info.value)


WAL_CONTROL = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS t (v)")
print("ready", flush=True)
sys.stdin.readline()
for i in range(100):
    conn.execute("INSERT INTO t VALUES (?)", (i,))
print("survived", flush=True)
"""


@pytest.mark.integration
@pytest.mark.timeout(30)
@pytest.mark.skipif(sys.platform != "linux", reason="SIGBUS on a truncated mapping is Linux behaviour")
def test_control_a_wal_connection_is_killed_by_sigbus_in_the_same_situation(tmp_path):
    """Why the backend does not use WAL: its -shm index is mmap'ed."""
    db = tmp_path / "wal.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WAL_CONTROL, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    os.truncate(f"{db}-shm", 0)
    out, _ = proc.communicate("go\n", timeout=10)
    assert proc.returncode == -signal.SIGBUS and "survived" not in out
