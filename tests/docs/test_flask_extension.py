"""The Flask extension example (examples/flask_extension.py) under Flask's test client."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from apiexec.mock.server import MockServer, MockServerConfig

pytestmark = pytest.mark.integration
pytest.importorskip("flask")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flask_extension.py"


@pytest.fixture(scope="module")
def extension() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("flask_extension_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(MockServerConfig(latency_ms=100)) as running:
        yield running


def test_init_app_binds_one_executor_per_app(extension: ModuleType, server: MockServer) -> None:
    app = extension.create_app(f"{server.url}/v1", APIEXEC_CONCURRENCY=2)
    other = extension.create_app(f"{server.url}/v1")
    try:
        client = app.test_client()
        assert client.post("/chat", json={"prompt": "Hello"}).get_json() == {"answer": "mock reply to: Hello"}
        assert client.post("/chat", json={"prompt": ""}).status_code == 400
        state = app.extensions["apiexec"]
        assert state.executor is not other.extensions["apiexec"].executor
        assert state.executor.metrics.snapshot()["completed"] == 1
    finally:
        for each in (app, other):
            each.extensions["apiexec_ext"].shutdown(each)


def test_teardown_cancels_the_calls_a_request_left_behind(extension: ModuleType, server: MockServer) -> None:
    app = extension.create_app(f"{server.url}/v1", APIEXEC_CONCURRENCY=1)
    try:
        reply = app.test_client().post("/fanout?n=10")
        assert reply.get_json() == {"first": "mock reply to: n0", "submitted": 10}
        state = app.extensions["apiexec"]
        state.executor.join(timeout=10)
        counts = state.executor.metrics.snapshot()
        # One worker: the first call answered, at most one more had started; the rest were never sent.
        assert counts["cancelled"] >= 8 and counts["completed"] <= 2
        time.sleep(0.3)  # test-side: a call wrongly sent would reach the server within its 100 ms latency
        assert server.stats.requests <= 2
    finally:
        app.extensions["apiexec_ext"].shutdown(app)


def test_shutdown_is_safe_twice_and_a_missing_base_url_is_named(extension: ModuleType, server: MockServer) -> None:
    app = extension.create_app(f"{server.url}/v1")
    ext = app.extensions["apiexec_ext"]
    ext.shutdown(app)
    ext.shutdown(app)
    assert app.extensions["apiexec"].endpoint.client is None
    from flask import Flask

    with pytest.raises(ValueError, match="APIEXEC_BASE_URL"):
        extension.APIExec(Flask("bare"))


def test_the_demo_runs() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "{'answer': 'mock reply to: Hello'}",
        "{'error': 'prompt: must be a non-empty string'}",
    ]
