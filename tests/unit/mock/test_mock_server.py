"""Tests of apiexec.mock.server over real loopback sockets (127.0.0.1 only)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import requests

from apiexec.mock.config import DEFAULT_COMPLETION_TOKENS, EMBEDDING_DIMENSIONS
from apiexec.mock.server import MockServer, MockServerConfig, serve_forever
from apiexec.mock.wire import format_duration

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
TIMEOUT = 10.0
_DURATION_TERM = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def chat_body(text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": text}], **extra}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration such as '1m30.5s' or '12ms'."""
    assert re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+", text), text
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION_TERM.findall(text))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        threading.Event().wait(0.005)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_server() -> Iterator[Callable[..., MockServer]]:
    servers: list[MockServer] = []

    def make(*, clock: Callable[[], float] | None = None, **fields: Any) -> MockServer:
        config = MockServerConfig(**fields)
        server = MockServer(config) if clock is None else MockServer(config, clock=clock)
        servers.append(server.start())
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., MockServer]) -> MockServer:
    return make_server()


def post(server: MockServer, path: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=TIMEOUT, **kwargs)


# --------------------------------------------------------------------------- shapes


def test_chat_completion_shape_and_usage(server: MockServer) -> None:
    body = {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "abcdefgh"},  # 8 chars
            {"role": "user", "content": [{"type": "text", "text": "hello world"}]},  # 11 chars
        ],
    }
    response = post(server, CHAT, body)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "gpt-test"
    assert isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "mock reply to: hello world", "refusal": None,
                                 "annotations": []}
    assert choice["finish_reason"] == "stop"
    prompt = 5 + 2 * 3  # ceil(19 / 4) + 3 per message
    usage = data["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        prompt, DEFAULT_COMPLETION_TOKENS, prompt + DEFAULT_COMPLETION_TOKENS)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_chat_reply_quotes_last_user_message_and_is_deterministic(server: MockServer) -> None:
    long_text = "x" * 100
    body = {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": long_text}]}
    first = post(server, CHAT, body).json()
    second = post(server, CHAT, body).json()
    assert first["choices"][0]["message"]["content"] == "mock reply to: " + "x" * 40
    assert first["choices"] == second["choices"]
    assert first["model"] == "mock-model"
    assert first["id"] != second["id"]


def test_chat_max_tokens_caps_completion(server: MockServer) -> None:
    data = post(server, CHAT, chat_body(max_tokens=3)).json()
    assert data["usage"]["completion_tokens"] == 3
    assert data["choices"][0]["finish_reason"] == "length"
    assert len(data["choices"][0]["message"]["content"]) <= 12
    data = post(server, CHAT, chat_body(max_completion_tokens=500)).json()
    assert data["usage"]["completion_tokens"] == DEFAULT_COMPLETION_TOKENS
    assert post(server, CHAT, chat_body(max_tokens=0)).status_code == 400


def test_embeddings_shape_and_determinism(server: MockServer) -> None:
    data = post(server, "/v1/embeddings", {"model": "emb", "input": ["abcd", "hello there"]}).json()
    assert data["object"] == "list"
    assert [item["index"] for item in data["data"]] == [0, 1]
    vectors = [item["embedding"] for item in data["data"]]
    assert all(len(v) == EMBEDDING_DIMENSIONS for v in vectors)
    assert all(isinstance(x, float) for v in vectors for x in v)
    assert vectors[0] != vectors[1]
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-4)
    assert data["usage"] == {"prompt_tokens": 1 + 3, "total_tokens": 4}
    single = post(server, "/v1/embeddings", {"input": "abcd"}).json()
    assert single["data"][0]["embedding"] == vectors[0]
    assert post(server, "/v1/embeddings", {"input": [1, 2]}).status_code == 200  # token ids
    assert post(server, "/v1/embeddings", {"input": [1.5]}).status_code == 400
    assert post(server, "/v1/embeddings", {"input": []}).status_code == 400


def test_anthropic_messages_shape(server: MockServer) -> None:
    body = {"model": "claude-test", "max_tokens": 100, "system": "be brief",  # 8 chars
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]}  # 8 chars
    response = post(server, "/v1/messages", body)
    assert response.status_code == 200
    data = response.json()
    assert data["type"] == "message"
    assert data["role"] == "assistant"
    assert data["model"] == "claude-test"
    assert data["content"] == [{"type": "text", "text": "mock reply to: hi there"}]
    assert data["stop_reason"] == "end_turn"
    assert (data["usage"]["input_tokens"], data["usage"]["output_tokens"]) == (4 + 3, DEFAULT_COMPLETION_TOKENS)
    assert response.headers["request-id"] == response.headers["x-request-id"]


