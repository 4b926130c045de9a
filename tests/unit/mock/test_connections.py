"""Connections, stats and the server's lifecycle, over loopback sockets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
import requests

from apiexec.mock.server import MockServer, MockServerConfig, serve_forever
from tests.unit.mock.support import CHAT, TIMEOUT, chat_body, post, wait_until

pytestmark = pytest.mark.integration


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


