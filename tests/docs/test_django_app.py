"""The Django example (examples/django_app/) under Django's test client and gunicorn.

In this process: the project is set up once (settings from the environment,
pointing at a mock server started first), and Django's test client drives
its views, whose calls go over loopback through the one process-wide
executor created in ``LLMAppConfig.ready()``.

Under gunicorn ``--preload`` (a real server, a real fork): the executor
created in the master restarts in each worker, the workers share one SQLite
quota, and SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiexec.mock.server import MockServer, MockServerConfig
from tests.helpers import free_port

pytestmark = pytest.mark.integration
django = pytest.importorskip("django", reason="pip install 'apiexec[dev]' (django)")

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "django_app"
KEY = "sk-django-example"
DEADLINE = 3.0
SETTINGS_ENV = {
    "DJANGO_SETTINGS_MODULE": "djangoproject.settings",
    "LLM_API_KEY": KEY,
    "LLM_CONCURRENCY": "4",
    "LLM_DEADLINE": str(DEADLINE),
    "LLM_RPM": "60000",
    "LLM_TPM": "10000000",
}


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(MockServerConfig(api_key=KEY)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: MockServer) -> Iterator[Any]:
    """Django set up once for this module, its executor shut down after."""
    from django.conf import settings as django_settings

    if django_settings.configured:
        pytest.skip("Django is already configured in this process by someone else")
    env = {**SETTINGS_ENV, "LLM_BASE_URL": f"{server.url}/v1"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    sys.path.insert(0, str(PROJECT))
    try:
        django.setup()
        from django.test import Client

        yield Client()
    finally:
        from llmapp import llm

        llm.shutdown()
        sys.path.remove(str(PROJECT))
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _post(client: Any, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_a_view_answers_through_the_process_wide_executor(client: Any) -> None:
    from llmapp import llm

    executor = llm.executor()
    reply = _post(client, "/chat", {"prompt": "Hello", "max_tokens": 20})
    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert body["answer"] == "mock reply to: Hello"
    assert body["usage"]["total_tokens"] > 0 and body["request_id"].startswith("req_")
    assert body["pid"] == os.getpid()
    _post(client, "/chat", {"prompt": "Again"})
    assert llm.executor() is executor  # one executor for the process, not one per request
    assert executor.metrics.snapshot()["completed"] >= 2


def test_bad_input_is_a_400_naming_the_field(client: Any) -> None:
    reply = _post(client, "/chat", {"prompt": "", "max_tokens": 20})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "prompt: must be a non-empty string"
    reply = _post(client, "/chat", {"prompt": "x", "max_tokens": 10**6})
    assert reply.json()["error"]["message"].startswith("max_tokens:")
    assert client.post("/chat", data="not json", content_type="application/json").status_code == 400


def test_the_api_refusing_a_call_is_a_502_with_its_status(client: Any, server: MockServer) -> None:
    server.script(["400"])
    reply = _post(client, "/chat", {"prompt": "refused"})
    assert reply.status_code == 502
    assert reply.json()["error"]["upstream_status"] == 400


def test_several_prompts_one_failure_cancels_nothing(client: Any, server: MockServer) -> None:
    server.script(["400"])
    reply = _post(client, "/chats", {"prompts": [f"p{n}" for n in range(6)], "max_tokens": 10})
    assert reply.status_code == 200
    statuses = Counter(result["status"] for result in reply.json()["results"])
    assert statuses == {200: 5, 502: 1}


def test_a_slow_api_is_a_504_after_the_deadline(client: Any, server: MockServer) -> None:
    server.script([f"slow:{int(DEADLINE * 1000) + 3000}"])
    started = time.monotonic()
    reply = _post(client, "/chat", {"prompt": "slow"})
    elapsed = time.monotonic() - started
    assert reply.status_code == 504, reply.content
    assert DEADLINE - 0.5 <= elapsed < DEADLINE + 5.0  # generous: a loaded 2-core machine


def test_health_then_shutdown_answers_503(client: Any) -> None:
    from llmapp import llm

    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["state"] == "running"
    executor = llm.executor()
    executor.shutdown(wait=True)  # as at interpreter exit
    assert client.get("/healthz").status_code == 503
    reply = _post(client, "/chat", {"prompt": "too late"})
    assert reply.status_code == 503 and reply.json()["error"]["type"] == "shutting_down"
    assert reply["Retry-After"] == "1"


# -- gunicorn --preload ----------------------------------------------------------------------

SHARED_LIMIT = 20
GUNICORN_START = 30.0


def _wait_until_serving(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + GUNICORN_START
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)  # test-side: the server is still starting
    raise AssertionError("gunicorn did not serve in time")


def _chat_over_http(port: int, n: int) -> tuple[int, int | None]:
    data = json.dumps({"prompt": f"hello {n}", "max_tokens": 10}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/chat", data=data, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())["pid"]
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.mark.skipif(shutil.which("gunicorn") is None and not os.environ.get("CI"), reason="gunicorn not installed")
def test_gunicorn_preload_workers_restart_the_executor_and_share_one_quota(server: MockServer, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        **SETTINGS_ENV,
        "PYTHONPATH": f"{PROJECT}{os.pathsep}{ROOT}",
        "LLM_BASE_URL": f"{server.url}/v1",
        # 20 requests at once, then one per 30 s: what passes in this test is the burst.
        "LLM_RPM": str(SHARED_LIMIT),
        "LLM_INTERVAL": "600",
        "LLM_BURST": str(SHARED_LIMIT),
        "LLM_STORAGE": f"sqlite:///{tmp_path / 'limits.db'}",
        "LLM_KEY": "django-example",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "--threads", "8", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "10", "djangoproject.wsgi"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_until_serving(port, process)
        with cf.ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda n: _chat_over_http(port, n), range(SHARED_LIMIT + 6)))
        statuses = Counter(status for status, _ in outcomes)
        pids = {pid for _, pid in outcomes if pid is not None}
        # The workers are forks of the master that created the executor: they answered, so it restarted.
        assert pids and process.pid not in pids
        # One quota for both workers: the burst of 20 (one more may refill), the rest ran out of time.
        # With a quota per process all 26 would have passed.
        assert SHARED_LIMIT <= statuses[200] <= SHARED_LIMIT + 1, statuses
        assert statuses[200] + statuses[504] == SHARED_LIMIT + 6, statuses
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
