"""The mock server's HTTP plumbing: one handler per TCP connection, and the socket server.

HTTP/1.1 with keep-alive; request bodies by ``Content-Length`` or chunked; answers
with ``Content-Length`` or, for server-sent events, chunked. The server tracks open
connections so that ``stop()`` can close them.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast
from urllib.parse import urlsplit

from apiexec.mock.api import MockAPI
from apiexec.mock.stats import StatsRecorder
from apiexec.mock.wire import Reply, Request, error_reply

logger = logging.getLogger(__name__)

REQUEST_QUEUE_SIZE: Final = 256
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_IDLE_TIMEOUT_S: Final = 120.0  # an idle keep-alive connection is closed after this

class _BadBody(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    """One TCP connection: reads requests, asks the API, writes the replies."""

    protocol_version = "HTTP/1.1"
    server_version = "apiexec-mock/1"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = _IDLE_TIMEOUT_S

    def version_string(self) -> str:
        return self.server_version

    def _httpd(self) -> HTTPServer:
        return cast(HTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        self._httpd().connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._httpd().connection_closed(self.connection)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - overrides the base signature
        logger.debug("%s - " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        httpd = self._httpd()
        url = urlsplit(self.path)
        body, reply = self._receive(httpd.api, url.path, url.query)
        httpd.stats.request_started(url.path, body)
        self._deliver(reply, httpd)

    def _receive(self, api: MockAPI, path: str, query: str) -> tuple[bytes, Reply]:
        try:
            body = self._read_body()
        except _BadBody as exc:
            reply = error_reply(exc.status, str(exc))
            reply.close = True  # the rest of the stream cannot be trusted
            return b"", reply
        headers = {key.lower(): value for key, value in self.headers.items()}
        return body, api.respond(Request(self.command, path, headers, body, query))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadBody(400, "invalid Content-Length") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise _BadBody(413, f"body must be at most {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadBody(400, "invalid chunked body") from None
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadBody(413, f"body must be at most {MAX_BODY_BYTES} bytes")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are ignored
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _deliver(self, reply: Reply, httpd: HTTPServer) -> None:
        """Wait out the latency, then answer or drop."""
        if reply.delay_s > 0 and httpd.stopping.wait(reply.delay_s):
            reply.drop = True  # the server is stopping: do not answer late
        # Counted before the client can see the outcome, so stats read right
        # after a response (or a dropped connection) already include it.
        httpd.stats.request_finished(None if reply.drop else reply.status)
        if reply.drop:
            self._drop()
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
        if reply.events is None:
            self._write_body(reply.body, reply.cut_after)
        else:
            self._write_chunked(reply.events, reply.cut_after)
        if reply.cut_after is not None:
            self.wfile.flush()
            self._drop()  # the answer stops here, as when a proxy or the provider cuts it

    def _write_body(self, body: bytes, cut_after: int | None) -> None:
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut_after is None else body[: len(body) // 2])

    def _write_chunked(self, events: Sequence[bytes], cut_after: int | None) -> None:
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events if cut_after is None else events[:cut_after]:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        if cut_after is None:
            self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


class HTTPServer(ThreadingHTTPServer):
    """The socket server; tracks open connections so stop() can close them."""

    daemon_threads = True
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(
        self, address: tuple[str, int], *, api: MockAPI, stats: StatsRecorder, stopping: threading.Event
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api = api
        self.stats = stats
        self.stopping = stopping
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._closing = False
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("mock server: connection %s failed", client_address, exc_info=True)

    def connection_opened(self, sock: socket.socket) -> None:
        with self._open_lock:
            closing = self._closing
            if not closing:
                self._open.add(sock)
        if closing:
            _shutdown_socket(sock)
        else:
            self.stats.connection_opened()

    def connection_closed(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(sock)

    def close_connections(self) -> None:
        with self._open_lock:
            self._closing = True
            socks, self._open = self._open, set()
        for sock in socks:
            _shutdown_socket(sock)


def _shutdown_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer or by its handler


