"""Shared limit storage: URL parsing, SQLite and Redis backends, atomicity, failures."""

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor, StorageError
from apiexec.cli import main as cli_main
from apiexec.errors import ConfigError
from apiexec.limits.breaker import CircuitBreaker
from apiexec.limits.bucket import MemoryBackend, ServerLimits
from apiexec.limits.sqlite import SQLiteBackend
from apiexec.limits.storage import backend_from_url, parse_storage_url, redact_url
from tests.helpers import FakeClock as HelperClock

ROOT = Path(__file__).resolve().parents[3]
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def sqlite_backend(tmp_path, limit_requests, limit_tokens, interval, clock, key="k", **kw):
    return SQLiteBackend(
        tmp_path / "limits.db",
        key=key,
        limit_requests=limit_requests,
        limit_tokens=limit_tokens,
        interval=interval,
        clock=clock,
        **kw,
    )


def redis_backend(server, key, limit_requests, limit_tokens, interval):
    return backend_from_url(
        server.url, key=key, limit_requests=limit_requests, limit_tokens=limit_tokens, interval=interval
    )


def unique_key(request):
    return f"{request.node.name}-{time.monotonic_ns()}"


# -- URL parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, scheme, path",
    [
        ("memory://", "memory", None),
        ("sqlite:///relative/limits.db", "sqlite", Path("relative/limits.db")),
        ("sqlite:////abs/path/limits.db", "sqlite", Path("/abs/path/limits.db")),
        ("sqlite:///with%20space.db", "sqlite", Path("with space.db")),
        ("redis://localhost:6379/0", "redis", None),
        ("rediss://:pw@host:6380/1", "redis", None),
        ("unix:///tmp/redis.sock", "redis", None),
    ],
)
def test_storage_urls_follow_the_sqlalchemy_convention(url, scheme, path):
    parsed = parse_storage_url(url)
    assert (parsed.scheme, parsed.path) == (scheme, path)


def test_sqlite_busy_timeout_option():
    assert parse_storage_url("sqlite:///x.db?timeout=2.5").busy_timeout == 2.5
    assert parse_storage_url("sqlite:///x.db").busy_timeout is None


@pytest.mark.parametrize(
    "url",
    [
        "limits.db",
        "ftp://host/x",
        "memory://somewhere",
        "sqlite://host/x.db",
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///x.db?journal=wal",
        "sqlite:///x.db?timeout=soon",
        "sqlite:///x.db?timeout=0",
        None,
    ],
)
def test_bad_storage_urls_are_config_errors_naming_storage(url):
    with pytest.raises(ConfigError) as info:
        parse_storage_url(url)
    assert info.value.field == "storage"


def test_redact_url_hides_the_password_only():
    assert redact_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in redact_url("redis://:s3cret@[::1")  # unparsable: shown not at all


def test_bad_url_in_the_error_message_has_no_password():
    with pytest.raises(ConfigError) as info:
        parse_storage_url("mysql://root:s3cret@db/limits")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("key", ["", " padded ", None])
def test_key_must_be_a_plain_name(key):
    with pytest.raises(ConfigError) as info:
        backend_from_url("memory://", key=key, limit_requests=1, limit_tokens=None, interval=1.0)
    assert info.value.field == "key"


def test_memory_url_gives_a_memory_backend():
    backend = backend_from_url("memory://", key="k", limit_requests=5, limit_tokens=None, interval=1.0)
    assert isinstance(backend, MemoryBackend) and backend.levels() == (5, None)


def test_executor_rejects_storage_and_backend_together():
    backend = MemoryBackend(1, None, 1.0)
    with pytest.raises(ConfigError) as info:
        RateLimitedExecutor(limit_requests=1, storage="sqlite:///x.db", backend=backend)
    assert info.value.field == "storage"
    with pytest.raises(ConfigError):
        RateLimitedExecutor(limit_requests=1, key="shared", backend=backend)
    assert RateLimitedExecutor(limit_requests=1, backend=backend).limiter.backend is backend


def test_executor_with_a_bad_storage_url_fails_at_construction():
    with pytest.raises(ConfigError) as info:
        RateLimitedExecutor(limit_requests=1, storage="postgres://db/limits")
    assert info.value.field == "storage"


def test_redis_without_redis_py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with pytest.raises(ConfigError, match=r"pip install apiexec\[redis\]"):
        backend_from_url("redis://127.0.0.1:1/0", key="k", limit_requests=1, limit_tokens=None, interval=1.0)


