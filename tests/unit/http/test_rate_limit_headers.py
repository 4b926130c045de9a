"""Tests for apiexec.http.rate_limit_headers: durations, Retry-After and provider headers."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from apiexec.http.rate_limit_headers import (
    PARSERS,
    RateLimitInfo,
    parse_anthropic_headers,
    parse_duration,
    parse_openai_headers,
    parse_rate_limit_headers,
    parse_retry_after,
)

# 2024-05-01T12:00:00Z
NOW: float = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()

# As documented in OpenAI's rate-limit guide.
OPENAI_HEADERS: dict[str, str] = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}

# As documented in Anthropic's rate-limit guide.
ANTHROPIC_HEADERS: dict[str, str] = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:01Z",
    "anthropic-ratelimit-tokens-limit": "90000",
    "anthropic-ratelimit-tokens-remaining": "89000",
    "anthropic-ratelimit-tokens-reset": "2024-05-01T12:00:30Z",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "79500",
    "anthropic-ratelimit-input-tokens-reset": "2024-05-01T12:00:20Z",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "15000",
    "anthropic-ratelimit-output-tokens-reset": "2024-05-01T12:00:45Z",
    "request-id": "req_018EeWyXxfu5pfWkrYcMdjWG",
}


# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("20ms", 0.02),
        ("7.66s", 7.66),
        ("2m59.56s", 179.56),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("5ns", 5e-9),
        ("0s", 0.0),
        ("20", 20.0),
        ("0.25", 0.25),
        (" 1s ", 1.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "-1s",
        "1x",
        "1 s",
        "abc",
        "1s garbage",
        "nan",
        "inf",
        "-5",
        "1e400",
        "m1s",
    ],
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    assert parse_duration(text) is None


def test_parse_duration_rejects_non_strings() -> None:
    assert parse_duration(None) is None  # type: ignore[arg-type]
    assert parse_duration(5) is None  # type: ignore[arg-type]


@given(
    hours=st.integers(0, 99),
    minutes=st.integers(0, 59),
    millis=st.integers(0, 59_999),
)
def test_parse_duration_round_trip(hours: int, minutes: int, millis: int) -> None:
    text = f"{hours}h{minutes}m{millis / 1000}s"
    assert parse_duration(text) == pytest.approx(
        hours * 3600 + minutes * 60 + millis / 1000
    )


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_parse_duration_bare_seconds_round_trip(seconds: float) -> None:
    assert parse_duration(repr(seconds)) == seconds


@given(st.text())
def test_parse_duration_never_raises(text: str) -> None:
    result = parse_duration(text)
    assert result is None or result >= 0


# ---------------------------------------------------------------- retry-after


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "20"}, 20.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250.5", "retry-after": "1"}, 0.2505),  # ms wins
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # garbage ms skipped
        ({"retry-after": "Wed, 01 May 2024 12:00:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 01 May 2024 11:59:00 GMT"}, 0.0),  # past date
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after-ms": "-5"}, 0.0),
        ({"retry-after": "tomorrow"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    result = parse_retry_after(headers, now=NOW)
    assert result == (None if expected is None else pytest.approx(expected))


def test_parse_retry_after_defaults_to_current_time() -> None:
    result = parse_retry_after({"retry-after": "Thu, 01 Jan 2099 00:00:00 GMT"})
    assert result is not None and result > 365 * 24 * 3600


@given(st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms"]), st.text()))
def test_parse_retry_after_never_raises(headers: dict[str, str]) -> None:
    result = parse_retry_after(headers, now=NOW)
    assert result is None or result >= 0


# ---------------------------------------------------------------- OpenAI


def test_openai_documented_headers() -> None:
    info = parse_openai_headers(OPENAI_HEADERS, now=NOW)
    assert info == RateLimitInfo(
        limit_requests=60,
        remaining_requests=59,
        reset_requests=1.0,
        limit_tokens=150000,
        remaining_tokens=149984,
        reset_tokens=360.0,
    )
    assert not info.is_empty


def test_openai_headers_any_case() -> None:
    mixed = {name.title(): value for name, value in OPENAI_HEADERS.items()}
    assert "X-Ratelimit-Limit-Requests" in mixed
    expected = parse_openai_headers(OPENAI_HEADERS)
    assert parse_openai_headers(mixed) == expected
    assert parse_openai_headers(CaseInsensitiveDict(mixed)) == expected


def test_openai_429_with_retry_after() -> None:
    headers = {
        **OPENAI_HEADERS,
        "x-ratelimit-remaining-tokens": "0",
        "retry-after": "7",
    }
    info = parse_openai_headers(headers, now=NOW)
    assert info.remaining_tokens == 0
    assert info.retry_after == 7.0


def test_openai_malformed_values_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    headers = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "-1",
        "x-ratelimit-reset-requests": "whenever",
        "x-ratelimit-limit-tokens": "1.5",
        "x-ratelimit-remaining-tokens": "149984.0",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    with caplog.at_level(logging.DEBUG, logger="apiexec.http.header_values"):
        info = parse_openai_headers(headers)
    assert info == RateLimitInfo(remaining_tokens=149984, reset_tokens=360.0)
    assert "x-ratelimit-limit-requests" in caplog.text
    assert "x-ratelimit-reset-requests" in caplog.text


def test_openai_odd_header_values_are_tolerated() -> None:
    headers: dict[Any, Any] = {
        "x-ratelimit-limit-requests": b"60",
        "x-ratelimit-remaining-requests": 59,
        "x-ratelimit-limit-tokens": None,
        "x-ratelimit-remaining-tokens": ["1"],
        42: "ignored",
    }
    info = parse_openai_headers(headers)
    assert info == RateLimitInfo(limit_requests=60, remaining_requests=59)


def test_no_headers_is_empty() -> None:
    assert parse_openai_headers({}).is_empty
    assert parse_anthropic_headers({}).is_empty
    assert parse_rate_limit_headers({"content-type": "application/json"}).is_empty
    assert RateLimitInfo().is_empty
    assert not RateLimitInfo(retry_after=0.0).is_empty


def test_rate_limit_info_is_frozen() -> None:
    info = RateLimitInfo(limit_requests=1)
    with pytest.raises(AttributeError):
        info.limit_requests = 2  # type: ignore[misc]


# ---------------------------------------------------------------- Anthropic


def test_anthropic_documented_headers() -> None:
    headers = {**ANTHROPIC_HEADERS, "retry-after": "20"}
    info = parse_anthropic_headers(headers, now=NOW)
    assert info == RateLimitInfo(
        retry_after=20.0,
        limit_requests=50,
        remaining_requests=49,
        reset_requests=1.0,
        limit_tokens=90000,
        remaining_tokens=89000,
        reset_tokens=30.0,
        # Input (ITPM) and output (OTPM) limits are tracked apart (issue 12).
        limit_input_tokens=80000,
        remaining_input_tokens=79500,
        reset_input_tokens=20.0,
        limit_output_tokens=16000,
        remaining_output_tokens=15000,
        reset_output_tokens=45.0,
    )


def test_anthropic_input_output_tokens_combine_conservatively() -> None:
    headers = {
        k: v for k, v in ANTHROPIC_HEADERS.items() if "-ratelimit-tokens-" not in k
    }
    info = parse_anthropic_headers(headers, now=NOW)
    assert info.limit_tokens == 16000  # the smaller limit
    assert info.remaining_tokens == 15000  # the smaller remaining
    assert info.reset_tokens == 45.0  # the later reset


def test_anthropic_only_one_of_input_output() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-remaining": "100",
        "anthropic-ratelimit-input-tokens-reset": "2024-05-01T12:00:10Z",
        "anthropic-ratelimit-output-tokens-reset": "garbage",
    }
    info = parse_anthropic_headers(headers, now=NOW)
    assert info.remaining_tokens == 100
    assert info.reset_tokens == 10.0
    assert info.limit_tokens is None


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        ("2024-05-01T12:00:30Z", 30.0),
        ("2024-05-01T12:00:30.250Z", 30.25),
        ("2024-05-01T12:00:30.123456789Z", 30.123456789),
        ("2024-05-01T14:00:30+02:00", 30.0),
        ("2024-05-01T07:00:30-05:00", 30.0),
        ("2024-05-01t12:00:30z", 30.0),
        ("2024-05-01T12:00:30", 30.0),  # no offset: UTC
        ("2024-05-01T11:00:00Z", 0.0),  # in the past
        ("30", 30.0),  # a plain number of seconds is accepted too
    ],
)
def test_anthropic_reset_formats(reset: str, seconds: float) -> None:
    info = parse_anthropic_headers(
        {"anthropic-ratelimit-requests-reset": reset}, now=NOW
    )
    assert info.reset_requests == pytest.approx(seconds)


@pytest.mark.parametrize(
    "reset",
    ["2024-13-01T12:00:30Z", "2024-05-01", "yesterday", "2024-05-01T12:00:30+2"],
)
def test_anthropic_malformed_reset_is_skipped(reset: str) -> None:
    info = parse_anthropic_headers(
        {"anthropic-ratelimit-requests-reset": reset}, now=NOW
    )
    assert info.reset_requests is None


def test_anthropic_headers_any_case() -> None:
    upper = CaseInsensitiveDict({k.upper(): v for k, v in ANTHROPIC_HEADERS.items()})
    assert parse_anthropic_headers(upper, now=NOW) == parse_anthropic_headers(
        ANTHROPIC_HEADERS, now=NOW
    )


# ---------------------------------------------------------------- dispatch


def test_parsers_registry() -> None:
    assert sorted(PARSERS) == ["anthropic", "azure", "groq", "openai", "openrouter", "suffixed"]
    assert PARSERS["openai"](OPENAI_HEADERS, NOW) == parse_openai_headers(
        OPENAI_HEADERS
    )
    assert PARSERS["anthropic"](ANTHROPIC_HEADERS, NOW) == parse_anthropic_headers(
        ANTHROPIC_HEADERS, now=NOW
    )


def test_auto_detects_provider() -> None:
    assert parse_rate_limit_headers(OPENAI_HEADERS, now=NOW).reset_tokens == 360.0
    assert parse_rate_limit_headers(ANTHROPIC_HEADERS, now=NOW).reset_tokens == 30.0
    mixed = CaseInsensitiveDict({"Anthropic-RateLimit-Requests-Limit": "50"})
    assert parse_rate_limit_headers(mixed).limit_requests == 50


def test_explicit_provider() -> None:
    # Told it is OpenAI, Anthropic headers mean nothing.
    assert parse_rate_limit_headers(ANTHROPIC_HEADERS, provider="openai").is_empty
    info = parse_rate_limit_headers(ANTHROPIC_HEADERS, now=NOW, provider="Anthropic")
    assert info.limit_requests == 50


def test_unknown_provider_raises() -> None:
    with pytest.raises(ValueError, match="provider"):
        parse_rate_limit_headers({}, provider="cohere")


_header_names = st.sampled_from(
    [
        *OPENAI_HEADERS,
        *ANTHROPIC_HEADERS,
        "retry-after",
        "retry-after-ms",
        "X-RateLimit-Reset-Tokens",
    ]
)


@given(st.dictionaries(_header_names, st.text(max_size=40)))
def test_parse_rate_limit_headers_never_raises(headers: dict[str, str]) -> None:
    info = parse_rate_limit_headers(headers, now=NOW)
    for value in (info.retry_after, info.reset_requests, info.reset_tokens):
        assert value is None or value >= 0
    for count in (info.limit_requests, info.remaining_requests, info.limit_tokens):
        assert count is None or count >= 0
