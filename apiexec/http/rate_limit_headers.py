"""Rate-limit information from response headers, one parser per dialect.

Providers report their limits, what is left of them and when they reset in
response headers, and say how long to back off in ``Retry-After``. This module
turns those headers into one provider-neutral value, :class:`RateLimitInfo`.
The dialects (sources in ``tests/unit/http/test_rate_limit_headers.py``):

========== ============================================= ==========================
dialect    headers                                       notes
========== ============================================= ==========================
openai     ``x-ratelimit-{limit,remaining,reset}-         resets are Go durations
           {requests,tokens}``                           (``6m0s``, ``12ms``)
azure      as openai                                     ``-1`` means "not reported"
anthropic  ``anthropic-ratelimit-{requests,tokens,        resets are RFC 3339; input
           input-tokens,output-tokens}-{limit,           and output tokens kept apart
           remaining,reset}``
groq       as openai                                     the requests headers are
                                                         per DAY (RPD)
openrouter ``X-RateLimit-{Limit,Remaining,Reset}``       requests; reset is epoch ms
suffixed   ``x-ratelimit-{limit,remaining,reset}-         the suffix names the window
           {requests,tokens}-{minute,day}``              (Cerebras)
========== ============================================= ==========================

Per-minute numbers go to the plain fields (``limit_requests``...), per-day ones
to the ``*_day`` fields, so that a daily quota is never read as a per-minute
one. :func:`parse_rate_limit_headers` picks the dialect from
``headers.rate_limit_dialect`` (set by the endpoint from its preset, see
:func:`tag_dialect`) or detects it from the header names.

Parsing never raises on a malformed value: the value is skipped (and logged
at debug level). Header names are matched case-insensitively, so a plain dict
works as well as ``requests``' ``CaseInsensitiveDict``.

Example:
    >>> info = parse_rate_limit_headers({
    ...     "x-ratelimit-remaining-requests": "59",
    ...     "x-ratelimit-reset-tokens": "6m0s",
    ... })
    >>> info.remaining_requests, info.reset_tokens
    (59, 360.0)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, TypeAlias

from requests.structures import CaseInsensitiveDict

from apiexec.http.header_values import (
    _finite_seconds,
    _lowered,
    _parse_count,
    _parse_lowered_retry_after,
    _parse_reset_duration,
    _parse_reset_timestamp,
    _seconds_until,
    parse_duration,
    parse_retry_after,
)

__all__ = [
    "PARSERS",
    "RateLimitInfo",
    "detect_dialect",
    "names_rate_limit",
    "parse_anthropic_headers",
    "parse_duration",
    "parse_groq_headers",
    "parse_openai_headers",
    "parse_openrouter_headers",
    "parse_rate_limit_headers",
    "parse_retry_after",
    "parse_suffixed_headers",
    "tag_dialect",
]

logger = logging.getLogger(__name__)

OPENAI_PREFIX: Final[str] = "x-ratelimit-"
ANTHROPIC_PREFIX: Final[str] = "anthropic-ratelimit-"


@dataclass(frozen=True, kw_only=True)
class RateLimitInfo:
    """What a response says about the caller's rate limits.

    Every field is None when the response did not say (or said nonsense).
    Resets are seconds from when the response was parsed.

    Attributes:
        retry_after: Seconds to wait before retrying (``Retry-After``).
        limit_requests: Requests allowed per window (per minute).
        remaining_requests: Requests left in the current window.
        reset_requests: Seconds until the request limit is fully replenished.
        limit_tokens: Tokens allowed per window (per minute; for Anthropic
            without a combined limit, the tighter of input and output).
        remaining_tokens: Tokens left in the current window.
        reset_tokens: Seconds until the token limit is fully replenished.
        limit_input_tokens, remaining_input_tokens, reset_input_tokens:
            Anthropic's input-token limit (ITPM), apart.
        limit_output_tokens, remaining_output_tokens, reset_output_tokens:
            Anthropic's output-token limit (OTPM), apart.
        limit_requests_day, remaining_requests_day, reset_requests_day:
            A per-day request quota (Groq RPD, ``-day`` headers).
        limit_tokens_day, remaining_tokens_day, reset_tokens_day:
            A per-day token quota (``-day`` headers).

    Example:
        >>> RateLimitInfo(remaining_tokens=0, reset_tokens=1.5).is_empty
        False
    """

    retry_after: float | None = None
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    limit_input_tokens: int | None = None
    remaining_input_tokens: int | None = None
    reset_input_tokens: float | None = None
    limit_output_tokens: int | None = None
    remaining_output_tokens: int | None = None
    reset_output_tokens: float | None = None
    limit_requests_day: int | None = None
    remaining_requests_day: int | None = None
    reset_requests_day: float | None = None
    limit_tokens_day: int | None = None
    remaining_tokens_day: int | None = None
    reset_tokens_day: float | None = None

    @property
    def is_empty(self) -> bool:
        """True if the headers carried no rate-limit information at all."""
        if self is _EMPTY:
            return True
        return all(getattr(self, f.name) is None for f in fields(self))


#: What headers without any rate-limit header say (one shared instance).
_EMPTY: Final = RateLimitInfo()


HeaderParser: TypeAlias = Callable[[Mapping[str, str], float | None], RateLimitInfo]
"""Parses headers, given ``now`` (epoch seconds, None = current time)."""


# ---------------------------------------------------------------- dialects


def _triple(
    headers: Mapping[str, str], names: tuple[str, str, str], reset: Callable[..., float | None], now: float | None
) -> tuple[int | None, int | None, float | None]:
    """(limit, remaining, reset) read from three header names."""
    limit, remaining, reset_name = names
    return (
        _parse_count(headers, limit),
        _parse_count(headers, remaining),
        reset(headers, reset_name, now),
    )


def _duration_reset(headers: Mapping[str, str], name: str, now: float | None) -> float | None:
    return _parse_reset_duration(headers, name)


def _openai_triples(headers: Mapping[str, str], kind: str, suffix: str = "") -> tuple[Any, Any, Any]:
    names = tuple(f"{OPENAI_PREFIX}{part}-{kind}{suffix}" for part in ("limit", "remaining", "reset"))
    return _triple(headers, names, _duration_reset, None)  # type: ignore[arg-type]


def parse_openai_headers(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo:
    """OpenAI (and Azure OpenAI): ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.

    Resets are durations such as "1s" or "6m0s" (see :func:`parse_duration`);
    ``-1`` (Azure: not reported) is absent.

    Args:
        headers: Response headers, any Mapping; names match in any case.
        now: Current epoch time for an HTTP-date ``retry-after``.

    Returns:
        The information found; fields absent or malformed are None.
    """
    headers = _lowered(headers)
    requests, tokens = _openai_triples(headers, "requests"), _openai_triples(headers, "tokens")
    return RateLimitInfo(
        retry_after=_parse_lowered_retry_after(headers, now),
        limit_requests=requests[0],
        remaining_requests=requests[1],
        reset_requests=requests[2],
        limit_tokens=tokens[0],
        remaining_tokens=tokens[1],
        reset_tokens=tokens[2],
    )


def parse_groq_headers(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo:
    """Groq: OpenAI's names, but the ``requests`` headers count per DAY (RPD).

    Tokens are per minute. The request numbers go to the ``*_day`` fields.
    """
    info = parse_openai_headers(headers, now)
    return replace(
        info,
        limit_requests=None,
        remaining_requests=None,
        reset_requests=None,
        limit_requests_day=info.limit_requests,
        remaining_requests_day=info.remaining_requests,
        reset_requests_day=info.reset_requests,
    )


def parse_suffixed_headers(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}-{minute,day}`` (Cerebras).

    Resets are seconds ("33011.38") or durations.
    """
    headers = _lowered(headers)
    fields: dict[str, Any] = {}
    for kind in ("requests", "tokens"):
        for suffix, tail in (("-minute", ""), ("-day", "_day")):
            limit, remaining, reset = _openai_triples(headers, kind, suffix)
            fields.update(
                {f"limit_{kind}{tail}": limit, f"remaining_{kind}{tail}": remaining, f"reset_{kind}{tail}": reset}
            )
    return RateLimitInfo(retry_after=_parse_lowered_retry_after(headers, now), **fields)


