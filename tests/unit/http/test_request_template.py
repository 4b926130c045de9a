"""The hot path: a prepared template per endpoint, and tenacity only after a first failure.

Every request the template builds must equal what ``session.request`` would
have built (headers, URL with query credentials, body); redirects still drop
credentials across origins; whatever makes the template inexact (cookies, a
wrapped session) takes requests' own path.
"""

import json
import logging
import pickle
from unittest.mock import Mock

import pytest
import requests
import responses

from apiexec import APIStatusError, Endpoint, EndpointConfig
from apiexec.call_context import call_context
from apiexec.http import endpoint as endpoint_module
from apiexec.http.request_template import RequestHeaders, RequestTemplate, encode_json
from apiexec.http.session import CredentialSession, create_session

KEY = "apiexec-template-credential-0123456789"
BASE = "https://api.example.com/v1"
URL = f"{BASE}/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hï"}], "n": 1.5}


def config(**kw):
    base = {"provider": "test", "endpoint": "chat/completions", "base_url": BASE, "api_key": KEY, "max_retries": 0}
    base.update(kw)
    return EndpointConfig(**base)


def make(**kw):
    return Endpoint(config(**kw), sleep=Mock())


def reference(session, cfg, headers, payload):
    """What requests' full path prepares for the same call."""
    return session.prepare_request(requests.Request(cfg.method, cfg.request_url(), headers=headers, json=payload))


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"auth_type": "x-api-key", "default_headers": {"anthropic-version": "2023-06-01"}},
        {"endpoint": "models/gemini:generateContent?key=" + KEY, "api_key": None},
    ],
)
def test_template_request_equals_what_requests_prepares(kw):
    cfg = config(**kw)
    session = create_session(cfg)
    try:
        headers = {"Content-Type": "application/json", **cfg.request_headers()}
        template = RequestTemplate.for_session(session, cfg.method, cfg.request_url(), headers)
        assert template is not None
        ours = template.prepare(headers, encode_json(BODY))
        theirs = reference(session, cfg, headers, BODY)
        assert ours.method == theirs.method == "POST"
        assert ours.url == theirs.url
        assert ours.body == theirs.body
        assert list(ours.headers.items()) == list(theirs.headers.items())
    finally:
        session.close()


def test_request_headers_read_as_requests_own_dict():
    pairs = [("Content-Type", "application/json"), ("X-Api-Key", "k"), ("accept", "*/*")]
    ours, theirs = RequestHeaders(pairs), requests.structures.CaseInsensitiveDict(pairs)
    assert list(ours) == list(theirs) and list(ours.items()) == list(theirs.items())
    assert ours == theirs and len(ours.items()) == 3
    assert [(pair in ours.items()) for pair in (("X-API-KEY", "k"), ("x-api-key", "no"))] == [
        (pair in theirs.items()) for pair in (("X-API-KEY", "k"), ("x-api-key", "no"))
    ]
    assert ("X-Api-Key", "k") in ours.items() and ours.items() & {("accept", "*/*")} == {("accept", "*/*")}
    copied = ours.copy()
    copied["x-api-key"] = "other"
    del copied["ACCEPT"]
    assert type(copied) is RequestHeaders and ours["x-api-key"] == "k" and "accept" in ours
    assert list(copied.items()) == [("Content-Type", "application/json"), ("x-api-key", "other")]
    pickled = pickle.dumps(ours)
    assert b"apiexec" not in pickled and type(pickle.loads(pickled)) is requests.structures.CaseInsensitiveDict
    assert list(pickle.loads(pickled).items()) == pairs


def test_per_call_headers_override_remove_and_are_checked():
    cfg = config(default_headers={"X-Team": "core"})
    session = create_session(cfg)
    try:
        base = {"Content-Type": "application/json", **cfg.request_headers()}
        template = RequestTemplate.for_session(session, "POST", cfg.request_url(), base)
        extra = {**base, "x-team": "edge", "Accept": None, "X-New": "1"}
        ours = template.prepare(extra, b"{}")
        theirs = session.prepare_request(requests.Request("POST", cfg.request_url(), headers=extra, data=b"{}"))
        assert dict(ours.headers) == dict(theirs.headers)
        assert "Accept" not in ours.headers and ours.headers["X-Team"] == "edge"
        with pytest.raises(requests.exceptions.InvalidHeader):
            template.prepare({"X-Bad": "a\r\nInjected: 1"}, b"{}")
    finally:
        session.close()