# -- SQLite: the bucket semantics of test_bucket.py on a fake clock --------------------


def test_sqlite_dual_take_is_all_or_nothing(tmp_path):
    backend = sqlite_backend(tmp_path, 10, 100, 60.0, FakeClock())
    assert backend.acquire(1, 80) == 0.0
    wait = backend.acquire(1, 50)  # tokens short: the request must not be taken either
    assert wait == pytest.approx(30 / (100 / 60))
    assert backend.levels() == (pytest.approx(9), pytest.approx(20))


def test_sqlite_request_limit_without_token_limit(tmp_path):
    clock = FakeClock()
    backend = sqlite_backend(tmp_path, 2, None, 1.0, clock)
    assert backend.acquire(1, 999) == 0.0
    assert backend.acquire(1, 999) == 0.0
    assert backend.acquire(1, 0) == pytest.approx(0.5)
    clock.advance(0.5)
    assert backend.acquire(1, 0) == 0.0
    assert backend.levels()[1] is None


def test_sqlite_adjust_refunds_and_charges_tokens(tmp_path):
    backend = sqlite_backend(tmp_path, None, 1000, 60.0, FakeClock())
    backend.acquire(1, 1000)
    backend.adjust(985)
    assert backend.levels()[1] == pytest.approx(985)
    backend.adjust(-1500)  # an overrun goes negative and delays later calls
    assert backend.levels()[1] == pytest.approx(-515)
    assert backend.acquire(1, 1) == pytest.approx(516 / (1000 / 60))
    backend.adjust(0)  # nothing to do


def test_sqlite_pause_is_shared_and_never_shortened(tmp_path):
    clock = FakeClock()
    one = sqlite_backend(tmp_path, 100, None, 60.0, clock)
    other = sqlite_backend(tmp_path, 100, None, 60.0, clock)
    one.pause(2.0)
    other.pause(1.0)
    assert other.acquire(1, 0) == pytest.approx(2.0)
    clock.advance(2.0)
    assert one.acquire(1, 0) == 0.0


def test_sqlite_no_limits_always_grants(tmp_path):
    backend = sqlite_backend(tmp_path, None, None, 60.0, FakeClock())
    assert all(backend.acquire(1, 10**9) == 0.0 for _ in range(50))
    backend.adjust(5)  # no token bucket: a no-op
    assert backend.levels() == (None, None)


def test_sqlite_processes_share_one_key_and_keys_are_independent(tmp_path):
    clock = FakeClock()
    first = sqlite_backend(tmp_path, 3, None, 60.0, clock, key="openai-prod")
    second = sqlite_backend(tmp_path, 3, None, 60.0, clock, key="openai-prod")
    elsewhere = sqlite_backend(tmp_path, 3, None, 60.0, clock, key="anthropic-prod")
    assert [first.acquire(1, 0), second.acquire(1, 0), first.acquire(1, 0)] == [0.0, 0.0, 0.0]
    assert second.acquire(1, 0) == pytest.approx(20.0)
    assert elsewhere.acquire(1, 0) == 0.0
    assert first.levels()[0] == pytest.approx(0) and elsewhere.levels()[0] == pytest.approx(2)


def test_sqlite_each_process_applies_its_own_limits_to_the_shared_level(tmp_path):
    clock = FakeClock()
    big = sqlite_backend(tmp_path, 10, None, 1.0, clock)
    small = sqlite_backend(tmp_path, 2, None, 1.0, clock)
    assert big.acquire(5, 0) == 0.0
    assert small.levels()[0] == pytest.approx(2)  # 5 left, capped at small's capacity
    assert small.acquire(2, 0) == 0.0
    assert big.levels()[0] == pytest.approx(0)
    assert small.acquire(1, 0) == pytest.approx(0.5)  # refills at small's own 2/s
    assert big.acquire(1, 0) == pytest.approx(0.1)  # and at big's 10/s