#: Values at least this large are epoch milliseconds (2001-09-09 in ms), and
#: at least this large epoch seconds (also 2001); smaller ones are durations.
_EPOCH_MS_FLOOR: Final = 1e12
_EPOCH_S_FLOOR: Final = 1e9


def parse_openrouter_headers(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo:
    """OpenRouter: ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (Unix epoch in ms).

    The numbers count requests; the window is not stated, the reset is exact.
    """
    headers = _lowered(headers)
    reset = None
    text = headers.get("x-ratelimit-reset")
    if text is not None:
        value = _finite_seconds(text)
        if value is None:
            logger.debug("ignoring malformed x-ratelimit-reset: %r", text)
        elif value >= _EPOCH_MS_FLOOR:
            reset = _seconds_until(value / 1000.0, now)
        elif value >= _EPOCH_S_FLOOR:  # servers of the same shape that send epoch seconds
            reset = _seconds_until(value, now)
        else:  # or seconds from now (Together)
            reset = value
    return RateLimitInfo(
        retry_after=_parse_lowered_retry_after(headers, now),
        limit_requests=_parse_count(headers, "x-ratelimit-limit"),
        remaining_requests=_parse_count(headers, "x-ratelimit-remaining"),
        reset_requests=reset,
    )


def _anthropic(headers: Mapping[str, str], kind: str, now: float | None) -> tuple[Any, Any, Any]:
    names = tuple(f"{ANTHROPIC_PREFIX}{kind}-{part}" for part in ("limit", "remaining", "reset"))
    return _triple(headers, names, _parse_reset_timestamp, now)  # type: ignore[arg-type]


def _tighter(values: Iterable[Any], pick: Callable[..., Any]) -> Any:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def parse_anthropic_headers(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo:
    """Anthropic: ``anthropic-ratelimit-*`` headers and ``retry-after``.

    Reads requests, tokens, input-tokens (ITPM) and output-tokens (OTPM),
    each ``-limit``, ``-remaining`` and ``-reset`` (RFC 3339, turned into
    seconds from ``now``). Input and output limits are kept apart in their
    own fields; where no combined ``tokens-*`` header is present, the plain
    token fields take the tighter of the two: the smaller limit and remaining
    count, the later reset.

    Args:
        headers: Response headers, any Mapping; names match in any case.
        now: Current epoch time; defaults to ``time.time()``.

    Returns:
        The information found; fields absent or malformed are None.
    """
    headers = _lowered(headers)
    requests = _anthropic(headers, "requests", now)
    tokens = _anthropic(headers, "tokens", now)
    inputs = _anthropic(headers, "input-tokens", now)
    outputs = _anthropic(headers, "output-tokens", now)
    combined = [
        tokens[i] if tokens[i] is not None else _tighter((inputs[i], outputs[i]), pick)
        for i, pick in enumerate((min, min, max))
    ]
    return RateLimitInfo(
        retry_after=_parse_lowered_retry_after(headers, now),
        limit_requests=requests[0],
        remaining_requests=requests[1],
        reset_requests=requests[2],
        limit_tokens=combined[0],
        remaining_tokens=combined[1],
        reset_tokens=combined[2],
        limit_input_tokens=inputs[0],
        remaining_input_tokens=inputs[1],
        reset_input_tokens=inputs[2],
        limit_output_tokens=outputs[0],
        remaining_output_tokens=outputs[1],
        reset_output_tokens=outputs[2],
    )


PARSERS: Final[dict[str, HeaderParser]] = {
    "openai": parse_openai_headers,
    "azure": parse_openai_headers,
    "anthropic": parse_anthropic_headers,
    "groq": parse_groq_headers,
    "openrouter": parse_openrouter_headers,
    "suffixed": parse_suffixed_headers,
}
"""Header parsers by dialect name; each takes ``(headers, now)``."""

_SUFFIXED: Final = r"x-ratelimit-(?:limit|remaining|reset)-(?:requests|tokens)-(?:minute|day)"


def detect_dialect(headers: Mapping[str, str]) -> str:
    """The dialect the header names show (lower-case names expected)."""
    names = [name.lower() for name in headers]
    if any(name.startswith(ANTHROPIC_PREFIX) for name in names):
        return "anthropic"
    if any(name.startswith("x-ratelimit-") and re.fullmatch(_SUFFIXED, name) for name in names):
        return "suffixed"
    if "x-ratelimit-limit" in names or "x-ratelimit-remaining" in names:
        return "openrouter"
    if any(name.startswith("x-groq-") for name in names):
        return "groq"
    return "openai"


class _TaggedHeaders(CaseInsensitiveDict[str]):
    """Headers (any case, as requests' own) that know their dialect."""

    rate_limit_dialect: str | None = None


def tag_dialect(headers: Mapping[str, Any], dialect: str | None) -> Mapping[str, str]:
    """Headers that tell :func:`parse_rate_limit_headers` their dialect.

    The endpoint knows its provider's dialect (Groq's headers look like
    OpenAI's); whoever parses the headers later does not. ``None`` or
    ``"auto"`` leaves detection to the header names.

    Example:
        >>> tagged = tag_dialect({"X-RateLimit-Limit-Requests": "14400"}, "groq")
        >>> parse_rate_limit_headers(tagged).limit_requests_day
        14400
    """
    tagged = _TaggedHeaders(headers)
    tagged.rate_limit_dialect = None if dialect in (None, "auto") else dialect
    return tagged


#: Every header any dialect reads starts with one of these (lower case):
#: ``retry-after`` covers ``retry-after-ms``.
_RATE_LIMIT_PREFIXES: Final = (OPENAI_PREFIX, ANTHROPIC_PREFIX, "retry-after")


def names_rate_limit(headers: Mapping[str, Any]) -> bool:
    """Whether any header name could carry rate-limit information (one pass over the names).

    Most responses carry none: checking the names first spares copying and
    parsing them. ``requests``' headers keep their lower-case names at hand.

    Example:
        >>> names_rate_limit({"Content-Type": "application/json", "Date": "x"})
        False
        >>> names_rate_limit({"Retry-After-Ms": "20"}), names_rate_limit({"X-RateLimit-Limit": "9"})
        (True, True)
    """
    if isinstance(headers, CaseInsensitiveDict):
        # Its own index is keyed by the lower-case names: no lower() per name.
        return any(name.startswith(_RATE_LIMIT_PREFIXES) for name in headers._store)  # type: ignore[attr-defined]
    return any(isinstance(name, str) and name.lower().startswith(_RATE_LIMIT_PREFIXES) for name in headers)


def parse_rate_limit_headers(
    headers: Mapping[str, str], *, now: float | None = None, provider: str | None = None
) -> RateLimitInfo:
    """Parses the rate-limit headers of any supported dialect.

    Args:
        headers: Response headers, any Mapping; names match in any case.
        now: Current epoch time; defaults to ``time.time()``.
        provider: A key of :data:`PARSERS` (any case); None takes the
            dialect the headers were tagged with (:func:`tag_dialect`), else
            detects it (:func:`detect_dialect`).

    Returns:
        The information found.

    Raises:
        ValueError: If ``provider`` is not a key of :data:`PARSERS`.
    """
    name = provider.lower() if provider is not None else getattr(headers, "rate_limit_dialect", None)
    if (name is None or name in PARSERS) and not names_rate_limit(headers):
        return _EMPTY  # the usual response: nothing to parse
    lowered = _lowered(headers)
    name = name or detect_dialect(lowered)
    parser = PARSERS.get(name)
    if parser is None:
        raise ValueError(f"provider: unknown {provider!r}, expected one of {sorted(PARSERS)}")
    return parser(lowered, now)
