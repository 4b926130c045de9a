"""Credentials are Secrets wherever configured; redaction; the log filter; redirects leaving the origin."""

import logging
import pickle

import pytest
import requests

from apiexec import ConfigError, EndpointConfig, Secret
from apiexec.http.cache import cache_key
from apiexec.http.credentials import ACTIVE_SECRETS, RedactingFilter, check_sendable, redact
from apiexec.http.session import CredentialSession, _origin, _without_credential_params

KEY = "apiexec-test-credential-0123456789"


def config(**kw):
    fields = {"provider": "t", "endpoint": "chat/completions", "base_url": "https://api.example.com/v1"}
    fields.update(kw)
    return EndpointConfig(**fields)


def test_credential_headers_become_secrets_others_stay_text():
    cfg = config(default_headers={"X-Goog-Api-Key": KEY, "X-Title": "app", "X-Custom": Secret("s3")})
    assert isinstance(cfg.default_headers["X-Goog-Api-Key"], Secret)
    assert cfg.default_headers["X-Title"] == "app"
    assert cfg.request_headers() == {"X-Goog-Api-Key": KEY, "X-Title": "app", "X-Custom": "s3"}
    assert {"x-goog-api-key", "x-custom", "authorization"} <= cfg.secret_header_names()
    assert KEY not in repr(cfg) and "s3" not in repr(cfg)


def test_query_keys_are_secrets_kept_out_of_the_url_shown():
    cfg = config(endpoint=f"models/m:generateContent?alt=sse&key={KEY}")
    assert cfg.endpoint == "models/m:generateContent?alt=sse"
    assert KEY not in cfg.full_url and KEY not in repr(cfg)
    assert cfg.request_url() == f"https://api.example.com/v1/models/m:generateContent?alt=sse&key={KEY}"
    assert cache_key("POST", cfg.full_url, {}) == cache_key("POST", config(endpoint="models/m:generateContent?alt=sse").full_url, {})
    again = cfg.with_changes(timeout=5)  # the secret survives a copy
    assert again.request_url() == cfg.request_url()
    rekeyed = cfg.with_changes(endpoint="models/m:generateContent?key=NEWKEY")
    assert rekeyed.query_secrets == (("key", Secret("NEWKEY")),)


def test_api_key_header_for_azure():
    assert config(api_key=KEY, auth_type="api-key").auth_headers() == {"api-key": KEY}


def test_secret_cannot_be_pickled_and_config_secrets_lists_every_credential():
    with pytest.raises(TypeError):
        pickle.dumps(Secret(KEY))
    cfg = config(api_key="k1", default_headers={"api-key": "k2"}, endpoint="x?key=k3")
    assert sorted(cfg.secrets()) == ["k1", "k2", "k3"]
    assert cfg.redact("k1 k2 k3 fine") == "*** *** *** fine"


@pytest.mark.parametrize("value", ["a\u2014b", "a\nb", "a\rb", "a\0b", "a b"])
def test_unsendable_secret_is_refused_naming_the_position_only(value):
    with pytest.raises(ConfigError) as info:
        check_sendable("api_key", value, secret=True)
    assert "position 1" in str(info.value)
    assert value not in str(info.value)


def test_redact_masks_known_secrets_query_keys_and_bearer_tokens():
    text = f"GET /v1?key=AIzaXYZ&alt=json Authorization: Bearer abcdefghijklmnop {KEY}"
    assert redact(text, [KEY]) == "GET /v1?key=***&alt=json Authorization: Bearer *** ***"


def test_log_filter_redacts_formatted_records():
    ACTIVE_SECRETS.add([KEY])
    try:
        record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1,
                                   '%s "%s %s"', ("http://h:80", "POST", f"/v1/x?api_key={KEY}"), None)
        assert RedactingFilter().filter(record)
        assert KEY not in record.getMessage()
        assert "api_key=***" in record.getMessage()
    finally:
        ACTIVE_SECRETS.remove([KEY])


@pytest.mark.parametrize(
    ("old", "new", "strip"),
    [
        ("https://a.example/v1/x", "https://a.example/v2/y", False),
        ("https://a.example/v1/x", "https://a.example:443/v2", False),
        ("https://a.example/v1/x", "https://b.example/v1/x", True),
        ("https://a.example/v1/x", "https://a.example:8443/v1/x", True),
        ("https://a.example/v1/x", "http://a.example/v1/x", True),
        ("http://a.example/v1/x", "https://a.example/v1/x", True),  # requests would keep Authorization here
    ],
)
def test_redirects_leaving_the_origin_drop_every_credential(old, new, strip):
    session = CredentialSession(frozenset({"authorization", "x-goog-api-key"}))
    previous = requests.Request("POST", old).prepare()
    response = requests.Response()
    response.request = previous
    prepared = requests.Request(
        "POST", f"{new}?key=abc&alt=json", headers={"Authorization": "Bearer t", "X-Goog-Api-Key": "g", "X-Title": "a"}
    ).prepare()
    session.rebuild_auth(prepared, response)
    kept = {"Authorization", "X-Goog-Api-Key"} <= set(prepared.headers)
    assert kept is not strip
    assert ("key=abc" in prepared.url) is not strip
    assert prepared.headers["X-Title"] == "a" and "alt=json" in prepared.url


def test_origin_and_query_helpers():
    assert _origin("https://H.example/x") == ("https", "h.example", 443)
    assert _without_credential_params("https://h/x?token=1&b=2&API_KEY=3") == "https://h/x?b=2"