def test_each_call_gets_its_own_headers_and_body():
    session = create_session(config())
    try:
        template = RequestTemplate.for_session(session, "POST", URL, {"Authorization": "Bearer k"})
        first = template.prepare(template.base_headers, b"{}")
        second = template.prepare(template.base_headers, b'{"long": "body"}')
        assert first.headers is not second.headers
        assert (first.headers["Content-Length"], second.headers["Content-Length"]) == ("2", "16")
        assert first.body == b"{}"
    finally:
        session.close()


def test_no_template_for_a_foreign_session_or_get():
    assert RequestTemplate.for_session(requests.Session(), "POST", URL, {}) is None
    session = create_session(config())
    try:
        assert RequestTemplate.for_session(session, "GET", URL, {}) is None
    finally:
        session.close()


@responses.activate
def test_calls_take_the_template_not_session_request(monkeypatch):
    responses.post(URL, json={"ok": 1})
    spy = Mock(side_effect=AssertionError("session.request on the hot path"))
    monkeypatch.setattr(CredentialSession, "request", spy)
    ep = make()
    with ep:
        assert ep.call(BODY) == {"ok": 1}
        assert ep.call(BODY, headers={"X-Call": "1"}) == {"ok": 1}
    sent = responses.calls[1].request
    assert json.loads(sent.body) == BODY
    assert sent.headers["Authorization"] == f"Bearer {KEY}" and sent.headers["X-Call"] == "1"
    assert spy.call_count == 0


@responses.activate
def test_a_wrapped_session_is_honoured():
    responses.post(URL, json={"ok": 1})
    ep = make()
    with ep:
        session = ep._session()
        seen = []
        original = session.request

        def recording(*args, **kwargs):
            seen.append(kwargs["url"])
            return original(*args, **kwargs)

        session.request = recording
        ep.call(BODY)
    assert seen == [URL]


@responses.activate
def test_cookies_a_server_sets_are_sent_back_as_requests_would():
    responses.post(URL, json={}, headers={"Set-Cookie": "affinity=node-7; Path=/"})
    ep = make()
    with ep:
        ep.call(BODY)
        assert ep.client.cookies.get("affinity") == "node-7"
        ep.call(BODY)
    assert "Cookie" not in responses.calls[0].request.headers
    assert responses.calls[1].request.headers["Cookie"] == "affinity=node-7"


@responses.activate
@pytest.mark.parametrize(("target", "kept"), [(f"{BASE}/moved", True), ("https://elsewhere.example/v1/x", False)])
def test_redirects_keep_credentials_only_within_the_origin(target, kept):
    bare = target.split("?")[0]
    responses.post(URL, status=307, headers={"Location": f"{target}?alt=json"})
    responses.post(bare, json={"ok": 1})
    ep = make(default_headers={"x-goog-api-key": KEY})
    with ep:
        assert ep.call(BODY) == {"ok": 1}
    followed = responses.calls[1].request
    assert json.loads(followed.body) == BODY  # 307 keeps method and body
    assert ("Authorization" in followed.headers) is kept
    assert ("x-goog-api-key" in followed.headers) is kept


@responses.activate
def test_a_location_header_outside_a_redirect_status_is_not_followed():
    responses.post(URL, status=201, json={"id": "x"}, headers={"Location": f"{BASE}/things/x"})
    with make() as ep:
        assert ep.call(BODY) == {"id": "x"}
    assert len(responses.calls) == 1


@responses.activate
def test_redirect_drops_query_credentials_across_origins():
    responses.post(f"{BASE}/models/g:generateContent", status=308, headers={"Location": "https://other.example/g"})
    responses.post("https://other.example/g", json={"ok": 1})
    ep = make(endpoint=f"models/g:generateContent?key={KEY}", api_key=None)
    with ep:
        assert ep.call(BODY) == {"ok": 1}
    assert KEY in responses.calls[0].request.url
    assert KEY not in responses.calls[1].request.url


@responses.activate
def test_nan_is_refused_as_requests_refuses_it():
    responses.post(URL, json={})
    ep = make()
    with ep, pytest.raises(Exception) as fast:
        ep.call({"x": float("nan")})
    slow = make()
    slow._template_for = lambda session: None  # requests' own path
    with slow, pytest.raises(Exception) as full:
        slow.call({"x": float("nan")})
    assert type(fast.value) is type(full.value)
    assert len(responses.calls) == 0


# -- tenacity only after a first retryable failure ------------------------------------


