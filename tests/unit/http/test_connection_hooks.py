"""The endpoint's connections: TLS works, and a request's head and body go out in one write.

Both are tested against real servers on loopback: a plain ``http.server`` and
the same server behind TLS with a certificate made here for ``127.0.0.1``
(so nothing touches the network or the system's CA store).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError

from apiexec.http import session as session_module
from apiexec.http.endpoint import Endpoint
from apiexec.http.presets import preset_config
from tests.helpers import free_port, server_tls_context

pytestmark = pytest.mark.timeout(30)


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every POST and GET with the size of the body it received."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()  # set when a test ends: stalled handlers return

    def _answer(self, size: int) -> None:
        payload = b'{"received": %d, "path": "%s"}' % (size, self.path.encode())
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        size = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if self.path.endswith("/stall"):  # a slow-loris: a trickle, then silence
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"a": ')
            self.wfile.flush()
            _Echo.release.wait(20)
            return
        if not self.path.endswith("/stream"):
            self._answer(size)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for word in ("he", "llo"):
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": word}}]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def do_GET(self) -> None:  # noqa: N802
        self._answer(0)

    def log_message(self, *args: object) -> None:
        pass


def _serve(context: ssl.SSLContext | None) -> tuple[http.server.ThreadingHTTPServer, int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


@pytest.fixture
def plain_server() -> Iterator[str]:
    httpd, port = _serve(None)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    context, cert = server_tls_context(tmp_path)
    httpd, port = _serve(context)
    _Echo.release.clear()
    try:
        yield f"https://127.0.0.1:{port}/v1", cert
    finally:
        _Echo.release.set()
        httpd.shutdown()
        httpd.server_close()


def _endpoint(base_url: str, **changes: object) -> Endpoint:
    config = preset_config("openai-compatible", base_url=base_url, api_key="sk-test-key")
    changes.setdefault("endpoint", "chat/completions")
    return Endpoint(config.with_changes(**changes))


def test_https_calls_succeed_through_the_pooled_connections(tls_server: tuple[str, Path]) -> None:
    # The TLS connection class once took its hooks from the plain one by
    # assignment, and its zero-argument super() then failed on every HTTPS call.
    url, cert = tls_server
    with _endpoint(url, verify=str(cert)) as endpoint:
        answers = [endpoint.call({"model": "m", "n": i}) for i in range(3)]
    assert [a["path"] for a in answers] == ["/v1/chat/completions"] * 3
    assert all(a["received"] > 0 for a in answers)


def test_https_streams_arrive_event_by_event(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    with _endpoint(url, verify=str(cert), endpoint="chat/stream") as endpoint:
        events = list(endpoint.stream({"model": "m", "messages": []}))
    assert [e["choices"][0]["delta"]["content"] for e in events] == ["he", "llo"]


def test_https_without_verification_when_asked(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    with _endpoint(url, verify=False) as endpoint, pytest.warns(InsecureRequestWarning):  # urllib3 says so
        assert endpoint.call({"model": "m"})["received"] > 0


def test_the_total_deadline_cuts_a_stalled_tls_read(tls_server: tuple[str, Path]) -> None:
    # The deadline's watchdog reaches the socket through the connection's
    # alarm: over TLS too (the TLS class once failed before it could attach).
    import time

    from apiexec.errors import DeadlineExceeded

    url, cert = tls_server
    with _endpoint(url, verify=str(cert), endpoint="chat/stall", total_timeout=1.0, max_retries=0) as endpoint:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="reading the response"):
            endpoint.call({"model": "m"})
        assert time.monotonic() - started < 5.0


def test_https_still_verifies_the_certificate(tls_server: tuple[str, Path]) -> None:
    from apiexec.errors import APIError

    url, _ = tls_server
    with _endpoint(url, max_retries=0) as endpoint, pytest.raises(APIError, match="TLS verification failed"):
        endpoint.call({"model": "m"})  # the system CA store does not know the test certificate


def _count_writes() -> tuple[list[bytes], mock._patch[object]]:
    writes: list[bytes] = []
    real_send = http.client.HTTPConnection.send

    def counting(self: http.client.HTTPConnection, data: bytes) -> None:
        writes.append(bytes(data))
        real_send(self, data)

    return writes, mock.patch.object(http.client.HTTPConnection, "send", counting)


def test_a_small_request_goes_out_in_one_write(plain_server: str) -> None:
    writes, patch = _count_writes()
    with _endpoint(plain_server) as endpoint:
        endpoint.call({"model": "m"})  # the connection exists: only the request is counted
        with patch:
            answer = endpoint.call({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert len(writes) == 1
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1")
    assert answer["received"] == len(body) > 0


def test_a_large_body_is_not_copied_into_the_head(plain_server: str) -> None:
    writes, patch = _count_writes()
    big = "x" * (session_module._ONE_WRITE_BYTES + 10)
    with _endpoint(plain_server) as endpoint, patch:
        answer = endpoint.call({"model": "m", "text": big})
    assert len(writes) == 2
    assert writes[0].endswith(b"\r\n\r\n") and len(writes[1]) > session_module._ONE_WRITE_BYTES
    assert answer["received"] == len(writes[1])


def test_a_request_without_body_still_sends_its_head(plain_server: str) -> None:
    writes, patch = _count_writes()
    with _endpoint(plain_server, method="GET", endpoint="models") as endpoint, patch:
        answer = endpoint.call({})
    assert answer["received"] == 0 and answer["path"].startswith("/v1/models")
    assert len(writes) == 1 and writes[0].startswith(b"GET /v1/models")


def test_a_failed_request_leaves_nothing_held(plain_server: str) -> None:
    host, port = plain_server.split("//")[1].split("/")[0].split(":")
    writes, patch = _count_writes()
    conn = session_module._AlarmedConnection(host, int(port))
    with patch, mock.patch.object(http.client.HTTPConnection, "putheader", side_effect=RuntimeError("boom")):
        with pytest.raises(RuntimeError):
            conn.request("POST", "/v1/x", body=b"{}", headers={"Content-Type": "application/json"})
    assert writes == [] and conn._apiexec_head is None and not conn._apiexec_holding
    conn.close()
    closed = session_module._AlarmedConnection(host, free_port())
    with pytest.raises(NewConnectionError):  # the one write is where the connection is made
        closed.request("POST", "/v1/x", body=b"{}", headers={"Content-Type": "application/json"})
    assert closed._apiexec_head is None and not closed._apiexec_holding
    closed.close()


def test_the_connection_is_reusable_after_one_write_requests(plain_server: str) -> None:
    host, port = plain_server.split("//")[1].split("/")[0].split(":")
    conn = session_module._AlarmedConnection(host, int(port))
    try:
        for size in (1, 100, 5000):
            conn.request("POST", "/v1/echo", body=b"y" * size, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200
            assert response.data == b'{"received": %d, "path": "/v1/echo"}' % size
    finally:
        conn.close()


class _ConnectProxy:
    """A tiny HTTP proxy that only tunnels (``CONNECT host:port``), as corporate proxies do for HTTPS."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tunnels: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(4096)
            if not data:
                client.close()
                return
            head += data
        target = head.split(b" ")[1]
        self.tunnels.append(target)
        host, port = target.decode().rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_https_through_a_connect_proxy(tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, cert = tls_server
    proxy = _ConnectProxy()
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        for name in ("NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        with _endpoint(url, verify=str(cert)) as endpoint:
            answers = [endpoint.call({"model": "m", "n": i}) for i in range(3)]
    finally:
        proxy.close()
    assert [a["path"] for a in answers] == ["/v1/chat/completions"] * 3
    assert proxy.tunnels and all(t.startswith(b"127.0.0.1:") for t in proxy.tunnels)