def test_responses_endpoint(server: MockServer) -> None:
    data = post(server, "/v1/responses", {"model": "m", "input": "abcdefgh", "max_output_tokens": 5}).json()
    assert data["object"] == "response"
    assert data["output"][0]["content"][0]["type"] == "output_text"
    usage = data["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (2 + 3, 5, 10)
    assert data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "max_output_tokens"}


def test_get_endpoints(server: MockServer) -> None:
    assert requests.get(server.url + "/health", timeout=TIMEOUT).json() == {"status": "ok"}
    models = requests.get(server.url + "/v1/models", timeout=TIMEOUT).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "mock-model"


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("POST", "/v1/nothing", b"{}", 404),
        ("GET", CHAT, None, 405),
        ("POST", CHAT, b"not json", 400),
        ("POST", CHAT, b"[1, 2]", 400),
        ("POST", CHAT, b'{"messages": []}', 400),
    ],
)
def test_errors_are_json(server: MockServer, method: str, path: str, data: bytes | None, status: int) -> None:
    response = requests.request(method, server.url + path, data=data, timeout=TIMEOUT)
    assert response.status_code == status
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]


def test_anthropic_errors_are_anthropic_shaped(server: MockServer) -> None:
    response = requests.post(server.url + "/v1/messages", data=b"nope", timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_request_ids_are_unique(server: MockServer) -> None:
    with requests.Session() as session:
        ids = {session.get(server.url + "/health", timeout=TIMEOUT).headers["x-request-id"] for _ in range(10)}
    assert len(ids) == 10


# --------------------------------------------------------------------------- streaming


def sse_events(response: requests.Response) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    for raw in response.iter_lines():
        line = raw.decode("utf-8")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, line[len("data: "):]))
            name = None
    return events


def test_chat_streaming(server: MockServer) -> None:
    with requests.Session() as session:
        url = server.url + CHAT
        plain = session.post(url, json=chat_body(), timeout=TIMEOUT).json()
        body = chat_body(stream=True, stream_options={"include_usage": True})
        with session.post(url, json=body, stream=True, timeout=TIMEOUT) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            events = sse_events(response)
        assert events[-1] == (None, "[DONE]")
        chunks = [json.loads(data) for _, data in events[:-1]]
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == plain["choices"][0]["message"]["content"]
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == plain["usage"]
        # the connection is still usable afterwards
        assert session.get(server.url + "/health", timeout=TIMEOUT).status_code == 200
    assert server.stats.connections == 1


def test_chat_streaming_without_usage(server: MockServer) -> None:
    with post(server, CHAT, chat_body(stream=True), stream=True) as response:
        events = sse_events(response)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert events[-1] == (None, "[DONE]")
    assert "usage" not in chunks[-1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_anthropic_streaming(server: MockServer) -> None:
    body: dict[str, Any] = {
        "model": "claude", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "ping"}]
    }
    with requests.Session() as session:
        with session.post(server.url + "/v1/messages", json=body, stream=True, timeout=TIMEOUT) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            events = sse_events(response)
        names = [name for name, _ in events]
        payloads = [json.loads(data) for _, data in events]
        assert [p["type"] for p in payloads] == names
        deltas = names.count("content_block_delta")
        assert deltas >= 1
        assert names == ["message_start", "ping", "content_block_start"] + ["content_block_delta"] * deltas + [
            "content_block_stop", "message_delta", "message_stop"]
        text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
        assert text == "mock reply to: ping"
        assert payloads[0]["message"]["usage"]["input_tokens"] == 1 + 3
        assert payloads[-2]["delta"]["stop_reason"] == "end_turn"
        assert payloads[-2]["usage"]["output_tokens"] == DEFAULT_COMPLETION_TOKENS
        assert session.get(server.url + "/health", timeout=TIMEOUT).status_code == 200
    assert server.stats.connections == 1


# --------------------------------------------------------------------------- rate limits


def test_rate_limit_burst_then_429_then_admitted_after_retry_after(make_server: Callable[..., MockServer]) -> None:
    server = make_server(requests_per_minute=120, request_burst=2)  # one request per 500 ms
    with requests.Session() as session:
        url = server.url + CHAT
        assert [session.post(url, json=chat_body(), timeout=TIMEOUT).status_code for _ in range(2)] == [200, 200]
        limited = session.post(url, json=chat_body(), timeout=TIMEOUT)
        assert limited.status_code == 429
        retry_ms = int(limited.headers["retry-after-ms"])
        assert 1 <= retry_ms <= 500
        assert limited.headers["retry-after"] == "1"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert limited.json()["error"]["type"] == "requests"
        time.sleep(retry_ms / 1000)
        assert session.post(url, json=chat_body(), timeout=TIMEOUT).status_code == 200
    stats = server.stats
    assert stats.rate_limited == 1
    assert stats.by_status == {200: 3, 429: 1}


