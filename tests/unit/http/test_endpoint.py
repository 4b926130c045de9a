"""Endpoint: what goes on the wire, typed errors, secrecy, and the session life-cycle."""

import io
import json
import logging
import threading
import time
from unittest.mock import Mock

import pytest
import requests
import responses

from apiexec import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Endpoint,
    EndpointConfig,
    RateLimitError,
)
from apiexec.call_context import call_context

KEY = "apiexec-test-credential-0123456789"
BASE = "https://api.example.com/v1"
URL = f"{BASE}/chat/completions"
ENV_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No proxy or CA bundle from the machine running the tests."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def make(**kw):
    base = {"provider": "test", "endpoint": "chat/completions", "base_url": BASE, "api_key": KEY, "max_retries": 0}
    base.update(kw)
    return Endpoint(EndpointConfig(**base), sleep=Mock())


def sent_json(call):
    return json.loads(call.request.body)


# -- what is sent ---------------------------------------------------------------------


@responses.activate
def test_post_sends_json_payload_and_returns_parsed_json():
    responses.post(URL, json={"id": "r1", "choices": []})
    ep = make()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert ep.call(body) == {"id": "r1", "choices": []}
    assert len(responses.calls) == 1
    request = responses.calls[0].request
    assert request.method == "POST"
    assert request.url == URL
    assert sent_json(responses.calls[0]) == body
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"


@responses.activate
def test_bearer_auth_header():
    responses.post(URL, json={})
    make().call({"a": 1})
    headers = responses.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in headers


@responses.activate
def test_x_api_key_auth_header():
    responses.post(URL, json={})
    make(auth_type="x-api-key").call({"a": 1})
    headers = responses.calls[0].request.headers
    assert headers["x-api-key"] == KEY
    assert "Authorization" not in headers


@responses.activate
@pytest.mark.parametrize("kw", [{"auth_type": "none"}, {"api_key": None}])
def test_no_auth_header(kw):
    responses.post(URL, json={})
    make(**kw).call({"a": 1})
    headers = responses.calls[0].request.headers
    assert "Authorization" not in headers
    assert "x-api-key" not in headers


@responses.activate
def test_default_and_per_call_headers_sent():
    responses.post(URL, json={})
    ep = make(default_headers={"X-Team": "core", "X-Trace": "default"})
    ep.call({"a": 1}, headers={"X-Trace": "call"})
    headers = responses.calls[0].request.headers
    assert headers["X-Team"] == "core"
    assert headers["X-Trace"] == "call"
    assert headers["Authorization"] == f"Bearer {KEY}"


@responses.activate
def test_get_sends_params_and_no_body():
    url = f"{BASE}/models"
    responses.get(url, json={"data": [1]})
    ep = make(endpoint="models", method="GET")
    assert ep.call({"limit": 5, "order": "asc"}) == {"data": [1]}
    request = responses.calls[0].request
    assert request.method == "GET"
    assert request.params == {"limit": "5", "order": "asc"}
    assert not request.body


def test_call_requests_post_uses_exact_keywords():
    ep = make()
    ep.client = Mock(spec=requests.Session)
    ep.client.request.return_value = Mock(content=b"{}", json=Mock(return_value={"ok": 1}))
    assert ep._call_requests(payload={"p": 1}, headers={"H": "v"}) == {"ok": 1}
    ep.client.request.assert_called_once_with(method="POST", url=URL, headers={"H": "v"}, json={"p": 1})


def test_call_requests_get_uses_params():
    ep = make(endpoint="models", method="GET")
    ep.client = Mock(spec=requests.Session)
    ep.client.request.return_value = Mock(content=b"{}", json=Mock(return_value={}))
    ep._call_requests(payload={"p": 1}, headers={})
    ep.client.request.assert_called_once_with(method="GET", url=f"{BASE}/models", headers={}, params={"p": 1})


@responses.activate
def test_call_does_not_mutate_request():
    responses.post(URL, json={})
    body = {"model": "m"}
    make().call(body)
    assert body == {"model": "m"}


# -- responses and typed errors --------------------------------------------------------------


@responses.activate
def test_empty_body_returns_none():
    responses.post(URL, body=b"", status=200)
    assert make().call({"a": 1}) is None


