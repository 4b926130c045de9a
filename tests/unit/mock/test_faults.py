"""Scripted, per-request and random faults, and the API key, over loopback sockets."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from apiexec.mock.server import MockServer
from tests.unit.mock.support import CHAT, TIMEOUT, FakeClock, chat_body, post

pytestmark = pytest.mark.integration


def test_scripted_faults_apply_in_order(make_server: Callable[..., MockServer]) -> None:
    server = make_server()
    server.script(["500", "drop", "429", "slow:300", "503", "429:1500"])
    assert server.pending_faults == 6
    url = server.url + CHAT
    assert requests.post(url, json=chat_body(), timeout=TIMEOUT).status_code == 500
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json=chat_body(), timeout=TIMEOUT)
    limited = requests.post(url, json=chat_body(), timeout=TIMEOUT)
    assert limited.status_code == 429
    assert limited.headers["retry-after-ms"] == "1000"
    assert limited.headers["retry-after"] == "1"
    started = time.monotonic()
    slow = requests.post(url, json=chat_body(), timeout=TIMEOUT)
    assert time.monotonic() - started >= 0.3
    assert slow.status_code == 200
    unavailable = requests.post(url, json=chat_body(), timeout=TIMEOUT)
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["type"] == "server_error"
    custom = requests.post(url, json=chat_body(), timeout=TIMEOUT)
    assert (custom.headers["retry-after-ms"], custom.headers["retry-after"]) == ("1500", "2")
    assert requests.post(url, json=chat_body(), timeout=TIMEOUT).status_code == 200
    stats = server.stats
    assert stats.requests == 7
    assert stats.dropped == 1
    assert stats.rate_limited == 2
    assert stats.by_status == {500: 1, 429: 2, 200: 2, 503: 1}
    assert server.pending_faults == 0


def test_drop_then_session_recovers(server: MockServer) -> None:
    server.script(["drop"])
    with requests.Session() as session:
        with pytest.raises(requests.ConnectionError):
            session.post(server.url + CHAT, json=chat_body(), timeout=TIMEOUT)
        assert session.post(server.url + CHAT, json=chat_body(), timeout=TIMEOUT).status_code == 200


def test_script_rejects_invalid_faults_atomically(server: MockServer) -> None:
    for bad in ["200", "boom", "slow:", "slow:-1", "500:10", "429:x", "600"]:
        with pytest.raises(ValueError):
            server.script(["500", bad])
    assert server.pending_faults == 0


def test_fault_header(server: MockServer) -> None:
    server.script(["503"])
    url = server.url + CHAT
    conflict = requests.post(url, json=chat_body(), headers={"x-mock-fault": "409"}, timeout=TIMEOUT)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["type"] == "conflict"
    limited = requests.post(url, json=chat_body(), headers={"X-Mock-Fault": "429:250"}, timeout=TIMEOUT)
    assert limited.headers["retry-after-ms"] == "250"
    bad = requests.post(url, json=chat_body(), headers={"x-mock-fault": "nonsense"}, timeout=TIMEOUT)
    assert bad.status_code == 400
    # the header does not consume the script
    assert requests.post(url, json=chat_body(), timeout=TIMEOUT).status_code == 503


def test_faults_skip_info_endpoints(server: MockServer) -> None:
    server.script(["500"])
    assert requests.get(server.url + "/health", timeout=TIMEOUT).status_code == 200
    assert server.pending_faults == 1


def test_scripted_429_consumes_no_capacity(make_server: Callable[..., MockServer]) -> None:
    server = make_server(clock=FakeClock(), requests_per_minute=60, request_burst=1)
    server.script(["429", "500"])
    url = server.url + CHAT
    assert [requests.post(url, json=chat_body(), timeout=TIMEOUT).status_code for _ in range(4)] == [
        429, 500, 200, 429]


def test_random_faults_are_reproducible(make_server: Callable[..., MockServer]) -> None:
    def statuses(server: MockServer) -> list[int]:
        with requests.Session() as session:
            return [session.post(server.url + CHAT, json=chat_body(), timeout=TIMEOUT).status_code
                    for _ in range(30)]

    first = statuses(make_server(fail_rate=0.5, seed=7))
    second = statuses(make_server(fail_rate=0.5, seed=7))
    assert first == second
    assert 200 in first and {500, 503} & set(first)


def test_drop_rate_one_drops_everything(make_server: Callable[..., MockServer]) -> None:
    server = make_server(drop_rate=1.0)
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            post(server, CHAT, chat_body())
    assert server.stats.dropped == 3
    assert server.stats.by_status == {}


# --------------------------------------------------------------------------- auth


def test_api_key_required(make_server: Callable[..., MockServer]) -> None:
    secret = "sk-mock-secret-123"
    server = make_server(api_key=secret)
    assert secret not in repr(server.config)
    url = server.url + CHAT
    missing = requests.post(url, json=chat_body(), timeout=TIMEOUT)
    assert missing.status_code == 401
    wrong = requests.post(url, json=chat_body(), headers={"Authorization": "Bearer nope"}, timeout=TIMEOUT)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "nope" not in wrong.text and secret not in wrong.text
    bearer = requests.post(url, json=chat_body(), headers={"Authorization": f"Bearer {secret}"}, timeout=TIMEOUT)
    assert bearer.status_code == 200
    message = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    anthropic = post(server, "/v1/messages", message, headers={"x-api-key": secret})
    assert anthropic.status_code == 200
    unauthorized = post(server, "/v1/messages", message)
    assert unauthorized.json()["error"]["type"] == "authentication_error"
    assert requests.get(server.url + "/health", timeout=TIMEOUT).status_code == 200




def test_cut_fault_truncates_a_stream_and_a_json_body(server: MockServer) -> None:
    import openai

    body = chat_body("one two three four five", stream=True)
    with requests.Session() as session:
        with session.post(server.url + CHAT, json=body, stream=True, timeout=TIMEOUT,
                          headers={"x-mock-fault": "cut:2"}) as response:
            assert response.status_code == 200
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                b"".join(response.iter_content(None))
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError):
            list(client.chat.completions.create(model="m", messages=body["messages"], stream=True,
                                                extra_headers={"x-mock-fault": "cut:3"}))
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="m", messages=body["messages"], extra_headers={"x-mock-fault": "cut:0"})
        assert client.chat.completions.create(model="m", messages=body["messages"]).choices[0].message.content
    assert server.stats.by_status[200] == 4 and server.stats.dropped == 0


def test_cut_fault_syntax() -> None:
    from apiexec.mock.faults import parse_fault

    assert parse_fault("cut:3").cut_after == 3
    for bad in ("cut", "cut:-1", "cut:x", "cut:1.5"):
        with pytest.raises(ValueError, match="invalid fault"):
            parse_fault(bad)
