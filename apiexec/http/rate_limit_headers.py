"""Rate-limit information from response headers.

Providers report their limits, what is left of them and when they reset in
response headers, and say how long to back off in ``Retry-After``. This module
turns those headers into one provider-neutral value, :class:`RateLimitInfo`.

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
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeAlias

logger = logging.getLogger(__name__)

OPENAI_PREFIX: Final[str] = "x-ratelimit-"
ANTHROPIC_PREFIX: Final[str] = "anthropic-ratelimit-"

# Go's time.Duration units, which OpenAI's reset headers use ("6m0s", "12ms").
_DURATION_UNITS: Final[Mapping[str, float]] = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ns": 1e-9,
}
_DURATION_TERM: Final[re.Pattern[str]] = re.compile(
    r"(\d+(?:\.\d*)?|\.\d+)(ms|us|\u00b5s|\u03bcs|ns|h|m|s)"
)
_DURATION: Final[re.Pattern[str]] = re.compile(f"(?:{_DURATION_TERM.pattern})+")
_RFC3339: Final[re.Pattern[str]] = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?"
)


@dataclass(frozen=True, kw_only=True)
class RateLimitInfo:
    """What a response says about the caller's rate limits.

    Every field is None when the response did not say (or said nonsense).
    Resets are seconds from when the response was parsed.

    Attributes:
        retry_after: Seconds to wait before retrying (``Retry-After``).
        limit_requests: Requests allowed per window.
        remaining_requests: Requests left in the current window.
        reset_requests: Seconds until the request limit is fully replenished.
        limit_tokens: Tokens allowed per window.
        remaining_tokens: Tokens left in the current window.
        reset_tokens: Seconds until the token limit is fully replenished.

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

    @property
    def is_empty(self) -> bool:
        """True if the headers carried no rate-limit information at all."""
        return all(getattr(self, f.name) is None for f in fields(self))


HeaderParser: TypeAlias = Callable[[Mapping[str, str], float | None], RateLimitInfo]
"""Parses headers, given ``now`` (epoch seconds, None = current time)."""


# ---------------------------------------------------------------- values


def _lowered(headers: Mapping[str, Any]) -> dict[str, str]:
    """Copies headers with lower-case names and string values; drops the rest."""
    result: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(name, str) and isinstance(value, (str, int, float)):
            result[name.lower()] = str(value).strip()
    return result


def _finite_seconds(text: str) -> float | None:
    """Parses a plain number of seconds; None unless finite and >= 0."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_duration(text: str) -> float | None:
    """Parses a reset duration into seconds.

    Accepts OpenAI's Go-style durations ("1s", "6m0s", "12ms", "1h2m3.5s",
    "0.5s"; units h, m, s, ms, us/µs, ns) and a bare number of seconds ("20",
    "0.5").

    Args:
        text: The header value.

    Returns:
        Seconds, or None if the text is not a non-negative duration. Never
        raises.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    plain = _finite_seconds(text) if text[:1].isdigit() or text[:1] == "." else None
    if plain is not None:
        return plain
    if not _DURATION.fullmatch(text):
        return None
    seconds = sum(
        float(number) * _DURATION_UNITS[unit]
        for number, unit in _DURATION_TERM.findall(text)
    )
    return seconds if math.isfinite(seconds) else None


def _parse_count(headers: Mapping[str, str], name: str) -> int | None:
    """Reads a non-negative integer header ("150000", or "150000.0")."""
    text = headers.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0 and value.is_integer()):
        logger.debug("ignoring malformed %s: %r", name, text)
        return None
    return int(value)


def _parse_reset_duration(headers: Mapping[str, str], name: str) -> float | None:
    """Reads a duration header (OpenAI resets)."""
    text = headers.get(name)
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds is None:
        logger.debug("ignoring malformed %s: %r", name, text)
    return seconds


def _now(now: float | None) -> float:
    """Returns ``now``, defaulting to the current epoch time."""
    return time.time() if now is None else now


def _seconds_until(epoch: float, now: float | None) -> float:
    """Seconds from ``now`` until an epoch time, clamped at 0."""
    return max(0.0, epoch - _now(now))


