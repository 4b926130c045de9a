"""The adapter's hooks (``build_response``, ``cert_verify``): what requests would give, at less cost.

Every case compares with requests itself: the same failure raised through
``HTTPAdapter.send`` (urllib3 made to raise it) and through ours must come out
as the same requests exception; the same answer must give equal responses.
"""

from __future__ import annotations

import http.server
import pickle
import threading
from collections.abc import Iterator
from unittest import mock

import pytest
import requests
import responses
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as u3

from apiexec.http.config import EndpointConfig
from apiexec.http.session import PooledAdapter, create_session


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Handler.seen.append((self.path, dict(self.headers.items()), body))
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Many", "a")
        self.send_header("X-Many", "b")
        if self.path.endswith("/cookie"):
            self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _session(base_url: str) -> requests.Session:
    return create_session(EndpointConfig(provider="t", endpoint="chat", base_url=base_url))


def _both(session: requests.Session, url: str) -> tuple[requests.Response, requests.Response]:
    """The same POST through our hooks and through requests' own ``build_response`` / ``cert_verify``."""
    ours = session.post(url, json={"a": 1})
    with (
        mock.patch.object(PooledAdapter, "build_response", HTTPAdapter.build_response),
        mock.patch.object(PooledAdapter, "cert_verify", HTTPAdapter.cert_verify),
    ):
        theirs = session.post(url, json={"a": 1})
    return ours, theirs


def test_direct_response_equals_requests_response(server: str) -> None:
    session = _session(server)
    try:
        ours, theirs = _both(session, server + "/chat")
    finally:
        session.close()
    assert (ours.status_code, ours.reason, ours.url, ours.encoding) == (
        theirs.status_code,
        theirs.reason,
        theirs.url,
        theirs.encoding,
    )
    assert ours.json() == theirs.json() == {"ok": True}
    assert ours.headers == theirs.headers
    assert list(ours.headers.items()) == list(theirs.headers.items())  # names as sent, not lower-cased
    assert ours.headers["x-many"] == theirs.headers["X-Many"] == "a, b"  # repeated fields joined, as requests
    assert ours.request.url == server + "/chat" and ours.connection is session.get_adapter(server)
    wire_ours, wire_theirs = _Handler.seen
    assert wire_ours[0] == wire_theirs[0] and wire_ours[2] == wire_theirs[2]
    assert {k.lower() for k in wire_ours[1]} == {k.lower() for k in wire_theirs[1]}


def test_the_response_has_every_field_of_requests_own_and_pickles_alike(server: str) -> None:
    session = _session(server)
    try:
        ours, theirs = _both(session, server + "/chat")
    finally:
        session.close()
    assert type(ours) is not requests.Response and isinstance(ours, requests.Response)
    fields = requests.Response.__attrs__ + ["_content_consumed", "_next", "request", "history", "elapsed"]
    assert all(hasattr(ours, name) for name in fields)
    assert (ours.history, ours._next, type(ours.cookies), len(ours.cookies)) == ([], None, type(theirs.cookies), 0)
    ours.cookies.set("k", "v")  # the jar made on first use is kept
    assert ours.cookies.get("k") == "v"
    ours.cookies = requests.cookies.cookiejar_from_dict({"other": "1"})
    assert dict(ours.cookies) == {"other": "1"}
    pickled = pickle.dumps(ours)
    assert b"apiexec.http" not in pickled  # loads where requests alone is installed
    again = pickle.loads(pickled)
    assert type(again) is requests.Response
    assert (again.status_code, again.headers, again.json(), dict(again.cookies)) == (
        ours.status_code, ours.headers, ours.json(), {"other": "1"},
    )  # fmt: skip
    assert again.elapsed == ours.elapsed and again.url == theirs.url


def test_cookies_set_by_the_server_reach_the_jar(server: str) -> None:
    session = _session(server)
    try:
        plain = session.post(server + "/chat", json={})
        assert len(plain.cookies) == 0 and not session.cookies
        answer = session.post(server + "/cookie", json={})
    finally:
        session.close()
    assert answer.cookies.get("session") == "abc"
    assert session.cookies.get("session") == "abc"


