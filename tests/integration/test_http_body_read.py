"""Reading a body: at once when its length is stated, in counted chunks otherwise (real sockets).

The cap (``max_body_bytes``) holds on both roads; a stated length past the cap
is refused before a byte of the body is read; a body cut short is a broken
connection, as requests reports it; the connection goes back to the pool.
"""

import gzip
import json
import time

import pytest

from apiexec import APIConnectionError, Endpoint, EndpointConfig
from apiexec.errors import ResponseTooLarge
from tests.helpers import ScriptedServer, http_response

pytestmark = pytest.mark.integration

ANSWER = {"id": "x", "choices": [{"message": {"content": "ok"}}]}


def endpoint(server, **kw):
    cfg = {"provider": "t", "endpoint": "chat", "base_url": server.url, "max_retries": 0, "timeout": 5.0}
    cfg.update(kw)
    return Endpoint(EndpointConfig(**cfg))


def keep_alive(body, headers=None):
    def script(conn, request):
        conn.sendall(http_response(200, body, {"Content-Type": "application/json", **(headers or {})}))
        return True

    return script


def test_a_stated_length_is_read_at_once_and_the_connection_reused():
    with ScriptedServer(keep_alive(json.dumps(ANSWER))) as srv, endpoint(srv) as ep:
        assert [ep.call({"n": i}) for i in range(3)] == [ANSWER] * 3
    assert len(srv._conns) == 1  # one keep-alive connection for every call


def test_a_stated_length_past_the_cap_is_refused_without_reading_it():
    def script(conn, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{")
        time.sleep(3)  # the rest never comes: reading it would hang until the read timeout

    with ScriptedServer(script) as srv, endpoint(srv, max_body_bytes=4096) as ep:
        start = time.monotonic()
        with pytest.raises(ResponseTooLarge, match="max_body_bytes=4096"):
            ep.call({})
        assert time.monotonic() - start < 2.0


def test_a_body_cut_short_of_its_length_is_a_broken_connection():
    def script(conn, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")

    with ScriptedServer(script) as srv, endpoint(srv) as ep, pytest.raises(APIConnectionError):
        ep.call({})


def test_a_compressed_body_is_counted_after_decompression():
    bomb = gzip.compress(b"[" + b"0," * 600_000 + b"0]")  # small on the wire, 1.2 MB inflated

    with ScriptedServer(keep_alive(bomb, {"Content-Encoding": "gzip"})) as srv:
        with endpoint(srv, max_body_bytes=1_000_000) as ep, pytest.raises(ResponseTooLarge):
            ep.call({})
        with endpoint(srv, max_body_bytes=2_000_000) as ep:
            assert len(ep.call({})) == 600_001


def test_a_chunked_body_past_the_cap_is_refused():
    def script(conn, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 4096
        for _ in range(10):
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.sendall(b"0\r\n\r\n")

    with ScriptedServer(script) as srv, endpoint(srv, max_body_bytes=10_000) as ep, pytest.raises(ResponseTooLarge):
        ep.call({})