def _parse_rfc3339(text: str) -> float | None:
    """Parses an RFC 3339 timestamp into epoch seconds (no offset means UTC).

    Hand-written because ``datetime.fromisoformat`` rejects "Z" and long
    fractions before Python 3.11.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    try:
        # A leap second (:60) is read as :59.
        moment = datetime(
            year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc
        )
    except ValueError:  # e.g. month 13
        return None
    epoch = moment.timestamp() + float(fraction or 0)
    if offset and offset[0] in "+-":
        sign = 1 if offset[0] == "+" else -1
        epoch -= sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    return epoch


def _parse_reset_timestamp(
    headers: Mapping[str, str], name: str, now: float | None
) -> float | None:
    """Reads an RFC 3339 reset header (Anthropic) as seconds from ``now``.

    A plain duration ("30", "1s") is accepted too, for proxies that rewrite it.
    """
    text = headers.get(name)
    if text is None:
        return None
    epoch = _parse_rfc3339(text)
    if epoch is not None:
        return _seconds_until(epoch, now)
    seconds = parse_duration(text)
    if seconds is None:
        logger.debug("ignoring malformed %s: %r", name, text)
    return seconds


# ---------------------------------------------------------------- retry-after


def _retry_after_ms(text: str) -> float | None:
    """Parses ``retry-after-ms`` (milliseconds) into seconds."""
    try:
        millis = float(text)
    except ValueError:
        return None
    return max(0.0, millis / 1000) if math.isfinite(millis) else None


def _retry_after(text: str, now: float | None) -> float | None:
    """Parses ``retry-after``: seconds (int or float) or an HTTP-date."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, origin unknown
        moment = moment.replace(tzinfo=timezone.utc)
    return _seconds_until(moment.timestamp(), now)


def _parse_lowered_retry_after(
    headers: Mapping[str, str], now: float | None
) -> float | None:
    """:func:`parse_retry_after` on headers already lower-cased by ``_lowered``."""
    for name, parse in (
        ("retry-after-ms", _retry_after_ms),
        ("retry-after", lambda text: _retry_after(text, now)),
    ):
        text = headers.get(name)
        if text is None:
            continue
        seconds = parse(text)
        if seconds is not None:
            return seconds
        logger.debug("ignoring malformed %s: %r", name, text)
    return None


def parse_retry_after(
    headers: Mapping[str, str], *, now: float | None = None
) -> float | None:
    """Reads how long to wait before retrying.

    ``retry-after-ms`` (milliseconds, OpenAI) wins over ``retry-after``,
    which is seconds (int or float) or an HTTP-date. A malformed value is
    skipped; a negative result (a date in the past) becomes 0.

    Args:
        headers: Response headers, any Mapping; names match in any case.
        now: Current epoch time for HTTP-dates; defaults to ``time.time()``.

    Returns:
        Seconds to wait, or None if no usable header is present.
    """
    return _parse_lowered_retry_after(_lowered(headers), now)


# ---------------------------------------------------------------- providers


def _parse_lowered_openai(
    headers: Mapping[str, str], now: float | None
) -> RateLimitInfo:
    """:func:`parse_openai_headers` on lower-cased headers."""
    return RateLimitInfo(
        retry_after=_parse_lowered_retry_after(headers, now),
        limit_requests=_parse_count(headers, f"{OPENAI_PREFIX}limit-requests"),
        remaining_requests=_parse_count(headers, f"{OPENAI_PREFIX}remaining-requests"),
        reset_requests=_parse_reset_duration(headers, f"{OPENAI_PREFIX}reset-requests"),
        limit_tokens=_parse_count(headers, f"{OPENAI_PREFIX}limit-tokens"),
        remaining_tokens=_parse_count(headers, f"{OPENAI_PREFIX}remaining-tokens"),
        reset_tokens=_parse_reset_duration(headers, f"{OPENAI_PREFIX}reset-tokens"),
    )


def parse_openai_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> RateLimitInfo:
    """Parses OpenAI's ``x-ratelimit-*`` headers and ``retry-after``.

    Reads ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; resets
    are durations such as "1s" or "6m0s" (see :func:`parse_duration`).

    Args:
        headers: Response headers, any Mapping; names match in any case.
        now: Current epoch time for an HTTP-date ``retry-after``.

    Returns:
        The information found; fields absent or malformed are None.
    """
    return _parse_lowered_openai(_lowered(headers), now)


def _min_present(values: Iterable[float | None]) -> float | None:
    """Smallest of the values that are not None, or None."""
    return min((v for v in values if v is not None), default=None)


def _max_present(values: Iterable[float | None]) -> float | None:
    """Largest of the values that are not None, or None."""
    return max((v for v in values if v is not None), default=None)