@responses.activate
def test_non_json_200_raises_api_error():
    responses.post(URL, body="<html>oops</html>", status=200, content_type="text/html")
    with pytest.raises(APIError) as info:
        make().call({"a": 1})
    assert not isinstance(info.value, APIStatusError)
    assert "not JSON" in str(info.value)
    assert info.value.url == URL


@responses.activate
def test_status_error_attributes():
    body = "E" * 5000
    responses.post(URL, body=body, status=400, headers={"x-request-id": "req_123"})
    with pytest.raises(APIStatusError) as info:
        make().call({"a": 1})
    err = info.value
    assert err.status_code == 400
    assert err.request_id == "req_123"
    assert err.retry_after is None
    assert err.body_excerpt == "E" * 300
    assert err.url == URL
    assert "400" in str(err)
    assert len(str(err)) < 500


@responses.activate
def test_anthropic_request_id_header():
    responses.post(URL, json={"error": {}}, status=404, headers={"request-id": "req_ant"})
    with pytest.raises(APIStatusError) as info:
        make().call({})
    assert info.value.request_id == "req_ant"


@responses.activate
def test_rate_limit_error_is_status_error_with_retry_after():
    responses.post(URL, json={"error": "slow down"}, status=429, headers={"retry-after": "7"})
    with pytest.raises(APIStatusError) as info:
        make().call({})
    assert isinstance(info.value, RateLimitError)
    assert info.value.status_code == 429
    assert info.value.retry_after == 7.0
    assert "slow down" in info.value.body_excerpt


@responses.activate
def test_connection_error_is_typed():
    responses.post(URL, body=requests.ConnectionError("refused"))
    with pytest.raises(APIConnectionError) as info:
        make().call({})
    assert not isinstance(info.value, APITimeoutError)
    assert isinstance(info.value.__cause__, requests.ConnectionError)


@responses.activate
@pytest.mark.parametrize("exc", [requests.ReadTimeout("read"), requests.ConnectTimeout("connect")])
def test_timeout_is_typed(exc):
    responses.post(URL, body=exc)
    with pytest.raises(APITimeoutError):
        make().call({})


class _StallingBody(io.RawIOBase):
    """A response body that gives its first bytes, then times out like a silent socket."""

    def __init__(self, first):
        self.first = first

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self.first:
            raise TimeoutError("timed out")
        data, self.first = self.first, b""
        buffer[: len(data)] = data
        return len(data)


def stalling_body():
    return io.BufferedReader(_StallingBody(b'{"partial": '))


@responses.activate
def test_body_that_stalls_after_the_headers_is_a_timeout():
    # requests reports this as a plain ConnectionError around urllib3's ReadTimeoutError.
    responses.post(URL, body=stalling_body(), content_type="application/json")
    with pytest.raises(APITimeoutError, match=r"timed out \(ReadTimeoutError\)$") as info:
        make().call({})
    assert isinstance(info.value.__cause__, requests.ConnectionError)


@responses.activate
def test_body_that_stalls_after_the_headers_is_retried():
    responses.post(URL, body=stalling_body(), content_type="application/json")
    responses.post(URL, json={"ok": True})
    with call_context() as ctx:
        assert make(max_retries=1).call({}) == {"ok": True}
    assert ctx.attempts == 2


@responses.activate
@pytest.mark.parametrize("status, kind", [(429, RateLimitError), (503, APIStatusError)])
def test_error_status_with_empty_body_has_no_excerpt(status, kind):
    responses.post(URL, body=b"", status=status)
    with pytest.raises(kind) as info:
        make().call({})
    reason = requests.status_codes._codes[status][0].replace("_", " ").title()
    assert str(info.value) == f"{URL} answered {status} {reason}"
    assert info.value.body_excerpt == ""
    assert info.value.status_code == status


@responses.activate
def test_other_request_exception_is_api_error():
    responses.post(URL, body=requests.TooManyRedirects("loop"))
    with pytest.raises(APIError) as info:
        make().call({})
    assert not isinstance(info.value, APIConnectionError)


@responses.activate
def test_observer_sees_status_and_headers():
    responses.post(URL, json={}, headers={"x-ratelimit-remaining-requests": "9"})
    seen = []
    with call_context(observer=lambda status, headers: seen.append((status, dict(headers)))) as ctx:
        make().call({})
    assert ctx.attempts == 1
    assert seen[0][0] == 200
    assert seen[0][1]["x-ratelimit-remaining-requests"] == "9"


