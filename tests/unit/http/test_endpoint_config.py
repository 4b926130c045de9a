"""EndpointConfig: validation (errors name the field), immutability, keys, secrecy."""

import copy
import dataclasses
import math
import pickle

import pytest

from apiexec import ConfigError, EndpointConfig, Secret
from apiexec.http.config import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT

KEY = "apiexec-test-credential-0123456789"


def make(**kw):
    base = {"provider": "test", "endpoint": "chat/completions", "base_url": "https://api.example.com/v1"}
    base.update(kw)
    return EndpointConfig(**base)


# -- valid values -------------------------------------------------------------------


def test_defaults():
    cfg = make()
    assert cfg.method == "POST"
    assert cfg.transport_type == "http"
    assert cfg.timeout == DEFAULT_TIMEOUT
    assert cfg.max_retries == DEFAULT_MAX_RETRIES
    assert cfg.auth_type == "bearer"
    assert cfg.api_key is None
    assert cfg.verify is True
    assert dict(cfg.default_headers) == {}


@pytest.mark.parametrize(
    ("base_url", "endpoint", "expected"),
    [
        ("https://api.example.com/v1", "chat/completions", "https://api.example.com/v1/chat/completions"),
        ("https://api.example.com/v1/", "chat/completions", "https://api.example.com/v1/chat/completions"),
        ("https://api.example.com/v1/", "/chat/completions", "https://api.example.com/v1/chat/completions"),
        ("http://127.0.0.1:8000", "v1/models", "http://127.0.0.1:8000/v1/models"),
        ("http://[::1]:8080/api", "x", "http://[::1]:8080/api/x"),
    ],
)
def test_full_url_joins_with_one_slash(base_url, endpoint, expected):
    assert make(base_url=base_url, endpoint=endpoint).full_url == expected


def test_method_is_normalised_to_upper_case():
    assert make(method="get").method == "GET"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_known_methods_accepted(method):
    assert make(method=method).method == method


def test_zero_retries_is_valid():
    assert make(max_retries=0).max_retries == 0


def test_zero_cache_size_is_valid():
    assert make(cache_size=0).cache_size == 0


@pytest.mark.parametrize("verify", [True, False, "/etc/ssl/certs/ca.pem"])
def test_verify_values_accepted(verify):
    assert make(verify=verify).verify == verify


# -- invalid values: ValueError naming the field --------------------------------------

