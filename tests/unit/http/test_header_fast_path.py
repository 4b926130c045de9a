"""The no-rate-limit-header fast path answers exactly what the full parsers answer.

Corpus: every dialect's documented vectors (OpenAI, Anthropic, Groq, Cerebras,
OpenRouter, Azure ``-1``), ``retry-after``/``retry-after-ms`` forms, names in
any case, the same vectors among ordinary headers, and ordinary headers alone;
then generated header sets over the same names.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from apiexec.http.header_values import _lowered
from apiexec.http.rate_limit_headers import (
    PARSERS,
    detect_dialect,
    names_rate_limit,
    parse_rate_limit_headers,
    tag_dialect,
)
from tests.unit.http.test_dialects import CEREBRAS, GROQ
from tests.unit.http.test_dialects import NOW as DIALECT_NOW
from tests.unit.http.test_rate_limit_headers import ANTHROPIC_HEADERS, NOW, OPENAI_HEADERS

ORDINARY = {
    "Date": "Thu, 01 May 2024 12:00:00 GMT",
    "Content-Type": "application/json",
    "Content-Length": "123",
    "Connection": "keep-alive",
    "x-request-id": "req_1",
    "openai-processing-ms": "41",
    "x-groq-region": "us-west-1",
    "server": "nginx",
}
VECTORS: list[dict[str, str]] = [
    OPENAI_HEADERS,
    ANTHROPIC_HEADERS,
    GROQ,
    CEREBRAS,
    {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "19", "X-RateLimit-Reset": "1740830460000"},
    {"x-ratelimit-limit-requests": "-1", "x-ratelimit-remaining-tokens": "-1"},
    {"retry-after": "2"},
    {"Retry-After": "Thu, 01 May 2024 12:00:05 GMT"},
    {"retry-after-ms": "1500"},
    {"RETRY-AFTER-MS": "nonsense", "Retry-After": "3"},
    {k.upper(): v for k, v in OPENAI_HEADERS.items()},
    {},
    {"x-ratelimitish": "1"},  # not a rate-limit header: no dash after the prefix
]
CORPUS = [*VECTORS, *({**ORDINARY, **v} for v in VECTORS), ORDINARY]


def full_parse(headers: Any, now: float, dialect: str | None = None) -> Any:
    """The parsers without the fast path."""
    lowered = _lowered(headers)
    return PARSERS[dialect or detect_dialect(lowered)](lowered, now)


@pytest.mark.parametrize("headers", CORPUS)
@pytest.mark.parametrize("wrap", [dict, CaseInsensitiveDict])
def test_fast_path_equals_full_parsers_on_the_corpus(headers, wrap):
    for now in (NOW, DIALECT_NOW):
        assert parse_rate_limit_headers(wrap(headers), now=now) == full_parse(headers, now)


@pytest.mark.parametrize("headers", CORPUS)
@pytest.mark.parametrize("dialect", sorted(PARSERS))
def test_fast_path_equals_full_parsers_for_every_tagged_dialect(headers, dialect):
    tagged = tag_dialect(headers, dialect)
    assert parse_rate_limit_headers(tagged, now=NOW) == full_parse(headers, NOW, dialect)
    assert parse_rate_limit_headers(headers, now=NOW, provider=dialect) == full_parse(headers, NOW, dialect)


def test_ordinary_headers_take_the_fast_path_and_say_nothing():
    assert not names_rate_limit(CaseInsensitiveDict(ORDINARY))
    info = parse_rate_limit_headers(CaseInsensitiveDict(ORDINARY))
    assert info.is_empty and info.retry_after is None


def test_an_unknown_provider_still_raises_without_rate_limit_headers():
    with pytest.raises(ValueError, match="provider"):
        parse_rate_limit_headers(ORDINARY, provider="cohere")


_names = st.sampled_from(
    [*OPENAI_HEADERS, *ANTHROPIC_HEADERS, *CEREBRAS, *ORDINARY, "retry-after", "Retry-After-Ms", "X-RateLimit-Reset"]
)
_values = st.one_of(st.text(max_size=12), st.sampled_from(["1", "-1", "6m0s", "2024-05-01T12:00:30Z", "1.5"]))


@given(st.dictionaries(_names, _values, max_size=8), st.booleans())
def test_fast_path_equals_full_parsers_on_generated_headers(headers, insensitive):
    wrapped = CaseInsensitiveDict(headers) if insensitive else headers
    assert parse_rate_limit_headers(wrapped, now=NOW) == full_parse(headers, NOW)
