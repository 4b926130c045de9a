"""One parser per rate-limit header dialect, with the providers' documented examples.

Sources:
- OpenAI: https://platform.openai.com/docs/guides/rate-limits (rate limits in headers)
- Anthropic: https://docs.anthropic.com/en/api/rate-limits (response headers)
- Groq: https://console.groq.com/docs/rate-limits (requests headers are RPD)
- OpenRouter: https://openrouter.ai/docs/api-reference/limits (X-RateLimit-Reset in epoch ms)
- Cerebras: https://inference-docs.cerebras.ai/support/rate-limits (-day / -minute suffixes)
- Azure OpenAI sends -1 for "not reported" (../shared/provider-facts.md)
"""

from datetime import datetime, timezone

import pytest

from apiexec.http.rate_limit_headers import (
    PARSERS,
    detect_dialect,
    parse_groq_headers,
    parse_openai_headers,
    parse_openrouter_headers,
    parse_rate_limit_headers,
    parse_suffixed_headers,
    tag_dialect,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
GROQ = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-limit-tokens": "18000",
    "x-ratelimit-remaining-requests": "14370",
    "x-ratelimit-remaining-tokens": "17997",
    "x-ratelimit-reset-requests": "2m59.56s",
    "x-ratelimit-reset-tokens": "7.66s",
}
CEREBRAS = {
    "x-ratelimit-limit-requests-day": "1000000000",
    "x-ratelimit-limit-tokens-minute": "1000000000",
    "x-ratelimit-remaining-requests-day": "999997455",
    "x-ratelimit-remaining-tokens-minute": "999998298",
    "x-ratelimit-reset-requests-day": "33011.382867097855",
    "x-ratelimit-reset-tokens-minute": "11.382867097854614",
}


def test_groq_requests_are_per_day_never_per_minute():
    info = parse_groq_headers(GROQ)
    assert (info.limit_requests, info.remaining_requests, info.reset_requests) == (None, None, None)
    assert (info.limit_requests_day, info.remaining_requests_day) == (14400, 14370)
    assert info.reset_requests_day == pytest.approx(179.56)
    assert (info.limit_tokens, info.remaining_tokens, info.reset_tokens) == (18000, 17997, pytest.approx(7.66))


def test_the_same_headers_read_as_openai_are_per_minute():
    assert parse_openai_headers(GROQ).limit_requests == 14400


def test_suffixed_headers_go_to_their_window():
    info = parse_suffixed_headers(CEREBRAS)
    assert info.limit_requests is None
    assert info.limit_requests_day == 1_000_000_000
    assert info.remaining_requests_day == 999_997_455
    assert info.reset_requests_day == pytest.approx(33011.382867097855)
    assert (info.limit_tokens, info.remaining_tokens) == (1_000_000_000, 999_998_298)
    assert info.reset_tokens == pytest.approx(11.382867097854614)
    assert info.limit_tokens_day is None


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        (str(int(NOW * 1000) + 30_000), 30.0),  # epoch milliseconds (OpenRouter)
        (str(int(NOW) + 45), 45.0),  # epoch seconds
        ("12", 12.0),  # seconds from now
        (str(int(NOW * 1000) - 5_000), 0.0),  # already past
    ],
)
def test_openrouter_reset_forms(reset, seconds):
    info = parse_openrouter_headers(
        {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, NOW
    )
    assert (info.limit_requests, info.remaining_requests) == (20, 0)
    assert info.reset_requests == pytest.approx(seconds)


def test_azure_minus_one_means_not_reported():
    info = parse_openai_headers({"x-ratelimit-remaining-requests": "-1", "x-ratelimit-remaining-tokens": "79820"})
    assert info.remaining_requests is None
    assert info.remaining_tokens == 79820
    assert PARSERS["azure"] is parse_openai_headers


@pytest.mark.parametrize(
    ("headers", "dialect"),
    [
        ({"anthropic-ratelimit-requests-limit": "50"}, "anthropic"),
        ({"x-ratelimit-limit-requests-day": "1"}, "suffixed"),
        ({"X-RateLimit-Limit": "20"}, "openrouter"),
        ({"x-groq-region": "us-west-1", "x-ratelimit-limit-requests": "1"}, "groq"),
        ({"x-ratelimit-limit-requests": "60"}, "openai"),
        ({}, "openai"),
    ],
)
def test_dialect_detection(headers, dialect):
    assert detect_dialect({k.lower(): v for k, v in headers.items()}) == dialect


def test_tagged_headers_carry_their_dialect_to_any_parser():
    tagged = tag_dialect(GROQ, "groq")
    assert parse_rate_limit_headers(tagged).limit_requests_day == 14400
    assert parse_rate_limit_headers(tag_dialect(GROQ, "auto")).limit_requests == 14400  # no tag: detected
    assert parse_rate_limit_headers(tagged, provider="openai").limit_requests == 14400  # explicit wins


def test_retry_after_is_read_in_every_dialect():
    for name, parser in PARSERS.items():
        assert parser({"retry-after-ms": "1500", "retry-after": "9"}, NOW).retry_after == 1.5, name


def test_tagged_headers_stay_case_insensitive_for_other_observers():
    tagged = tag_dialect({"X-Request-Id": "req_1", "Retry-After": "2"}, "openai")
    assert tagged["x-request-id"] == tagged["X-REQUEST-ID"] == "req_1"
    assert "retry-after" in tagged


def test_a_config_named_groq_reads_groq_headers_without_a_preset():
    from apiexec import EndpointConfig

    cfg = EndpointConfig(provider="groq", endpoint="chat/completions", base_url="https://api.groq.com/openai/v1")
    assert cfg.header_dialect == "groq"
    assert EndpointConfig(provider="mine", endpoint="x", base_url="http://h").header_dialect == "auto"
    assert EndpointConfig(provider="groq", endpoint="x", base_url="http://h", rate_limit_dialect="openai").header_dialect == "openai"
