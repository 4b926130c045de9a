"""Values of HTTP headers about time and counts: durations, timestamps, Retry-After.

Every parser here never raises on a malformed value: it returns None (and
logs at debug level). Used by :mod:`apiexec.http.rate_limit_headers` and the
error map.

Example:
    >>> parse_duration("6m0s"), parse_retry_after({"Retry-After-Ms": "1500"})
    (360.0, 1.5)
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Final

logger = logging.getLogger(__name__)

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
_DURATION_TERM: Final = r"(\d+(?:\.\d*)?|\.\d+)(ms|us|\u00b5s|\u03bcs|ns|h|m|s)"
_RFC3339: Final = r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?"


@functools.cache
def _pattern(source: str) -> re.Pattern[str]:
    """``re.compile(source)`` at first use, not at import (most answers carry no such value)."""
    return re.compile(source)


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
    if not _pattern(f"(?:{_DURATION_TERM})+").fullmatch(text):
        return None
    seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _pattern(_DURATION_TERM).findall(text))
    return seconds if math.isfinite(seconds) else None


def _parse_count(headers: Mapping[str, str], name: str) -> int | None:
    """Reads a non-negative integer header ("150000", or "150000.0").

    ``-1`` (Azure OpenAI: "not reported") reads as absent.
    """
    text = headers.get(name)
    if text is None or text.strip() == "-1":
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
    match = _pattern(_RFC3339).fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    try:
        # A leap second (:60) is read as :59.
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc)
    except ValueError:  # e.g. month 13
        return None
    epoch = moment.timestamp() + float(fraction or 0)
    if offset and offset[0] in "+-":
        sign = 1 if offset[0] == "+" else -1
        epoch -= sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    return epoch


def _parse_reset_timestamp(headers: Mapping[str, str], name: str, now: float | None) -> float | None:
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


def _parse_lowered_retry_after(headers: Mapping[str, str], now: float | None) -> float | None:
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


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
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