def test_rate_limit_exact_with_fake_clock(make_server: Callable[..., MockServer]) -> None:
    clock = FakeClock()
    server = make_server(clock=clock, requests_per_minute=60, request_burst=2)
    with requests.Session() as session:
        url = server.url + CHAT
        first = session.post(url, json=chat_body(), timeout=TIMEOUT)
        assert first.headers["x-ratelimit-limit-requests"] == "60"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-reset-requests"] == "1s"
        second = session.post(url, json=chat_body(), timeout=TIMEOUT)
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        assert second.headers["x-ratelimit-reset-requests"] == "2s"
        for _ in range(3):  # denied requests consume nothing
            denied = session.post(url, json=chat_body(), timeout=TIMEOUT)
            assert denied.status_code == 429
            assert denied.headers["retry-after-ms"] == "1000"
        clock.now += 0.5
        assert session.post(url, json=chat_body(), timeout=TIMEOUT).headers["retry-after-ms"] == "500"
        clock.now += 0.5
        assert session.post(url, json=chat_body(), timeout=TIMEOUT).status_code == 200
        assert session.post(url, json=chat_body(), timeout=TIMEOUT).status_code == 429


def test_token_limit_charges_total_tokens(make_server: Callable[..., MockServer]) -> None:
    clock = FakeClock()
    server = make_server(clock=clock, tokens_per_minute=600, token_burst=30)  # 10 tokens/s
    url = server.url + CHAT
    body = chat_body("abcd")  # 1 + 3 prompt + 12 completion = 16 tokens
    first = requests.post(url, json=body, timeout=TIMEOUT)
    assert first.json()["usage"]["total_tokens"] == 16
    assert first.headers["x-ratelimit-limit-tokens"] == "600"
    assert first.headers["x-ratelimit-remaining-tokens"] == "14"
    assert first.headers["x-ratelimit-reset-tokens"] == "1.6s"
    assert "x-ratelimit-limit-requests" not in first.headers
    denied = requests.post(url, json=body, timeout=TIMEOUT)
    assert denied.status_code == 429
    assert denied.json()["error"]["type"] == "tokens"
    assert denied.headers["retry-after-ms"] == "200"
    clock.now += 0.2
    assert requests.post(url, json=body, timeout=TIMEOUT).status_code == 200


def test_ratelimit_headers_parse(make_server: Callable[..., MockServer]) -> None:
    server = make_server(requests_per_minute=6000, tokens_per_minute=100_000)
    response = post(server, CHAT, chat_body())
    headers = response.headers
    assert int(headers["x-ratelimit-limit-requests"]) == 6000
    assert int(headers["x-ratelimit-remaining-requests"]) == 5999
    assert 0 < parse_duration(headers["x-ratelimit-reset-requests"]) <= 0.011
    assert int(headers["x-ratelimit-limit-tokens"]) == 100_000
    total = response.json()["usage"]["total_tokens"]
    assert int(headers["x-ratelimit-remaining-tokens"]) == 100_000 - total
    assert 0 < parse_duration(headers["x-ratelimit-reset-tokens"]) <= 60 * total / 100_000 + 0.001
    health = requests.get(server.url + "/health", timeout=TIMEOUT)
    assert int(health.headers["x-ratelimit-remaining-requests"]) >= 5999  # not charged


def test_anthropic_ratelimit_headers(make_server: Callable[..., MockServer]) -> None:
    server = make_server(requests_per_minute=60, tokens_per_minute=6000)
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    before = datetime.now(timezone.utc)
    headers = post(server, "/v1/messages", body).headers
    assert headers["anthropic-ratelimit-requests-limit"] == "60"
    assert headers["anthropic-ratelimit-requests-remaining"] == "59"
    reset = datetime.strptime(headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ")
    seconds = (reset.replace(tzinfo=timezone.utc) - before).total_seconds()
    assert 0 < seconds <= 3
    assert headers["anthropic-ratelimit-tokens-limit"] == "6000"
    assert headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0121, "13ms"), (1, "1s"), (1.5, "1.5s"), (59.9985, "59.999s"), (59.9994, "1m0s"),
     (90.25, "1m30.25s"), (360, "6m0s"), (3661, "1h1m1s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert seconds <= parse_duration(text) < seconds + 0.001  # rounded up, never early


# --------------------------------------------------------------------------- faults


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


# --------------------------------------------------------------------------- connections and stats


def test_keep_alive_reuses_one_connection(server: MockServer) -> None:
    with requests.Session() as session:
        for _ in range(20):
            assert session.post(server.url + CHAT, json=chat_body(), timeout=TIMEOUT).status_code == 200
    stats = server.stats
    assert stats.connections == 1
    assert stats.requests == 20
    assert stats.paths == {CHAT: 20}
    assert stats.in_flight == 0


def test_concurrent_requests_overlap(make_server: Callable[..., MockServer]) -> None:
    server = make_server(latency_ms=200)
    results: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        status = post(server, CHAT, chat_body()).status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=call) for _ in range(16)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    elapsed = time.monotonic() - started
    assert results == [200] * 16
    assert server.stats.max_in_flight > 1
    assert elapsed < 16 * 0.2 / 2  # well under serial time


