"""The mock API without sockets: routing, dialects, keys, per-key limits, scripted faults, config."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apiexec.mock.api import MockAPI
from apiexec.mock.config import MockServerConfig
from apiexec.mock.wire import Reply, Request
from tests.helpers import FakeClock

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def call(api: MockAPI, path: str = CHAT, *, method: str = "POST", body: bytes = BODY, query: str = "",
         **headers: str) -> Reply:
    return api.respond(Request(method, path, {k.replace("_", "-"): v for k, v in headers.items()}, body, query))


def payload(reply: Reply) -> Any:
    return json.loads(reply.body)


def test_unknown_path_and_wrong_method_in_each_dialect() -> None:
    api = MockAPI(MockServerConfig(), clock=FakeClock())
    missing = call(api, "/v1/nothing")
    assert missing.status == 404 and payload(missing)["error"]["type"] == "invalid_request_error"
    anthropic = call(api, "/v1/nothing", anthropic_version="2023-06-01")
    assert anthropic.status == 404 and payload(anthropic)["type"] == "error"
    assert payload(anthropic)["error"]["type"] == "not_found_error"
    assert payload(anthropic)["request_id"] == anthropic.headers["request-id"]
    assert call(api, CHAT, method="GET").status == 405
    assert call(api, "/v1/batches", method="DELETE").status == 405
    assert call(api, "/v1/files/file-x", method="GET").status == 404


def test_several_accepted_keys_and_every_v1_path_needs_one() -> None:
    api = MockAPI(MockServerConfig(api_key="k1", api_keys=("k2",)), clock=FakeClock())
    assert call(api, authorization="Bearer k1").status == 200
    assert call(api, x_api_key="k2").status == 200
    assert call(api, api_key="k2").status == 200  # Azure's header
    assert call(api, authorization="Bearer k3").status == 401
    assert call(api, "/v1/models", method="GET", body=b"").status == 401
    assert call(api, "/v1/batches", method="GET", body=b"").status == 401
    assert call(api, "/health", method="GET", body=b"").status == 200
    anthropic = call(api, "/v1/messages", x_api_key="nope")
    assert payload(anthropic)["error"]["type"] == "authentication_error"


def test_limits_per_key_give_each_key_its_own_buckets() -> None:
    clock = FakeClock()
    shared = MockAPI(MockServerConfig(requests_per_minute=60, request_burst=1), clock=clock)
    assert call(shared, authorization="Bearer a").status == 200
    assert call(shared, authorization="Bearer b").status == 429
    per_key = MockAPI(MockServerConfig(requests_per_minute=60, request_burst=1, limits_per_key=True), clock=clock)
    first = call(per_key, authorization="Bearer a")
    assert first.status == 200 and first.headers["x-ratelimit-remaining-requests"] == "0"
    other = call(per_key, authorization="Bearer b")
    assert other.status == 200 and other.headers["x-ratelimit-remaining-requests"] == "0"
    again = call(per_key, authorization="Bearer a")
    assert again.status == 429 and again.headers["retry-after-ms"] == "1000"
    clock.advance(1.0)
    assert call(per_key, authorization="Bearer a").status == 200


def test_config_faults_are_scripted_in_order() -> None:
    api = MockAPI(MockServerConfig(faults=("503", "429:250", "slow:5")), clock=FakeClock())
    assert api.faults.pending() == 3
    assert call(api).status == 503
    limited = call(api)
    assert limited.status == 429 and limited.headers["retry-after-ms"] == "250"
    slow = call(api)
    assert slow.status == 200 and slow.delay_s == pytest.approx(0.005)
    assert call(api).status == 200


def test_batch_routes_answer_in_their_dialect() -> None:
    api = MockAPI(MockServerConfig(), clock=FakeClock())
    missing = call(api, "/v1/messages/batches/msgbatch_x", method="GET", body=b"")
    assert missing.status == 404 and payload(missing)["error"]["type"] == "not_found_error"
    bad = call(api, "/v1/batches", body=b"{}")
    assert bad.status == 400 and payload(bad)["error"]["param"] == "endpoint"
    listed = call(api, "/v1/batches", method="GET", body=b"", query="limit=0")
    assert listed.status == 400 and payload(listed)["error"]["param"] == "limit"
    upload = call(api, "/v1/files", body=b"{}", content_type="application/json")
    assert upload.status == 400


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"api_keys": ("",)}, "api_keys"),
        ({"api_keys": ["k"]}, "api_keys"),
        ({"limits_per_key": "yes"}, "limits_per_key"),
        ({"faults": ("teapot",)}, "faults"),
        ({"faults": "500"}, "faults"),
        ({"batch_time_scale": -1}, "batch_time_scale"),
        ({"batch_time_scale": float("inf")}, "batch_time_scale"),
    ],
)
def test_new_config_fields_are_checked(fields: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MockServerConfig(**fields)


def test_keys_are_never_in_repr() -> None:
    config = MockServerConfig(api_key="secret-one", api_keys=("secret-two",))
    assert "secret" not in repr(config)
    assert config.accepted_keys == ("secret-one", "secret-two")


def test_random_bodies_get_an_answer_never_an_exception() -> None:
    import random

    rng = random.Random(7)
    atoms: list[Any] = [None, True, 0, -1, 5, 1.5, "", "x", "user", [], {}, [1], ["a"], {"type": "text"}, 10**12]
    keys = ["model", "messages", "input", "prompt", "n", "tools", "tool_choice", "response_format", "logprobs",
            "top_logprobs", "stream", "max_tokens", "stop", "dimensions", "encoding_format", "echo", "system", "text",
            "requests", "params", "custom_id", "endpoint", "input_file_id", "role", "content", "function", "name",
            "parameters", "input_schema", "type", "json_schema", "schema"]

    def value(depth: int = 0) -> Any:
        draw = rng.random()
        if depth > 3 or draw < 0.4:
            return rng.choice(atoms)
        if draw < 0.7:
            return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 4))}
        return [value(depth + 1) for _ in range(rng.randint(0, 3))]

    api = MockAPI(MockServerConfig(), clock=FakeClock())
    paths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages",
             "/v1/messages/count_tokens", "/v1/batches", "/v1/messages/batches", "/v1/files"]
    for _ in range(2000):
        body = value()
        if isinstance(body, dict) and rng.random() < 0.5:
            body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": value()}], **body}
        reply = call(api, rng.choice(paths), body=json.dumps(body).encode())
        assert reply.status in (200, 400, 404)
        assert isinstance(payload(reply), dict)


def test_a_bug_in_a_handler_is_a_500_not_a_dropped_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    import apiexec.mock.api as api_module

    def broken(body: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(api_module, "count_tokens_answer", broken)
    reply = call(MockAPI(MockServerConfig(), clock=FakeClock()), "/v1/messages/count_tokens")
    assert reply.status == 500 and payload(reply)["error"]["type"] == "api_error"
    assert payload(reply)["request_id"] == reply.headers["request-id"]