def _anthropic_count(headers: Mapping[str, str], field: str) -> int | None:
    """Token count ``field`` ("limit"/"remaining"), combining input/output if needed."""
    total = _parse_count(headers, f"{ANTHROPIC_PREFIX}tokens-{field}")
    if total is not None:
        return total
    split = (
        _parse_count(headers, f"{ANTHROPIC_PREFIX}{kind}-tokens-{field}")
        for kind in ("input", "output")
    )
    smallest = _min_present(split)
    return None if smallest is None else int(smallest)


def _anthropic_token_reset(
    headers: Mapping[str, str], now: float | None
) -> float | None:
    """Token reset, combining input/output resets (the later one) if needed."""
    total = _parse_reset_timestamp(headers, f"{ANTHROPIC_PREFIX}tokens-reset", now)
    if total is not None:
        return total
    return _max_present(
        _parse_reset_timestamp(headers, f"{ANTHROPIC_PREFIX}{kind}-tokens-reset", now)
        for kind in ("input", "output")
    )


def _parse_lowered_anthropic(
    headers: Mapping[str, str], now: float | None
) -> RateLimitInfo:
    """:func:`parse_anthropic_headers` on lower-cased headers."""
    return RateLimitInfo(
        retry_after=_parse_lowered_retry_after(headers, now),
        limit_requests=_parse_count(headers, f"{ANTHROPIC_PREFIX}requests-limit"),
        remaining_requests=_parse_count(
            headers, f"{ANTHROPIC_PREFIX}requests-remaining"
        ),
        reset_requests=_parse_reset_timestamp(
            headers, f"{ANTHROPIC_PREFIX}requests-reset", now
        ),
        limit_tokens=_anthropic_count(headers, "limit"),
        remaining_tokens=_anthropic_count(headers, "remaining"),
        reset_tokens=_anthropic_token_reset(headers, now),
    )


def parse_anthropic_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> RateLimitInfo:
    """Parses Anthropic's ``anthropic-ratelimit-*`` headers and ``retry-after``.

    Reads ``anthropic-ratelimit-requests-{limit,remaining,reset}`` and
    ``anthropic-ratelimit-tokens-{limit,remaining,reset}``; resets are RFC
    3339 timestamps, turned into seconds from ``now``. Where a
    ``tokens-*`` header is absent, the ``input-tokens-*`` and
    ``output-tokens-*`` headers stand in, combined conservatively into one
    budget: the smaller limit, the smaller remaining count, the later reset.

    Args:
        headers: Response headers, any Mapping; names match in any case.
        now: Current epoch time; defaults to ``time.time()``.

    Returns:
        The information found; fields absent or malformed are None.
    """
    return _parse_lowered_anthropic(_lowered(headers), now)


def _openai_parser(headers: Mapping[str, str], now: float | None) -> RateLimitInfo:
    """:data:`HeaderParser` adapter of :func:`parse_openai_headers`."""
    return parse_openai_headers(headers, now=now)


def _anthropic_parser(headers: Mapping[str, str], now: float | None) -> RateLimitInfo:
    """:data:`HeaderParser` adapter of :func:`parse_anthropic_headers`."""
    return parse_anthropic_headers(headers, now=now)


PARSERS: Final[dict[str, HeaderParser]] = {
    "openai": _openai_parser,
    "anthropic": _anthropic_parser,
}
"""Header parsers by provider name."""


def _detect_provider(headers: Mapping[str, str]) -> str:
    """Returns "anthropic" if any ``anthropic-ratelimit-*`` header is present, else "openai"."""
    if any(name.startswith(ANTHROPIC_PREFIX) for name in headers):
        return "anthropic"
    return "openai"


def parse_rate_limit_headers(
    headers: Mapping[str, str], *, now: float | None = None, provider: str | None = None
) -> RateLimitInfo:
    """Parses the rate-limit headers of any supported provider.

    Args:
        headers: Response headers, any Mapping; names match in any case.
        now: Current epoch time; defaults to ``time.time()``.
        provider: A key of :data:`PARSERS` (any case); None detects it:
            Anthropic if an ``anthropic-ratelimit-*`` header is present,
            else OpenAI (whose format OpenAI-compatible servers share).

    Returns:
        The information found.

    Raises:
        ValueError: If ``provider`` is not a key of :data:`PARSERS`.
    """
    lowered = _lowered(headers)
    name = _detect_provider(lowered) if provider is None else provider.lower()
    parser = PARSERS.get(name)
    if parser is None:
        raise ValueError(
            f"provider: unknown {provider!r}, expected one of {sorted(PARSERS)}"
        )
    return parser(lowered, now)