def forbid_policy(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tenacity entered")

    monkeypatch.setattr(endpoint_module, "retry_policy", refuse)


@responses.activate
def test_a_first_success_never_builds_a_retry_policy(monkeypatch):
    forbid_policy(monkeypatch)
    responses.post(URL, json={"ok": 1})
    ep = make(max_retries=3)
    with call_context() as ctx:
        assert ep.call(BODY) == {"ok": 1}
    assert ctx.attempts == 1


@responses.activate
def test_a_non_retryable_first_failure_never_builds_a_retry_policy(monkeypatch):
    forbid_policy(monkeypatch)
    responses.post(URL, status=400, json={"error": {"message": "bad"}})
    with call_context() as ctx, pytest.raises(APIStatusError):
        make(max_retries=3).call(BODY)
    assert ctx.attempts == 1 and len(responses.calls) == 1


@responses.activate
def test_the_policy_takes_over_after_a_retryable_failure(caplog):
    for status in (500, 503):
        responses.post(URL, status=status, json={"error": {"message": "busy"}})
    responses.post(URL, json={"ok": 1})
    waits = []
    ep = Endpoint(config(max_retries=3, backoff_base=0.25), sleep=waits.append)
    with caplog.at_level(logging.INFO, logger="apiexec.http.retry"), call_context() as ctx:
        assert ep.call(BODY) == {"ok": 1}
    assert ctx.attempts == 3 and len(responses.calls) == 3
    assert len(waits) == 2 and all(0 <= w <= 0.25 * 2**i for i, w in enumerate(waits, 1))
    logged = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in logged] == ["attempt 1 failed", "attempt 2 failed"]


@responses.activate
def test_attempts_stop_at_max_retries_plus_one():
    responses.post(URL, status=500, json={"error": {"message": "down"}})
    waits = []
    ep = Endpoint(config(max_retries=2), sleep=waits.append)
    with call_context() as ctx, pytest.raises(APIStatusError):
        ep.call(BODY)
    assert ctx.attempts == 3 and len(waits) == 2


@responses.activate
def test_retries_still_pass_the_limiter_gate():
    responses.post(URL, status=429, json={"error": {"message": "slow down"}})
    responses.post(URL, json={"ok": 1})
    gate = Mock(return_value=True)
    ep = Endpoint(config(max_retries=1), sleep=Mock())
    with call_context(retry_gate=gate):
        assert ep.call(BODY) == {"ok": 1}
    assert gate.call_count == 1


# -- the adapter remembers each URL's pool and request target ------------------------


def prepared(url):
    return requests.Request("POST", url, json={}).prepare()


def test_adapter_remembers_the_pool_per_url_until_closed():
    session = create_session(config())
    try:
        adapter = session.get_adapter(URL)
        request = prepared(URL)
        pool = adapter.get_connection_with_tls_context(request, True, proxies={}, cert=None)
        assert adapter.get_connection_with_tls_context(request, True, proxies={}, cert=None) is pool
        fresh = requests.adapters.HTTPAdapter.get_connection_with_tls_context(adapter, request, True, proxies={})
        assert fresh is pool  # the very pool requests' own lookup finds
        adapter.close()  # the pool manager lets its pools go: so do we
        assert adapter._pools == {}
        again = adapter.get_connection_with_tls_context(request, True, proxies={}, cert=None)
        assert again is not pool and again.pool is not None
        other = adapter.get_connection_with_tls_context(request, "/tmp/ca.pem", proxies={}, cert=None)
        assert other is not again  # other TLS settings: another pool
    finally:
        session.close()


def test_adapter_with_a_proxy_takes_requests_own_lookup():
    session = create_session(config())
    try:
        adapter = session.get_adapter(URL)
        proxies = {"https": "http://proxy.example:3128"}
        pool = adapter.get_connection_with_tls_context(prepared(URL), True, proxies=proxies)
        assert adapter._pools == {}
        plain = "http://api.example.com/v1/chat"
        assert adapter.request_url(prepared(plain), {"http": "http://proxy.example:3128"}) == plain  # absolute form
        assert adapter._targets == {}
        assert pool is not None
    finally:
        session.close()


@pytest.mark.parametrize(
    "url", [URL, f"{URL}?key=a%20b&alt=json", "https://api.example.com//double/slash", "http://h:8080/"]
)
def test_adapter_request_target_equals_requests(url):
    session = create_session(config())
    try:
        adapter = session.get_adapter(url)
        expected = requests.adapters.HTTPAdapter.request_url(adapter, prepared(url), {})
        assert adapter.request_url(prepared(url), {}) == expected
        assert adapter.request_url(prepared(url), {}) == expected  # remembered
    finally:
        session.close()