BAD_VALUES = [
    ("provider", ""),
    ("provider", "   "),
    ("provider", None),
    ("provider", 3),
    ("endpoint", ""),
    ("endpoint", None),
    ("base_url", ""),
    ("base_url", None),
    ("base_url", "api.example.com/v1"),
    ("base_url", "ftp://api.example.com"),
    ("base_url", "https://"),
    ("base_url", "http:///path-only"),
    ("base_url", "http://[::1"),
    ("base_url", "http://host:notaport/v1"),
    ("base_url", "https://api.example.com/v1?key=abc"),
    ("base_url", "https://api.example.com/v1#frag"),
    ("method", "FETCH"),
    ("method", ""),
    ("method", None),
    ("method", ["POST"]),
    ("transport_type", "grpc"),
    ("transport_type", None),
    ("auth_type", "basic"),
    ("auth_type", None),
    ("auth_type", ["bearer"]),
    ("timeout", 0),
    ("timeout", -1.0),
    ("timeout", math.nan),
    ("timeout", math.inf),
    ("timeout", "10"),
    ("timeout", True),
    ("timeout", None),
    ("connect_timeout", 0),
    ("backoff_base", 0),
    ("backoff_max", -1),
    ("retry_after_cap", 0),
    ("max_retries", -1),
    ("max_retries", 1.5),
    ("max_retries", "3"),
    ("max_retries", True),
    ("max_retries", None),
    ("pool_maxsize", 0),
    ("pool_maxsize", 2.0),
    ("cache_size", -1),
    ("cache_ttl", 0),
    ("default_headers", {"X-Num": 1}),
    ("default_headers", [("a", "b")]),
    ("default_headers", None),
    ("api_key", ""),
    ("api_key", "   "),
    ("api_key", 12345),
    ("api_key", "sk-with\nnewline"),
    ("api_key_env", ""),
    ("api_key_env", 5),
    ("verify", None),
    ("verify", 0),
    ("verify", ""),
    # Absurd values are refused at config time (issue 12), not at the first call.
    ("timeout", 1e30),
    ("connect_timeout", 1e9),
    ("total_timeout", 0),
    ("total_timeout", 1e30),
    ("backoff_max", 1e12),
    ("retry_after_cap", math.inf),
    ("max_retries", 10**9),
    ("pool_maxsize", 10**8),
    ("cache_size", 10**12),
    ("cache_ttl", 1e30),
    ("max_body_bytes", 0),
    ("max_body_bytes", 10**15),
    ("max_body_bytes", 1.5),
    ("rate_limit_dialect", "klingon"),
    ("query_secrets", (("key", "plain-text"),)),
    ("api_key", "sk-\u2014dash"),
    ("default_headers", {"x-goog-api-key": "AIza\u2014"}),
    ("default_headers", {"X-Title": "a\r\nInjected: 1"}),
    ("endpoint", "   "),
    ("provider", ""),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_invalid_value_raises_value_error_naming_field(field, value):
    with pytest.raises(ValueError) as info:
        make(**{field: value})
    assert isinstance(info.value, ConfigError)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_every_validated_field_is_covered():
    fields = {f.name for f in dataclasses.fields(EndpointConfig)}
    assert {name for name, _ in BAD_VALUES} == fields


def test_base_url_with_credentials_rejected_without_echoing_them():
    with pytest.raises(ConfigError) as info:
        make(base_url="https://user:hunter2@api.example.com/v1")
    assert info.value.field == "base_url"
    assert "hunter2" not in str(info.value)


def test_bad_api_key_message_does_not_echo_it():
    with pytest.raises(ConfigError) as info:
        make(api_key="sk-abc\r\nX-Injected: 1")
    assert "sk-abc" not in str(info.value)


def test_with_changes_validates():
    cfg = make()
    with pytest.raises(ConfigError) as info:
        cfg.with_changes(timeout=0)
    assert info.value.field == "timeout"
    assert cfg.with_changes(timeout=5).timeout == 5
    assert cfg.timeout == DEFAULT_TIMEOUT


# -- immutability -----------------------------------------------------------------------


def test_fields_cannot_be_assigned():
    cfg = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timeout = 1  # type: ignore[misc]


def test_default_headers_cannot_be_mutated():
    source = {"X-Team": "a"}
    cfg = make(default_headers=source)
    source["X-Team"] = "b"
    assert cfg.default_headers["X-Team"] == "a"
    with pytest.raises(TypeError):
        cfg.default_headers["X-Team"] = "c"  # type: ignore[index]
    assert cfg.default_headers == {"X-Team": "a"}


def test_config_is_hashable_and_comparable():
    assert make(api_key=KEY) == make(api_key=KEY)
    assert hash(make(api_key=KEY)) == hash(make(api_key=KEY))
    assert make(api_key=KEY) != make(api_key=KEY + "x")


def test_config_deepcopies():
    cfg = make(api_key=KEY, default_headers={"X-A": "1"})
    clone = copy.deepcopy(cfg)
    assert clone == cfg
    assert clone.auth_headers() == cfg.auth_headers()


# -- api key ------------------------------------------------------------------------------


def test_api_key_given_directly_is_wrapped_in_secret():
    cfg = make(api_key=f"  {KEY}  ")
    assert isinstance(cfg.api_key, Secret)
    assert cfg.api_key.reveal() == KEY


def test_api_key_read_from_env_var(monkeypatch):
    monkeypatch.setenv("APIEXEC_TEST_KEY", KEY)
    cfg = make(api_key_env="APIEXEC_TEST_KEY")
    assert cfg.api_key.reveal() == KEY
    assert cfg.auth_headers() == {"Authorization": f"Bearer {KEY}"}


def test_api_key_read_once_at_construction(monkeypatch):
    monkeypatch.setenv("APIEXEC_TEST_KEY", KEY)
    cfg = make(api_key_env="APIEXEC_TEST_KEY")
    monkeypatch.setenv("APIEXEC_TEST_KEY", "sk-other")
    assert cfg.api_key.reveal() == KEY


@pytest.mark.parametrize("value", [None, ""])
def test_missing_env_var_is_an_error_naming_the_variable(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("APIEXEC_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("APIEXEC_TEST_KEY", value)
    with pytest.raises(ConfigError) as info:
        make(api_key_env="APIEXEC_TEST_KEY")
    assert info.value.field == "api_key_env"
    assert "APIEXEC_TEST_KEY" in str(info.value)


def test_direct_key_wins_over_env_var(monkeypatch):
    monkeypatch.delenv("APIEXEC_TEST_KEY", raising=False)
    cfg = make(api_key=KEY, api_key_env="APIEXEC_TEST_KEY")
    assert cfg.api_key.reveal() == KEY


def test_with_changes_of_api_key_env_reads_the_new_variable(monkeypatch):
    monkeypatch.setenv("APIEXEC_KEY_A", "sk-aaa")
    monkeypatch.setenv("APIEXEC_KEY_B", "sk-bbb")
    cfg = make(api_key_env="APIEXEC_KEY_A")
    assert cfg.with_changes(api_key_env="APIEXEC_KEY_B").api_key.reveal() == "sk-bbb"


def test_with_changes_keeps_resolved_key(monkeypatch):
    monkeypatch.setenv("APIEXEC_TEST_KEY", KEY)
    cfg = make(api_key_env="APIEXEC_TEST_KEY")
    monkeypatch.delenv("APIEXEC_TEST_KEY")
    assert cfg.with_changes(timeout=3).api_key.reveal() == KEY


# -- auth headers --------------------------------------------------------------------------


def test_auth_headers_bearer():
    assert make(api_key=KEY).auth_headers() == {"Authorization": f"Bearer {KEY}"}


def test_auth_headers_x_api_key():
    assert make(api_key=KEY, auth_type="x-api-key").auth_headers() == {"x-api-key": KEY}


def test_auth_headers_none_type_sends_nothing():
    assert make(api_key=KEY, auth_type="none").auth_headers() == {}


def test_auth_headers_without_key_sends_nothing():
    assert make().auth_headers() == {}


def test_secret_instance_accepted_as_key():
    assert make(api_key=Secret(KEY)).auth_headers() == {"Authorization": f"Bearer {KEY}"}


# -- secrecy -------------------------------------------------------------------------------


def test_repr_and_str_never_show_the_key(monkeypatch):
    monkeypatch.setenv("APIEXEC_TEST_KEY", KEY)
    for cfg in (
        make(api_key=KEY),
        make(api_key_env="APIEXEC_TEST_KEY"),
        make(api_key=KEY, auth_type="x-api-key"),
    ):
        assert KEY not in repr(cfg)
        assert KEY not in str(cfg)
        assert KEY not in f"{cfg!r} {cfg} {cfg.api_key} {cfg.api_key!r}"
        assert "provider='test'" in repr(cfg)


def test_custom_auth_header_value_not_in_repr():
    cfg = make(default_headers={"api-key": KEY})
    assert KEY not in repr(cfg)
    assert KEY not in repr(cfg.default_headers)
    # A credential header is kept as a Secret (issue 12): revealed only to send it.
    assert cfg.default_headers["api-key"].reveal() == KEY


def test_secret_repr_str_and_reveal():
    secret = Secret(KEY)
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"
    assert KEY not in f"{secret}"
    assert secret.reveal() == KEY
    assert secret == Secret(KEY)
    assert copy.copy(secret) is secret


def test_secret_cannot_be_pickled():
    with pytest.raises(TypeError):
        pickle.dumps(Secret(KEY))