# -- secrecy -----------------------------------------------------------------------------------


@responses.activate
def test_key_echoed_by_server_is_redacted_from_errors():
    responses.post(URL, body=f"invalid api key {KEY} given", status=401)
    with pytest.raises(APIStatusError) as info:
        make().call({})
    err = info.value
    assert KEY not in str(err)
    assert KEY not in repr(err)
    assert KEY not in err.body_excerpt
    assert KEY not in " ".join(map(str, err.args))
    assert "***" in err.body_excerpt


@responses.activate
def test_key_straddling_the_excerpt_cut_does_not_leak_a_prefix():
    responses.post(URL, body="x" * 290 + KEY + "y" * 50, status=401)
    with pytest.raises(APIStatusError) as info:
        make().call({})
    assert KEY[:10] not in info.value.body_excerpt
    assert KEY[:10] not in str(info.value)
    assert len(info.value.body_excerpt) <= 300


@responses.activate
@pytest.mark.parametrize("auth_type", ["bearer", "x-api-key"])
def test_no_secret_in_log_records(caplog, auth_type):
    caplog.set_level(logging.DEBUG)
    responses.post(URL, body=f"echo {KEY}", status=500)
    responses.post(URL, body=requests.ConnectionError(f"reset {KEY}"))
    responses.post(URL, json={"error": KEY}, status=429, headers={"retry-after": "0"})
    with pytest.raises(RateLimitError) as info:
        make(max_retries=2, auth_type=auth_type).call({"a": 1})
    assert len(responses.calls) == 3
    assert caplog.records, "retries are logged"
    for record in caplog.records:
        assert KEY not in record.getMessage()
    assert KEY not in caplog.text
    assert KEY not in str(info.value)


@responses.activate
def test_transport_error_message_has_no_secret():
    responses.post(URL, body=requests.ConnectionError(f"failed with {KEY}"))
    with pytest.raises(APIConnectionError) as info:
        make().call({})
    assert KEY not in str(info.value)


def test_endpoint_repr_has_no_secret():
    ep = make()
    assert KEY not in repr(ep)
    assert KEY not in str(ep)
    assert "closed" in repr(ep)
    with ep:
        assert "open" in repr(ep)
        assert KEY not in repr(ep)


@responses.activate
def test_x_api_key_dropped_on_redirect_to_another_host():
    responses.post(URL, status=307, headers={"Location": "https://elsewhere.example.net/collect"})
    responses.post("https://elsewhere.example.net/collect", json={"ok": True})
    assert make(auth_type="x-api-key").call({}) == {"ok": True}
    assert responses.calls[0].request.headers["x-api-key"] == KEY
    assert "x-api-key" not in responses.calls[1].request.headers


@responses.activate
def test_bearer_dropped_on_redirect_to_another_host():
    responses.post(URL, status=307, headers={"Location": "https://elsewhere.example.net/collect"})
    responses.post("https://elsewhere.example.net/collect", json={"ok": True})
    make().call({})
    assert "Authorization" not in responses.calls[1].request.headers


@responses.activate
def test_x_api_key_kept_on_same_host_redirect():
    responses.post(URL, status=307, headers={"Location": f"{BASE}/v2/chat"})
    responses.post(f"{BASE}/v2/chat", json={"ok": True})
    make(auth_type="x-api-key").call({})
    assert responses.calls[1].request.headers["x-api-key"] == KEY


# -- session life-cycle -----------------------------------------------------------------------


def test_requires_endpoint_config():
    with pytest.raises(TypeError):
        Endpoint({"provider": "x"})  # type: ignore[arg-type]


@responses.activate
def test_session_created_lazily_by_call():
    responses.post(URL, json={})
    ep = make()
    assert ep.client is None
    ep.call({})
    assert isinstance(ep.client, requests.Session)
    ep.close()
    assert ep.client is None


def test_with_block_creates_and_closes_session():
    ep = make()
    with ep as entered:
        assert entered is ep
        session = ep.client
        assert isinstance(session, requests.Session)
    assert ep.client is None


def test_session_closed_after_exception_in_block():
    ep = make()
    closed = []
    with pytest.raises(KeyError), ep:
        session = ep.client
        session.close = Mock(side_effect=lambda: closed.append(True))
        raise KeyError("boom")
    assert ep.client is None
    assert closed == [True]


