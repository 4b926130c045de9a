"""A real redis-server killed (SIGKILL) or frozen (SIGSTOP) under running callers.

Admission must fail fast with one clear StorageError (seconds for the whole
batch, not a socket timeout per call), and resume by itself once the server
is back (SIGCONT, or a restart on the same port).
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from apiexec.errors import StorageError
from apiexec.limits.limiter import RateLimiter
from apiexec.limits.rate_limits import RateLimits
from apiexec.limits.storage import backend_from_url

LIMITS = RateLimits(requests=10**6, interval=1.0, burst=10**6)
CALLERS = 16
CALLS_EACH = 25


def restart_on_same_port(server):
    """Start redis-server again with the arguments (and port) it had."""
    args = server.process.args
    server.process.wait(5)
    if server.process.stdout:
        server.process.stdout.close()
    server.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert server._wait_ready(), "redis-server did not come back"


def hammer(limiter):
    """CALLERS threads x CALLS_EACH acquires; (outcome counts, slowest call, wall)."""
    outcomes, slowest, lock = {"ok": 0, "error": 0}, [0.0], threading.Lock()
    messages = set()

    def run():
        for _ in range(CALLS_EACH):
            started = time.monotonic()
            try:
                limiter.acquire()
                outcome = "ok"
            except StorageError as exc:
                outcome = "error"
                messages.add(str(exc).split(" (key ")[0].split(" unavailable")[0])
            with lock:
                outcomes[outcome] += 1
                slowest[0] = max(slowest[0], time.monotonic() - started)

    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes, slowest[0], time.monotonic() - started, messages


def wait_for_recovery(backend, timeout=10.0):
    """Calls fail fast until the breaker's probe finds the server back; then succeed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return backend.acquire(1, 0)
        except StorageError:
            time.sleep(0.1)
    raise AssertionError("never recovered")


@pytest.mark.integration
@pytest.mark.timeout(40)
def test_killed_redis_fails_fast_and_resumes_after_restart(start_redis):
    server = start_redis(password="s3cret")
    backend = backend_from_url(server.url, key="outage-kill", limits=LIMITS)
    limiter = RateLimiter(backend)
    assert hammer(limiter)[0] == {"ok": CALLERS * CALLS_EACH, "error": 0}

    server.process.send_signal(signal.SIGKILL)
    outcomes, slowest, wall, messages = hammer(limiter)
    print(f"\nREDIS KILLED: {outcomes['error']} calls failed in {wall:.2f}s (slowest {slowest:.2f}s)")
    assert outcomes == {"ok": 0, "error": CALLERS * CALLS_EACH}
    assert wall < 5.0 and slowest < 3.0
    # one clear error, naming the storage without its password
    assert messages == {f"limit storage redis://:***@127.0.0.1:{server.port}/0"}

    restart_on_same_port(server)
    assert wait_for_recovery(backend) == 0.0
    assert backend.breaker.state == "closed"
    assert hammer(limiter)[0]["error"] == 0


@pytest.mark.integration
@pytest.mark.timeout(40)
def test_frozen_redis_costs_one_timeout_not_one_per_call_and_resumes(start_redis):
    server = start_redis()
    backend = backend_from_url(server.url, key="outage-stop", limits=LIMITS)
    limiter = RateLimiter(backend)
    assert backend.acquire(1, 0) == 0.0

    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        outcomes, slowest, wall, messages = hammer(limiter)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    print(f"\nREDIS FROZEN: {outcomes['error']} calls failed in {wall:.2f}s (slowest {slowest:.2f}s)")
    assert outcomes == {"ok": 0, "error": CALLERS * CALLS_EACH}
    # One socket timeout (1 s) and redis-py's one retry, then the open breaker
    # answers every call at once: ~30 s per call before.
    assert wall < 6.0 and slowest < 5.0
    assert messages == {f"limit storage redis://127.0.0.1:{server.port}/0"}

    assert wait_for_recovery(backend) == 0.0
    assert hammer(limiter)[0]["error"] == 0


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_redis_frozen_at_start_fails_within_the_connect_timeout(start_redis):
    server = start_redis()
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match=f"127.0.0.1:{server.port}"):
            backend_from_url(server.url, key="frozen-start", limits=LIMITS)
        assert time.monotonic() - started < 5.0
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
