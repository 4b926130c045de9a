"""The Flask example (examples/flask_app/app.py) under Flask's test client.

The app keeps one module-level RateLimitedExecutor; its calls go over
loopback to apiexec's built-in mock server. Each test imports a fresh copy
of the module with its settings in the environment, and shuts it down after.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import importlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from apiexec.mock.server import MockServer, MockServerConfig

pytestmark = pytest.mark.integration

MODULE = "examples.flask_app.app"
KEY = "sk-flask-example"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[MockServer]:
    config = MockServerConfig(api_key=KEY, requests_per_minute=60_000, tokens_per_minute=10_000_000)
    with MockServer(config) as running:
        yield running


def load_app(monkeypatch: pytest.MonkeyPatch, server: MockServer, **settings: str) -> ModuleType:
    env = {"LLM_BASE_URL": f"{server.url}/v1", "LLM_API_KEY": KEY, "LLM_CONCURRENCY": "4", **settings}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop(MODULE, None)
    return importlib.import_module(MODULE)


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch, server: MockServer) -> Iterator:
    loaded: list[ModuleType] = []

    def make(**settings: str) -> ModuleType:
        module = load_app(monkeypatch, server, **settings)
        loaded.append(module)
        return module

    yield make
    for module in loaded:
        module.shutdown()
        atexit.unregister(module.shutdown)
    sys.modules.pop(MODULE, None)


def test_a_chat_is_answered_through_the_executor(make_app, server: MockServer) -> None:
    module = make_app()
    client = module.app.test_client()
    reply = client.post("/chat", json={"prompt": "Hello there", "max_tokens": 20})
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    assert isinstance(body["answer"], str) and body["answer"]
    assert body["usage"]["total_tokens"] > 0
    assert body["request_id"]
    assert server.stats.requests == 1
    snapshot = module.EXECUTOR.metrics.snapshot()
    assert snapshot["completed"] == 1 and snapshot["tokens_used"] == body["usage"]["total_tokens"]


def test_many_request_threads_share_the_one_executor(make_app, server: MockServer) -> None:
    module = make_app(LLM_RPM="6000")  # 100 a second: the test measures sharing, not pacing
    n = 24

    def one(i: int) -> int:
        reply = module.app.test_client().post("/chat", json={"prompt": f"question {i}", "max_tokens": 10})
        return reply.status_code

    with cf.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(n)))
    assert statuses == [200] * n
    assert server.stats.requests == n
    assert server.stats.max_in_flight <= 4  # LLM_CONCURRENCY
    assert module.EXECUTOR.metrics.snapshot()["completed"] == n
    assert module.EXECUTOR.events == {}  # nothing kept once answered


def test_bad_input_names_the_field(make_app, server: MockServer) -> None:
    client = make_app().app.test_client()
    cases = [
        ({"prompt": ""}, "prompt: must be a non-empty string"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens: must be an int from 1 to 4096"),
        ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
        (["not", "an", "object"], "body: must be a JSON object"),
    ]
    for payload, message in cases:
        reply = client.post("/chat", json=payload)
        assert reply.status_code == 400
        assert reply.get_json()["error"]["message"].startswith(message)
    assert server.stats.requests == 0


def test_an_upstream_error_becomes_a_502_with_its_status(make_app, server: MockServer) -> None:
    client = make_app().app.test_client()
    server.script(["400"])
    reply = client.post("/chat", json={"prompt": "too long a prompt"})
    assert reply.status_code == 502
    error = reply.get_json()["error"]
    assert error["type"] == "upstream_error" and error["upstream_status"] == 400
    assert KEY not in reply.get_data(as_text=True)


def test_rate_limiting_upstream_becomes_a_503_with_retry_after(make_app, server: MockServer) -> None:
    client = make_app().app.test_client()
    server.script(["429:20"] * 3)  # the first attempt and both retries
    reply = client.post("/chat", json={"prompt": "hi"})
    assert reply.status_code == 503
    assert reply.get_json()["error"]["type"] == "upstream_busy"
    assert int(reply.headers["Retry-After"]) >= 1
    assert server.stats.requests == 3


def test_a_slow_upstream_ends_at_the_deadline(make_app, server: MockServer) -> None:
    client = make_app(LLM_DEADLINE="0.5").app.test_client()
    server.script(["slow:3000"])
    started = time.monotonic()
    reply = client.post("/chat", json={"prompt": "hi"})
    assert reply.status_code == 504
    assert "0.5s" in reply.get_json()["error"]["message"]
    assert time.monotonic() - started < 2.5


def test_a_full_queue_sheds_load_at_once(make_app, server: MockServer) -> None:
    module = make_app(LLM_CONCURRENCY="1", LLM_QUEUE="1")
    server.script(["slow:1500"])
    with cf.ThreadPoolExecutor(2) as pool:
        post = lambda: module.app.test_client().post("/chat", json={"prompt": "hi"})  # noqa: E731
        give_up = time.monotonic() + 10

        def wait_until(condition):  # test-side waits for the executor's state
            while not condition() and time.monotonic() < give_up:
                time.sleep(0.01)
            assert condition()

        slow = pool.submit(post)
        wait_until(lambda: module.EXECUTOR.metrics.snapshot()["in_flight"] == 1)  # on the only worker
        queued = pool.submit(post)
        wait_until(lambda: module.EXECUTOR.task_queue.qsize() >= 1)  # waits behind it: the queue is full
        started = time.monotonic()
        shed = module.app.test_client().post("/chat", json={"prompt": "hi"})
        waited = time.monotonic() - started
        assert shed.status_code == 503 and shed.headers["Retry-After"] == "1"
        assert shed.get_json()["error"]["type"] == "busy"
        assert waited < 0.5  # refused at once, not blocked behind the queue
        assert slow.result(10).status_code == 200 and queued.result(10).status_code == 200


def test_several_prompts_every_outcome_in_order(make_app, server: MockServer) -> None:
    module = make_app(LLM_CONCURRENCY="1")  # one at a time: the script hits the second prompt
    server.script(["slow:0", "400"])
    reply = module.app.test_client().post("/chats", json={"prompts": ["a", "b", "c", "d"], "max_tokens": 8})
    assert reply.status_code == 200
    results = reply.get_json()["results"]
    assert [r["status"] for r in results] == [200, 502, 200, 200]
    assert results[1]["error"]["upstream_status"] == 400
    assert server.stats.requests == 4  # the failure cancelled nothing


def test_metrics_and_health(make_app, server: MockServer) -> None:
    client = make_app().app.test_client()
    assert client.post("/chat", json={"prompt": "hi"}).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert 'apiexec_calls_total{executor="llm",status="completed"} 1.0' in text
    assert 'apiexec_responses_total{executor="llm"} 1.0' in text
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["state"] == "running"


def test_after_shutdown_calls_are_refused_and_threads_end(make_app, server: MockServer) -> None:
    before = set(threading.enumerate())
    module = make_app()
    client = module.app.test_client()
    assert client.post("/chat", json={"prompt": "hi"}).status_code == 200
    workers = [t for t in threading.enumerate() if t not in before and t.name.startswith("apiexec-worker")]
    assert workers
    module.shutdown()
    module.shutdown()  # safe twice (atexit runs it again)
    reply = client.post("/chat", json={"prompt": "hi"})
    assert reply.status_code == 503 and reply.get_json()["error"]["type"] == "shutting_down"
    assert client.get("/healthz").status_code == 503
    for thread in workers:
        thread.join(5)
    assert not [t for t in workers if t.is_alive()]
    assert module.ENDPOINT.client is None  # the pool is closed


def test_the_process_exits_promptly_with_a_call_in_flight(server: MockServer) -> None:
    # A real interpreter: a call in flight when the program ends is finished
    # (shutdown at exit waits for it), and the process does not hang.
    script = textwrap.dedent(
        """
        import threading, time
        import examples.flask_app.app as module
        client = module.app.test_client()
        assert client.post("/chat", json={"prompt": "warm up"}).status_code == 200
        thread = threading.Thread(target=client.post, args=("/chat",), kwargs={"json": {"prompt": "slow"}},
                                  daemon=True)
        thread.start()
        give_up = time.monotonic() + 10
        while module.EXECUTOR.metrics.snapshot()["in_flight"] < 1 and time.monotonic() < give_up:
            time.sleep(0.01)  # test-side wait for the call to be admitted
        print("exiting with", module.EXECUTOR.metrics.snapshot()["in_flight"], "in flight", flush=True)
        """
    )
    server.script(["slow:0", "slow:800"])
    env = {**os.environ, "LLM_BASE_URL": f"{server.url}/v1", "LLM_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "exiting with 1 in flight" in proc.stdout
    assert elapsed < 15
    assert server.stats.by_status[200] == 2  # the call in flight was finished, not dropped