def test_tls_settings_checked_once_per_pool(server: str) -> None:
    session = _session(server)
    adapter = session.get_adapter(server)
    try:
        with mock.patch.object(HTTPAdapter, "cert_verify", autospec=True, side_effect=HTTPAdapter.cert_verify) as spy:
            for _ in range(5):
                session.post(server + "/chat", json={})
        assert spy.call_count == 1
        assert isinstance(adapter, PooledAdapter)
    finally:
        session.close()


def test_a_patched_adapter_send_is_honoured(server: str) -> None:
    """``responses`` patches ``HTTPAdapter.send``: its answers, not the network's."""
    session = _session(server)
    try:
        with responses.RequestsMock() as mocked:
            mocked.add(responses.POST, server + "/chat", json={"from": "responses"})
            assert session.post(server + "/chat", json={}).json() == {"from": "responses"}
    finally:
        session.close()
    assert _Handler.seen == []


def test_refused_connection_is_connection_error_as_requests_raises_it() -> None:
    probe = requests.Session()
    url = "http://127.0.0.1:9/v1/chat"  # discard port: nothing listens
    with pytest.raises(requests.ConnectionError) as theirs:
        probe.post(url, json={})
    session = _session("http://127.0.0.1:9/v1")
    try:
        with pytest.raises(requests.ConnectionError) as ours:
            session.post(url, json={})
    finally:
        session.close()
        probe.close()
    assert type(ours.value) is type(theirs.value)
    assert isinstance(ours.value.args[0], u3.MaxRetryError)
    assert ours.value.request is not None


_CONNECT_TIMEOUT = u3.ConnectTimeoutError(None, "connect timed out")
_NEW_CONNECTION = u3.NewConnectionError(None, "refused")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (u3.ProtocolError("reset"), requests.ConnectionError),
        (ConnectionResetError("reset"), requests.ConnectionError),
        (u3.MaxRetryError(None, "/v1", _CONNECT_TIMEOUT), requests.ConnectTimeout),
        (u3.MaxRetryError(None, "/v1", _NEW_CONNECTION), requests.ConnectionError),
        (u3.MaxRetryError(None, "/v1", u3.ResponseError("too many 500s")), requests.exceptions.RetryError),
        (u3.MaxRetryError(None, "/v1", u3.ProxyError("proxy", OSError())), requests.exceptions.ProxyError),
        (u3.MaxRetryError(None, "/v1", u3.SSLError("bad cert")), requests.exceptions.SSLError),
        (u3.ClosedPoolError(None, "closed"), requests.ConnectionError),
        (u3.ProxyError("proxy", OSError()), requests.exceptions.ProxyError),
        (u3.SSLError("bad cert"), requests.exceptions.SSLError),
        (u3.ReadTimeoutError(None, "/v1", "read timed out"), requests.ReadTimeout),
        (u3.InvalidHeader("bad"), requests.exceptions.InvalidHeader),
    ],
)
def test_urllib3_errors_map_as_requests_maps_them(raised: BaseException, expected: type) -> None:
    """Each failure, raised by urllib3 under requests' adapter and under ours, gives the same class."""
    prepared = requests.Request("POST", "http://127.0.0.1:9/v1/chat", json={}).prepare()

    def boom(*args: object, **kwargs: object) -> None:
        raise raised

    plain = HTTPAdapter(max_retries=0)
    with mock.patch("urllib3.connectionpool.HTTPConnectionPool.urlopen", boom):
        with pytest.raises(expected) as theirs:
            plain.send(prepared, timeout=(1.0, 1.0))
        with pytest.raises(expected) as ours:
            PooledAdapter((1.0, 1.0), pool_maxsize=1).send(prepared, timeout=(1.0, 1.0))
    assert type(ours.value) is type(theirs.value)
    assert ours.value.args[0] is raised