def test_sqlite_sync_learns_a_shared_bucket_and_never_raises_a_level(tmp_path):
    clock = FakeClock()
    learner = sqlite_backend(tmp_path, None, None, 60.0, clock)
    bystander = sqlite_backend(tmp_path, None, None, 60.0, clock)
    configured = sqlite_backend(tmp_path, 100, None, 60.0, clock)
    learner.sync(ServerLimits(limit_requests=600, remaining_requests=0, reset_requests=0.1))
    assert bystander.acquire(1, 0) == pytest.approx(0.1)  # learnt 10/s, shared
    assert configured.acquire(1, 0) == pytest.approx(0.6)  # own 100/min on the level 0
    clock.advance(0.1)
    assert bystander.acquire(1, 0) == 0.0
    configured.sync(ServerLimits(limit_requests=600, remaining_requests=500, reset_requests=1.0))
    assert configured.levels()[0] < 1  # a server's view never raises the level
    learner.sync(ServerLimits())  # nothing to align: no write
    learner.sync(ServerLimits(limit_tokens=60_000, remaining_tokens=500, reset_tokens=1.0))
    assert bystander.acquire(1, 600) > 0  # learned token bucket: 500 left


def test_sqlite_clock_going_back_credits_nothing(tmp_path):
    clock = FakeClock()
    backend = sqlite_backend(tmp_path, 5, None, 1.0, clock)
    backend.acquire(5, 0)
    clock.advance(-100.0)  # the wall clock stepped back
    assert backend.acquire(1, 0) == pytest.approx(0.2)
    clock.advance(0.2)
    assert backend.acquire(1, 0) == 0.0