def test_close_twice_is_safe():
    ep = make()
    with ep:
        pass
    ep.close()
    ep.close()
    assert ep.client is None


@responses.activate
def test_session_reused_across_calls_and_recreated_after_close():
    responses.post(URL, json={})
    ep = make()
    with ep:
        first = ep.client
        ep.call({})
        ep.call({})
        assert ep.client is first
    ep.call({})
    assert ep.client is not None and ep.client is not first
    ep.close()


def test_lazy_creation_from_many_threads_creates_one_session(monkeypatch):
    ep = make()
    created = []
    original = Endpoint._create_client

    def slow_create(self):
        created.append(1)
        time.sleep(0.01)  # widen the race window
        return original(self)

    monkeypatch.setattr(Endpoint, "_create_client", slow_create)
    n = 32
    barrier = threading.Barrier(n)
    sessions = []
    lock = threading.Lock()

    def worker():
        barrier.wait()
        session = ep._session()
        with lock:
            sessions.append(session)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert len(created) == 1
    assert len(sessions) == n
    assert all(s is sessions[0] for s in sessions)
    ep.close()


@responses.activate
def test_concurrent_calls_share_one_session(monkeypatch):
    responses.post(URL, json={"ok": True})
    ep = make()
    created = []
    original = Endpoint._create_client
    monkeypatch.setattr(Endpoint, "_create_client", lambda self: created.append(1) or original(self))
    n = 16
    barrier = threading.Barrier(n)
    results = []

    def worker():
        barrier.wait()
        results.append(ep.call({}))

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert results == [{"ok": True}] * n
    assert len(created) == 1
    assert len(responses.calls) == n
    ep.close()


# -- session configuration --------------------------------------------------------------------


def test_pool_maxsize_reaches_the_adapter():
    ep = make(pool_maxsize=7, timeout=12.5, connect_timeout=3.0)
    with ep:
        adapter = ep.client.get_adapter(URL)
        assert adapter._pool_maxsize == 7
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == 7
        assert adapter.default_timeout == (3.0, 12.5)
        assert ep.client.get_adapter("http://other.example.com/") is not None


@responses.activate
def test_adapter_applies_default_timeout():
    responses.post(URL, json={})
    ep = make(timeout=12.5, connect_timeout=3.0)
    ep.call({})
    assert responses.calls[0].request.req_kwargs["timeout"] == (3.0, 12.5)
    ep.close()


@responses.activate
def test_explicit_timeout_on_the_session_wins_over_the_default():
    responses.post(URL, json={})
    with make(timeout=12.5, connect_timeout=3.0) as ep:
        ep.client.post(URL, json={}, timeout=(0.5, 1.5))
        ep.client.post(URL, json={}, timeout=None)  # None means "not given": the default applies
    assert [c.request.req_kwargs["timeout"] for c in responses.calls] == [(0.5, 1.5), (3.0, 12.5)]


def test_proxy_from_env_resolved_at_session_creation(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    ep = make()
    with ep:
        session = ep.client
        assert session.trust_env is False
        assert session.proxies["https"] == "http://proxy.local:3128"
        # Later changes to the environment are not read per request.
        monkeypatch.setenv("HTTPS_PROXY", "http://other.local:9999")
        settings = session.merge_environment_settings(URL, {}, None, None, None)
        assert settings["proxies"]["https"] == "http://proxy.local:3128"
        assert requests.utils.select_proxy(URL, session.proxies) == "http://proxy.local:3128"


def test_no_proxy_bypasses_env_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    with make() as ep:
        assert "https" not in ep.client.proxies


def test_no_proxy_by_default():
    with make() as ep:
        assert ep.client.proxies == {}
        assert ep.client.trust_env is False


def test_verify_true_by_default():
    with make() as ep:
        assert ep.client.verify is True


@pytest.mark.parametrize("var", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_ca_bundle_from_env_honoured(monkeypatch, var):
    monkeypatch.setenv(var, "/tmp/corp-ca.pem")
    with make() as ep:
        assert ep.client.verify == "/tmp/corp-ca.pem"


def test_verify_false_and_path_from_config(monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/tmp/corp-ca.pem")
    with make(verify=False) as ep:
        assert ep.client.verify is False
    with make(verify="/tmp/own.pem") as ep:
        assert ep.client.verify == "/tmp/own.pem"
