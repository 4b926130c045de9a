"""Faults the mock server injects: scripted, per request (header) or random.

Fault syntax: ``"500"``, ``"503"`` or any status from 400 to 599; ``"429"``
(``retry-after-ms: 1000``); ``"429:1500"`` (``retry-after-ms: 1500``); ``"drop"``
(close the socket without an answer); ``"slow:MS"`` (MS more milliseconds, then a
normal answer); ``"cut:N"`` (a 200 whose body stops after N server-sent events,
or after half its bytes when it is not a stream, then the socket closes: a
truncated answer).

Example:
    >>> parse_fault("429:1500")
    Fault(status=429, retry_after_ms=1500, extra_delay_s=0.0, drop=False, cut_after=None)
    >>> parse_fault("teapot")
    Traceback (most recent call last):
    ...
    ValueError: invalid fault 'teapot': expected a status 400-599, 'drop', 'slow:MS' or 'cut:N'
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

_MIN_STATUS: Final = 400
_MAX_STATUS: Final = 599

@dataclass(frozen=True)
class Fault:
    status: int | None = None
    retry_after_ms: int | None = None
    extra_delay_s: float = 0.0
    drop: bool = False
    cut_after: int | None = None  # events sent before the connection is cut


def parse_fault(spec: str) -> Fault:
    """Parse ``"500"``, ``"429:1500"``, ``"drop"``, ``"slow:250"`` or ``"cut:3"``.

    Raises:
        ValueError: The spec is not in that syntax.
    """
    text = str(spec).strip().lower()
    if text == "drop":
        return Fault(drop=True)
    name, sep, arg = text.partition(":")
    if name == "slow" and sep:
        return Fault(extra_delay_s=_parse_ms(spec, arg) / 1000.0)
    if name == "cut" and sep:
        if not arg.isdigit():
            raise ValueError(f"invalid fault {spec!r}: 'cut:N' needs a whole number of events")
        return Fault(cut_after=int(arg))
    status = int(name) if name.isdigit() else 0
    if not _MIN_STATUS <= status <= _MAX_STATUS:
        raise ValueError(f"invalid fault {spec!r}: expected a status 400-599, 'drop', 'slow:MS' or 'cut:N'")
    if not sep:
        return Fault(status=status)
    if status != HTTPStatus.TOO_MANY_REQUESTS:
        raise ValueError(f"invalid fault {spec!r}: only 429 takes a retry delay")
    return Fault(status=status, retry_after_ms=math.ceil(_parse_ms(spec, arg)))


def _parse_ms(spec: str, arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"invalid fault {spec!r}: milliseconds must be a number >= 0")
    return value


class FaultPlan:
    """Chooses the fault, if any, of each model request."""

    def __init__(self, *, seed: int | None, fail_rate: float, drop_rate: float) -> None:
        self._lock = threading.Lock()
        self._scripted: deque[Fault] = deque()
        self._rng = random.Random(seed)
        self._fail_rate = fail_rate
        self._drop_rate = drop_rate

    def script(self, specs: Iterable[str]) -> None:
        faults = [parse_fault(spec) for spec in specs]  # all or nothing
        with self._lock:
            self._scripted.extend(faults)

    def pending(self) -> int:
        with self._lock:
            return len(self._scripted)

    def next(self, header: str | None) -> Fault | None:
        """The fault of one request; the header wins and leaves the script alone.

        Raises:
            ValueError: The header value is not a valid fault.
        """
        if header is not None:
            return parse_fault(header)
        with self._lock:
            if self._scripted:
                return self._scripted.popleft()
            return self._draw_locked()

    def _draw_locked(self) -> Fault | None:
        if self._fail_rate == 0 and self._drop_rate == 0:
            return None
        draw = self._rng.random()
        if draw < self._drop_rate:
            return Fault(drop=True)
        if draw < self._drop_rate + self._fail_rate:
            return Fault(status=self._rng.choice((500, 503)))
        return None