def test_sqlite_waits_out_another_process_lock_instead_of_failing(tmp_path):
    backend = sqlite_backend(tmp_path, 5, None, 1.0, time.time, busy_timeout=5.0)
    blocker = sqlite3.connect(tmp_path / "limits.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, blocker.rollback).start()
    started = time.monotonic()
    assert backend.acquire(1, 0) == 0.0  # no "database is locked"
    assert time.monotonic() - started >= 0.25
    blocker.close()


def test_sqlite_lock_held_too_long_is_a_storage_error_and_opens_the_breaker(tmp_path):
    breaker_clock = HelperClock()
    breaker = CircuitBreaker("sqlite:///limits.db", clock=breaker_clock)
    backend = sqlite_backend(tmp_path, 5, None, 1.0, time.time, busy_timeout=0.2, breaker=breaker)
    blocker = sqlite3.connect(tmp_path / "limits.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError, match="still locked by another process after 0.2s"):
            backend.acquire(1, 0)
    finally:
        blocker.rollback()
        blocker.close()
    started = time.monotonic()
    with pytest.raises(StorageError, match="unavailable after 1 failure"):
        backend.acquire(1, 0)  # a timeout opens the breaker at once: no second 0.2 s wait
    assert time.monotonic() - started < 0.1
    breaker_clock.advance(1.0)  # cool-down over: the probe finds the lock free
    assert backend.acquire(1, 0) == 0.0 and breaker.state == "closed"


def test_sqlite_missing_directory_is_a_clear_error_at_start(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/limits.db"
    with pytest.raises(StorageError, match="does not exist") as info:
        RateLimitedExecutor(limit_requests=10, storage=url, key="k")
    assert info.value.url == url and str(tmp_path / "no" / "such" / "dir") in str(info.value)


def test_sqlite_file_that_is_not_a_database_is_a_storage_error(tmp_path):
    (tmp_path / "limits.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="limit storage"):
        sqlite_backend(tmp_path, 1, None, 1.0, time.time)


def test_sqlite_reopens_after_close_and_after_fork(tmp_path):
    backend = sqlite_backend(tmp_path, 3, None, 60.0, FakeClock())
    backend.acquire(1, 0)
    backend.close()
    backend.close()  # safe twice
    assert not backend.is_open
    assert backend.levels()[0] == pytest.approx(2) and backend.is_open
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the inherited connection is not its own
        try:
            ok = not backend.is_open and backend.acquire(1, 0) == 0.0 and backend.is_open
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 10) == b"ok"
    os.waitpid(pid, 0)
    os.close(read)
    assert backend.is_open and backend.levels()[0] == pytest.approx(1)  # the child's take is shared
    assert "limits.db" in repr(backend)


def test_sqlite_relative_url_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = backend_from_url("sqlite:///limits.db", key="k", limit_requests=2, limit_tokens=None, interval=1.0)
    backend.acquire(1, 0)
    assert (tmp_path / "limits.db").exists()


# -- Redis: the same semantics on a real server, with its clock ----------------------


@pytest.mark.integration
def test_redis_dual_take_is_all_or_nothing(redis_server, request):
    backend = redis_backend(redis_server, unique_key(request), 10, 100, 60.0)
    assert backend.acquire(1, 80) == 0.0
    assert backend.acquire(1, 50) == pytest.approx(30 / (100 / 60), abs=0.05)
    requests_left, tokens_left = backend.levels()
    assert requests_left == pytest.approx(9, abs=0.01) and tokens_left == pytest.approx(20, abs=0.1)


@pytest.mark.integration
def test_redis_request_limit_waits_exactly_until_due(redis_server, request):
    backend = redis_backend(redis_server, unique_key(request), 2, None, 1.0)
    assert backend.acquire(1, 999) == 0.0
    assert backend.acquire(1, 999) == 0.0
    wait = backend.acquire(1, 0)
    assert 0.4 < wait <= 0.5
    time.sleep(wait)
    assert backend.acquire(1, 0) == 0.0
    assert backend.levels()[1] is None


@pytest.mark.integration
def test_redis_adjust_pause_and_no_limits(redis_server, request):
    key = unique_key(request)
    backend = redis_backend(redis_server, key, None, 1000, 60.0)
    backend.acquire(1, 1000)
    backend.adjust(985)
    assert backend.levels()[1] == pytest.approx(985, abs=1)
    backend.adjust(-1500)
    assert backend.levels()[1] == pytest.approx(-515, abs=1)
    assert backend.acquire(1, 1) == pytest.approx(516 / (1000 / 60), abs=0.1)
    unlimited = redis_backend(redis_server, key + "-free", None, None, 60.0)
    assert all(unlimited.acquire(1, 10**9) == 0.0 for _ in range(20))
    unlimited.adjust(5)  # no token bucket: a no-op
    assert unlimited.levels() == (None, None)
    unlimited.pause(1.0)
    redis_backend(redis_server, key + "-free", None, None, 60.0).pause(0.2)  # never shortens
    assert unlimited.acquire(1, 0) == pytest.approx(1.0, abs=0.05)


@pytest.mark.integration
def test_redis_processes_share_one_key_and_keys_are_independent(redis_server, request):
    key = unique_key(request)
    first = redis_backend(redis_server, key, 3, None, 60.0)
    second = redis_backend(redis_server, key, 3, None, 60.0)
    elsewhere = redis_backend(redis_server, key + "-other", 3, None, 60.0)
    assert [first.acquire(1, 0), second.acquire(1, 0), first.acquire(1, 0)] == [0.0, 0.0, 0.0]
    assert second.acquire(1, 0) == pytest.approx(20.0, abs=0.05)
    assert elsewhere.acquire(1, 0) == 0.0


@pytest.mark.integration
def test_redis_sync_learns_a_shared_bucket_and_never_raises_a_level(redis_server, request):
    key = unique_key(request)
    learner = redis_backend(redis_server, key, None, None, 60.0)
    bystander = redis_backend(redis_server, key, None, None, 60.0)
    configured = redis_backend(redis_server, key, 100, None, 60.0)
    learner.sync(ServerLimits(limit_requests=600, remaining_requests=0, reset_requests=0.1))
    assert bystander.acquire(1, 0) == pytest.approx(0.1, abs=0.02)
    assert configured.acquire(1, 0) == pytest.approx(0.6, abs=0.05)
    configured.sync(ServerLimits(limit_requests=600, remaining_requests=500, reset_requests=1.0))
    assert configured.levels()[0] < 1
    learner.sync(ServerLimits())
    learner.sync(ServerLimits(limit_tokens=None, remaining_tokens=5))  # no limit to learn from
    learner.sync(ServerLimits(limit_tokens=60_000, remaining_tokens=500, reset_tokens=1.0))
    assert bystander.acquire(1, 600) > 0
    assert bystander.levels()[1] == pytest.approx(500, abs=20)


@pytest.mark.integration
def test_redis_key_is_a_few_fields_and_expires_when_idle(redis_server, request):
    import redis

    backend = redis_backend(redis_server, unique_key(request), 5, 50, 0.5)
    for _ in range(5):
        assert backend.acquire(1, 10) == 0.0
    client = redis.Redis.from_url(redis_server.url)
    assert len(client.hgetall(backend.redis_key)) == 4  # rl rs tl ts: not one entry per token
    ttl = backend.ttl()
    assert 1.0 < ttl <= 1.5  # full again in 0.5 s, plus the margin
    backend.pause(3.0)
    assert backend.ttl() > 3.0
    client.pexpire(backend.redis_key, 300)  # skip the wait: idle and full again
    deadline = time.monotonic() + 3.0
    while client.exists(backend.redis_key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.exists(backend.redis_key) and backend.ttl() is None
    assert backend.levels() == (5, 50)  # a vanished key is a full bucket
    client.close()
    backend.close()


@pytest.mark.integration
def test_redis_idle_key_vanishes_on_its_own(redis_server, request):
    backend = redis_backend(redis_server, unique_key(request), 4, None, 0.2)
    for _ in range(4):
        backend.acquire(1, 0)
    assert 0 < backend.ttl() <= 1.2
    time.sleep(1.3)
    assert backend.ttl() is None


@pytest.mark.integration
def test_redis_unreachable_at_start_names_the_url_without_password():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        RateLimitedExecutor(limit_requests=10, storage=url, key="k")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "s3cret" not in message and "s3cret" not in info.value.url


@pytest.mark.integration
def test_redis_bad_url_is_a_config_error(redis_executable):
    with pytest.raises(ConfigError) as info:
        backend_from_url("redis://:pw@127.0.0.1:notaport/0", key="k", limit_requests=1, limit_tokens=None, interval=1)
    assert info.value.field == "storage" and "pw" not in str(info.value).replace("***", "")


@pytest.mark.integration
def test_redis_backend_takes_a_ready_client(redis_server, request):
    import redis

    from apiexec.limits.redis import RedisBackend

    client = redis.Redis.from_url(redis_server.url)
    backend = RedisBackend(client=client, key=unique_key(request), limit_requests=2, limit_tokens=None, interval=1.0)
    assert backend.acquire(2, 0) == 0.0 and "RedisBackend" in repr(backend)
    with pytest.raises(ConfigError):
        RedisBackend(key="k", limit_requests=1, limit_tokens=None, interval=1.0)
    backend.close()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_redis_stopped_mid_run_fails_the_call_not_the_quota(start_redis, mock_server):
    redis_process = start_redis(password="s3cret")
    endpoint = Endpoint(EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=mock_server.url))
    executor = RateLimitedExecutor(
        limit_requests=100, interval=1.0, concurrency_limit=2, storage=redis_process.url, key="mid-run"
    )
    with endpoint, executor:
        assert executor.submit(APICalling(endpoint, BODY)).result(10) is not None
        redis_process.stop()
        future = executor.submit(APICalling(endpoint, BODY))
        error = future.exception(10)
        assert isinstance(error, StorageError)
        assert "s3cret" not in str(error) and f"127.0.0.1:{redis_process.port}" in str(error)
        with pytest.raises(StorageError):
            executor.request_permission(APICalling(endpoint, BODY))
    assert mock_server.stats.requests == 1  # the second call was never sent


@pytest.mark.integration
def test_bookkeeping_after_a_response_survives_a_storage_failure(tmp_path, mock_server, caplog):
    class FlakyAfterAdmission(SQLiteBackend):
        def sync(self, info):
            raise StorageError("limit storage down", url=self.url)

        def adjust(self, tokens):
            raise StorageError("limit storage down", url=self.url)

    backend = FlakyAfterAdmission(tmp_path / "l.db", key="k", limit_requests=10, limit_tokens=10_000, interval=1.0)
    endpoint = Endpoint(EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=mock_server.url))
    with endpoint, RateLimitedExecutor(limit_requests=10, limit_tokens=10_000, interval=1.0, backend=backend) as ex:
        call = APICalling(endpoint, BODY, requires_tokens=True)
        assert ex.submit(call).result(10) is not None  # the response is kept
    assert "not recorded" in caplog.text


@pytest.mark.integration
def test_a_retry_needs_the_storage_too(mock_server):
    class FailsAfterFirstGrant(MemoryBackend):
        grants = 0

        def acquire(self, requests, tokens):
            self.grants += 1
            if self.grants > 1:
                raise StorageError("limit storage down", url="redis://limits/0")
            return super().acquire(requests, tokens)

    mock_server.script(["503"])
    config = EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=mock_server.url, max_retries=2)
    backend = FailsAfterFirstGrant(10, None, 1.0)
    with Endpoint(config) as endpoint, RateLimitedExecutor(limit_requests=10, interval=1.0, backend=backend) as ex:
        error = ex.submit(APICalling(endpoint, BODY)).exception(10)
    assert isinstance(error, StorageError)
    assert mock_server.stats.requests == 1  # the retry was not sent


# -- atomicity under contention ----------------------------------------------------

HAMMER = r"""
import sys
from apiexec.limits.storage import backend_from_url
url, key, tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
backend = backend_from_url(url, key=key, limit_requests=100, limit_tokens=None, interval=3600.0, burst=100)
print("ready", flush=True)
sys.stdin.readline()
print(sum(backend.acquire(1, 0) == 0.0 for _ in range(tries)), flush=True)
"""


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/limits.db"
    return request.getfixturevalue("redis_server").url


def _hammer_threads(url, key, threads, tries, limit_tokens=None, tokens=0):
    barrier = threading.Barrier(threads)
    granted = []

    def run():
        backend = backend_from_url(
            url, key=key, limit_requests=100, limit_tokens=limit_tokens, interval=3600.0, burst=100
        )
        barrier.wait()
        granted.append(sum(backend.acquire(1, tokens) == 0.0 for _ in range(tries)))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(granted)


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_many_threads_never_over_grant(shared_url, request):
    assert _hammer_threads(shared_url, unique_key(request), threads=16, tries=25) == 100


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_many_threads_take_requests_and_tokens_together(shared_url, request):
    key = unique_key(request)
    assert _hammer_threads(shared_url, key, threads=16, tries=10, limit_tokens=350, tokens=7) == 50
    levels = backend_from_url(shared_url, key=key, limit_requests=100, limit_tokens=350, interval=3600.0, burst=100).levels()
    assert levels[0] == pytest.approx(50, abs=0.1)  # a token refusal took no request
    assert levels[1] == pytest.approx(0, abs=0.1)


@pytest.mark.integration
@pytest.mark.timeout(40)
def test_many_processes_never_over_grant(shared_url, request):
    key = unique_key(request)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", HAMMER, shared_url, key, "60"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [subprocess.Popen(args, text=True, env=env, cwd=ROOT, **pipes) for _ in range(4)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        granted = [int(proc.communicate(timeout=30)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sum(granted) == 100, granted


# -- the CLI flags -------------------------------------------------------------------


def _jsonl(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"custom_id": "c{i}", "body": {{"model": "m", "messages": [{{"role": "user", "content": "hi"}}]}}}}\n' for i in range(lines)))
    return path


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_cli_runs_with_a_shared_sqlite_storage(tmp_path):
    storage = f"sqlite:///{tmp_path}/limits.db"
    argv = ["run", str(_jsonl(tmp_path, 3)), "-o", str(tmp_path / "out.jsonl"), "--mock", "--no-progress"]
    assert cli_main([*argv, "--limit-storage", storage, "--limit-key", "batch"]) == 0
    row = sqlite3.connect(tmp_path / "limits.db").execute("SELECT key FROM apiexec_limits").fetchall()
    assert sorted(row) == [("batch",), ("batch:m",)]  # the run's quota, and its model's own (issue 16)


