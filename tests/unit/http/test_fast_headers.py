"""Response headers without the email package: the same message as http.client's parse_headers."""

import http.client
import io
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiexec.http import fast_headers
from apiexec.http.fast_headers import FastHeadersResponse, PlainMessage, parse_headers

pytestmark = pytest.mark.timeout(60)

NAMES = st.sampled_from(["Content-Type", "content-length", "X-Request-Id", "Set-Cookie", "From", "A", "x_y", ""])
#: Values with the characters that decide the road: folding, CR, splitlines breaks, Latin-1, spaces.
VALUE = st.text(alphabet=st.sampled_from(list("ab 1;=\t:") + ["\r", "\x0b", "\x0c", "\x1c", "\x85", "é", "\x00"]), max_size=12)


@st.composite
def header_blocks(draw):
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["plain", "plain", "plain", "folded", "no colon", "from", "bare"]))
        name, value, space = draw(NAMES), draw(VALUE), draw(st.sampled_from(["", " ", "  ", "\t"]))
        eol = draw(st.sampled_from(["\r\n", "\n"]))
        line = {
            "plain": f"{name}:{space}{value}",
            "folded": f" {value}",
            "no colon": f"{name} {value}",
            "from": f"From {value}",
            "bare": value,
        }[kind]
        lines.append(line + eol)
    lines.append(draw(st.sampled_from(["\r\n", "\n", ""])))
    return "".join(lines).encode("latin-1")


def _or_error(read):
    try:
        return read()
    except Exception as exc:  # (as_string refuses some values: both must refuse them alike)
        return type(exc), str(exc)


def described(message):
    names = [name for name, _ in message._headers] + ["X-Missing"]
    return (
        message.items(),
        [message.get(name) for name in names],
        [message.get(name.upper(), "fail") for name in names],
        [message[name.lower()] for name in names],
        message.keys(),
        message.values(),
        _or_error(message.as_string),
        message.get_all("set-cookie"),
        [type(d) for d in message.defects],
        message.get_payload(),
        message.get_unixfrom(),
    )


@settings(max_examples=600, deadline=None)
@given(header_blocks())
def test_the_same_message_as_http_client_for_any_block(block):
    ours = parse_headers(io.BytesIO(block))
    theirs = http.client.parse_headers(io.BytesIO(block))
    assert described(ours) == described(theirs)
    # The plain-line message only skips the policy call on reads; anything else is http.client's own class.
    assert isinstance(ours, http.client.HTTPMessage)
    assert type(ours) in (type(theirs), PlainMessage)


@pytest.mark.parametrize(
    "block",
    [
        # MDN's example response headers (developer.mozilla.org/en-US/docs/Web/HTTP/Headers), in order.
        b"Access-Control-Allow-Origin: *\r\nConnection: Keep-Alive\r\nContent-Encoding: gzip\r\n"
        b"Content-Type: text/html; charset=utf-8\r\nDate: Mon, 18 Jul 2016 16:06:00 GMT\r\n"
        b'Etag: "c561c68d0ba92bbeb8b0f612a9199f722e3a621a"\r\nKeep-Alive: timeout=5, max=997\r\n'
        b"Last-Modified: Mon, 18 Jul 2016 02:36:04 GMT\r\nServer: Apache\r\nSet-Cookie: mykey=myvalue; "
        b"expires=Mon, 17-Jul-2017 16:06:00 GMT; Max-Age=31449600; Path=/; secure\r\n"
        b"Transfer-Encoding: chunked\r\nVary: Cookie, Accept-Encoding\r\nX-Frame-Options: DENY\r\n\r\n",
        b"X-Folded: one\r\n two\r\n\r\n",  # obsolete folding: the email parser's road
        b"Bad line\r\nX: 1\r\n\r\n",  # no colon: a defect, kept as http.client has it
        b"X: 1\r\n",  # the connection closed before the blank line
        b"\r\n",  # no headers at all
    ],
)
def test_documented_and_broken_blocks_match_http_client(block):
    assert described(parse_headers(io.BytesIO(block))) == described(http.client.parse_headers(io.BytesIO(block)))


def test_http_clients_limits_still_hold():
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        parse_headers(io.BytesIO(b"X: 1\r\n" * 101 + b"\r\n"))
    with pytest.raises(http.client.LineTooLong):
        parse_headers(io.BytesIO(b"X: " + b"a" * 70000 + b"\r\n\r\n"))


def test_the_response_class_reads_status_and_headers_with_the_fast_parser(monkeypatch):
    """A real socket answer: status, 100 Continue skipped, headers, body, keep-alive."""
    assert fast_headers._BEGIN is not None  # CPython's begin still calls parse_headers
    calls = []
    real = fast_headers.parse_headers
    monkeypatch.setitem(fast_headers._BEGIN.__globals__, "parse_headers", lambda fp: calls.append(1) or real(fp))
    server, client = socket.socketpair()
    with server, client:
        server.sendall(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Request-Id: r1\r\n\r\n{}"
        )
        response = FastHeadersResponse(client, method="POST")
        response.begin()
        assert (response.status, response.reason, response.version) == (201, "Created", 11)
        assert response.getheader("x-request-id") == "r1" and response.read() == b"{}"
        assert not response.will_close
    assert calls == [1]


def test_an_endpoint_session_reads_answers_through_it():
    """The endpoint's connections build their responses with the fast class."""
    from apiexec.http.presets import preset_config
    from apiexec.http.session import create_session

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\nX-A: 1\r\n\r\n{\"a\":1}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = preset_config("openai-compatible", base_url=f"http://127.0.0.1:{port}/v1", api_key="k")
    with create_session(config) as session, listener:
        response = session.get(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        assert isinstance(response.raw._original_response, FastHeadersResponse)
        assert response.json() == {"a": 1} and response.headers["x-a"] == "1"
    thread.join(10)


def test_requests_own_response_class_is_untouched():
    """Nothing outside the endpoint's connections changes."""
    assert http.client.HTTPConnection.response_class is http.client.HTTPResponse
    assert http.client.parse_headers is not parse_headers
    assert http.client.HTTPResponse.begin is not FastHeadersResponse.begin


def test_items_of_a_plain_message_are_a_copy():
    message = parse_headers(io.BytesIO(b"A: 1\r\nB: 2\r\n\r\n"))
    items = message.items()
    items.append(("C", "3"))
    assert message.items() == [("A", "1"), ("B", "2")] and message.get("c") is None