def test_throughput_with_32_clients(server: MockServer) -> None:
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with requests.Session() as session:
                for _ in range(10):
                    response = session.post(server.url + CHAT, json=chat_body(), timeout=TIMEOUT)
                    assert response.status_code == 200
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    stats = server.stats
    assert stats.requests == 320
    assert stats.connections == 32


def test_latency_and_jitter(make_server: Callable[..., MockServer]) -> None:
    server = make_server(latency_ms=100, latency_jitter_ms=20, seed=1)
    started = time.monotonic()
    assert post(server, CHAT, chat_body()).status_code == 200
    assert time.monotonic() - started >= 0.08


def test_record_bodies_and_reset_stats(make_server: Callable[..., MockServer]) -> None:
    server = make_server(record_bodies=True)
    post(server, CHAT, chat_body("one"))
    post(server, "/v1/embeddings", {"input": "two"})
    stats = server.stats
    assert [json.loads(body) for body in stats.bodies] == [chat_body("one"), {"input": "two"}]
    assert stats.paths == {CHAT: 1, "/v1/embeddings": 1}
    server.reset_stats()
    cleared = server.stats
    assert (cleared.requests, cleared.connections, cleared.bodies, cleared.by_status) == (0, 0, [], {})


def test_bodies_not_recorded_by_default(server: MockServer) -> None:
    post(server, CHAT, chat_body())
    assert server.stats.bodies == []


# --------------------------------------------------------------------------- lifecycle


def test_stop_is_fast_with_a_request_sleeping_in_latency(make_server: Callable[..., MockServer]) -> None:
    server = make_server(latency_ms=30_000)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            post(server, CHAT, chat_body())
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: server.stats.in_flight == 1)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], requests.ConnectionError)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/health", timeout=TIMEOUT)


def test_stop_closes_idle_keep_alive_connections(server: MockServer) -> None:
    with requests.Session() as session:
        assert session.get(server.url + "/health", timeout=TIMEOUT).status_code == 200
        server.stop()
        with pytest.raises(requests.ConnectionError):
            session.get(server.url + "/health", timeout=TIMEOUT)


def test_lifecycle() -> None:
    server = MockServer()
    with pytest.raises(RuntimeError):
        _ = server.port
    with server as running:
        assert running is server
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert requests.get(server.url + "/health", timeout=TIMEOUT).ok
        with pytest.raises(RuntimeError):
            server.start()
    server.stop()  # safe twice
    assert server.wait(0)
    with pytest.raises(RuntimeError):
        server.start()


def test_serve_forever_returns_after_stop_and_on_ctrl_c() -> None:
    seen: list[int] = []

    def ready(server: MockServer) -> None:
        seen.append(requests.get(server.url + "/health", timeout=TIMEOUT).status_code)
        threading.Thread(target=server.stop).start()

    serve_forever(MockServerConfig(), ready=ready)
    assert seen == [200]

    servers: list[MockServer] = []

    def interrupt(server: MockServer) -> None:
        servers.append(server)
        raise KeyboardInterrupt

    serve_forever(MockServerConfig(), ready=interrupt)
    with pytest.raises(requests.ConnectionError):
        requests.get(servers[0].url + "/health", timeout=TIMEOUT)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"host": ""}, "host"),
        ({"port": -1}, "port"),
        ({"port": 70000}, "port"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_jitter_ms": float("nan")}, "latency_jitter_ms"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"request_burst": 5}, "request_burst"),
        ({"requests_per_minute": 60, "request_burst": 0.5}, "request_burst"),
        ({"tokens_per_minute": -5}, "tokens_per_minute"),
        ({"tokens_per_minute": 100, "token_burst": "x"}, "token_burst"),
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"fail_rate": 0.6, "drop_rate": 0.6}, "drop_rate"),
        ({"seed": "1"}, "seed"),
        ({"api_key": ""}, "api_key"),
        ({"record_bodies": 1}, "record_bodies"),
    ],
)
def test_config_validation_names_the_field(fields: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MockServerConfig(**fields)


def test_config_is_frozen_and_keyword_only() -> None:
    config = MockServerConfig(requests_per_minute=60)
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        MockServerConfig("127.0.0.1")  # type: ignore[call-arg]