def test_cli_reports_a_bad_storage_in_one_line(tmp_path, capsys):
    argv = ["run", str(_jsonl(tmp_path, 1)), "-o", str(tmp_path / "out.jsonl"), "--mock", "--no-progress"]
    assert cli_main([*argv, "--limit-storage", f"sqlite:///{tmp_path}/missing/l.db"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli_main([*argv, "--limit-storage", "mongodb://x"]) == 1
    assert "storage: unknown scheme" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()  # nothing touched before the storage was checked


@pytest.mark.integration
def test_shared_backends_refuse_a_call_larger_than_any_bucket(shared_url, request):
    from apiexec.errors import CapacityError

    key = unique_key(request)
    configured = backend_from_url(shared_url, key=key, limit_requests=10, limit_tokens=100, interval=60.0)
    with pytest.raises(CapacityError, match="101 tokens"):
        configured.acquire(1, 101)
    learnt = backend_from_url(shared_url, key=key + "-learnt", limit_requests=None, limit_tokens=None, interval=60.0)
    learnt.sync(ServerLimits(limit_tokens=600, remaining_tokens=500, reset_tokens=1.0))
    with pytest.raises(CapacityError):
        learnt.acquire(1, 10_000)
    assert learnt.acquire(1, 10) == 0.0


@pytest.mark.integration
def test_shared_backends_run_a_request_limit_below_one(shared_url, request):
    backend = backend_from_url(shared_url, key=unique_key(request), limit_requests=0.5, limit_tokens=None, interval=60.0)
    assert backend.acquire(1, 0) == 0.0
    assert backend.acquire(1, 0) == pytest.approx(120.0, rel=0.05)
