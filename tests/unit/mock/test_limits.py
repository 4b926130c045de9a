"""The mock server's rate limiter and its headers, over loopback sockets."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import requests

from apiexec.mock.server import MockServer
from apiexec.mock.wire import format_duration
from tests.unit.mock.support import CHAT, TIMEOUT, FakeClock, chat_body, parse_duration, post

pytestmark = pytest.mark.integration


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


