"""Answer shapes and streams of the mock server, over loopback sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from apiexec.mock.config import DEFAULT_COMPLETION_TOKENS, EMBEDDING_DIMENSIONS
from apiexec.mock.server import MockServer
from tests.unit.mock.support import CHAT, TIMEOUT, chat_body, post, sse_events

pytestmark = pytest.mark.integration


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


