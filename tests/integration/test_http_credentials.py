"""Credential hygiene over loopback: redirects to another origin, servers that echo, urllib3's debug log (issue 12)."""

from __future__ import annotations

import json
import logging

import pytest

from apiexec import APIStatusError, ConfigError, Endpoint, EndpointConfig, Secret
from tests.helpers import ScriptedServer, http_response

pytestmark = pytest.mark.integration

KEY = "apiexec-test-credential-0123456789"
GOOG = "AIza-apiexec-test-goog-key-98765"
QUERY = "apiexec-test-query-key-55555"
SECRETS = (KEY, GOOG, QUERY)
OK = http_response(200, b'{"ok": true}', {"Content-Type": "application/json"})


def endpoint(server, path="chat/completions", **kw):
    fields = {
        "provider": "test",
        "endpoint": f"{path}?key={QUERY}&alt=json",
        "base_url": f"{server.url}/v1",
        "api_key": KEY,
        "default_headers": {"x-goog-api-key": GOOG, "X-Title": "apiexec tests"},
        "max_retries": 0,
    }
    fields.update(kw)
    return Endpoint(EndpointConfig(**fields))


def leaked(text):
    return [s for s in SECRETS if s in text]


def test_every_credential_reaches_the_server_it_was_configured_for():
    with ScriptedServer(lambda conn, req: conn.sendall(OK)) as srv, endpoint(srv) as ep:
        assert ep.call({"a": 1}) == {"ok": True}
    request = srv.requests[0]
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert request["headers"]["x-goog-api-key"] == GOOG
    assert f"key={QUERY}" in request["path"] and "alt=json" in request["path"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_port_strips_every_credential(status):
    with ScriptedServer(lambda conn, req: conn.sendall(OK)) as other:
        target = f"{other.url}/v1/chat/completions?key={QUERY}&alt=json"
        moved = http_response(status, b"", {"Location": target}, "Moved")
        with ScriptedServer(lambda conn, req: conn.sendall(moved)) as first, endpoint(first) as ep:
            assert ep.call({"a": 1}) == {"ok": True}
    arrived = other.requests[0]
    assert leaked(arrived["raw_head"].decode("latin-1")) == []
    assert "alt=json" in arrived["path"]  # only the credential parameter was dropped
    assert arrived["headers"]["x-title"] == "apiexec tests"


def test_redirect_within_the_origin_keeps_the_credentials():
    answers = [http_response(307, b"", {"Location": "/v2/chat/completions"}, "Moved"), OK]

    def script(conn, req):
        conn.sendall(answers.pop(0))
        return True

    with ScriptedServer(script) as srv, endpoint(srv) as ep:
        assert ep.call({"a": 1}) == {"ok": True}
    assert srv.requests[1]["headers"]["x-goog-api-key"] == GOOG
    assert srv.requests[1]["headers"]["authorization"] == f"Bearer {KEY}"


def test_a_server_echoing_the_request_never_puts_a_credential_in_the_error():
    def echo(conn, req):
        body = json.dumps({"error": {"message": "bad request", "echo": req["raw_head"].decode("latin-1")}})
        conn.sendall(http_response(400, body, {"Content-Type": "application/json"}, "Bad Request"))

    with ScriptedServer(echo) as srv, endpoint(srv) as ep:
        with pytest.raises(APIStatusError) as info:
            ep.call({"a": 1})
        assert leaked(repr(ep)) == []
    error = info.value
    assert "bad request" in str(error)
    for text in (str(error), repr(error), error.body_excerpt, error.url or ""):
        assert leaked(text) == []


def test_urllib3_debug_log_never_shows_a_credential(caplog):
    with caplog.at_level(logging.DEBUG):
        with ScriptedServer(lambda conn, req: conn.sendall(OK)) as srv, endpoint(srv) as ep:
            ep.call({"a": 1})
    assert any("urllib3" in r.name for r in caplog.records)  # it did log the request line
    assert "key=***" in caplog.text
    assert leaked(caplog.text) == []


def test_config_and_endpoint_reprs_hide_every_credential():
    with ScriptedServer(lambda conn, req: conn.sendall(OK)) as srv, endpoint(srv) as ep:
        for text in (repr(ep.config), str(ep.config), repr(ep), ep.config.full_url, repr(ep.config.default_headers)):
            assert leaked(text) == []
        assert isinstance(ep.config.default_headers["x-goog-api-key"], Secret)
        assert ep.config.query_secrets == (("key", Secret(QUERY)),)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("api_key", "sk-\u2014copy-pasted-dash"),
        ("api_key", "sk-ok\r\nX-Injected: 1"),
        ("default_headers", {"api-key": "k\u00e9y\u2603"}),
        ("endpoint", "models?key=AIza\u2603"),
    ],
)
def test_unsendable_keys_are_refused_at_config_time_without_echoing_them(field, value):
    fields = {"provider": "t", "endpoint": "chat", "base_url": "http://127.0.0.1:1/v1", field: value}
    with pytest.raises(ConfigError) as info:
        EndpointConfig(**fields)
    assert info.value.field == field
    secret = value if isinstance(value, str) else next(iter(value.values()))
    assert secret not in str(info.value)
    assert "\u2603" not in str(info.value) and "\u2014" not in str(info.value)


def test_a_rejected_base_url_never_echoes_its_query():
    with pytest.raises(ConfigError) as info:
        EndpointConfig(provider="t", endpoint="chat", base_url=f"ftp://host/v1?key={QUERY}")
    assert QUERY not in str(info.value)
    with pytest.raises(ConfigError) as info:
        EndpointConfig(provider="t", endpoint="chat", base_url=f"https://host/v1?key={QUERY}")
    assert QUERY not in str(info.value)


def test_a_transport_failure_traceback_never_shows_a_query_key():
    """requests' and urllib3's messages quote the URL; the whole chain printed must not show the key."""
    import socket
    import traceback

    from apiexec import APIConnectionError

    with socket.socket() as probe:  # a port that refuses connections
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = EndpointConfig(provider="t", endpoint=f"chat?key={QUERY}", base_url=f"http://127.0.0.1:{port}/v1",
                            max_retries=0)
    with Endpoint(config) as ep, pytest.raises(APIConnectionError) as info:
        ep.call({"a": 1})
    printed = "".join(traceback.format_exception(info.value))
    assert "Max retries exceeded" in printed or "refused" in printed.lower()  # the chain is there
    assert QUERY not in printed
