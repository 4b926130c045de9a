"""Adaptive concurrency: AIMD over overload signals, with a latency guard.

How many calls may be in flight at once is learnt from the server instead of
guessed: the limit grows while calls succeed at steady latency and shrinks on
a sign of overload (503, 529, a 429 that names no rate limit, a connection
reset or refused, a latency rise).

**Why AIMD.** This is TCP congestion control (Jacobson 1988; Reno, RFC 5681)
applied to calls, as in Netflix's ``concurrency-limits`` (``AIMDLimit``):

* *slow start*: until the first sign of overload the limit grows by one per
  successful call, i.e. it doubles every round trip, so a large server is
  found in a few round trips;
* *additive increase*: after that, by ``1/limit`` per success, one call per
  round trip — a quarter of that near the limit at which the last overload
  came, less each time the overload comes back there (as TCP CUBIC lingers
  near its last maximum): the server's capacity is most likely there, and
  probing past it slowly makes refusals rare; well past it without an
  overload, the server has grown, and the limit grows by half a call per
  success (x1.5 per round trip) to find the new capacity quickly;
* *multiplicative decrease*: a sign of overload multiplies the limit by
  ``backoff``, at most once per round trip (several calls rejected by one
  overload are one event, as TCP reduces once per window).

AIMD rather than a gradient limiter (TCP Vegas, Netflix ``Gradient2``): the
servers we meet (vLLM, Ollama, TGI, providers' overload answers) say "no"
explicitly, and the latency of an LLM call depends mostly on how many tokens
it writes, so a gradient limiter's estimate of the no-load latency is noise.
AIMD also converges to a fair share between several clients of one server
(Chiu and Jain, 1989), which matters when many processes share the limit
through SQLite or Redis. Latency is still watched, coarsely, as Gradient2
does: a short average above ``latency_tolerance`` times a long one counts as
overload (a server that queues instead of refusing).

The state is a frozen value and every rule is a pure function of (state,
observation, time): the same code runs in memory, in a SQLite transaction and
in a Redis optimistic transaction (:mod:`apiexec.limits.adaptive_store`).

Example:
    >>> aimd = AIMD(initial=4, max_limit=64)
    >>> state = aimd.start()
    >>> state = aimd.on_success(state, latency=0.1, in_flight=4, now=1.0)
    >>> state.limit          # slow start: +1 per success
    5.0
    >>> state = aimd.on_overload(state, now=2.0)
    >>> state.limit          # the first overload ends slow start: halved
    2.5
    >>> aimd.on_overload(state, now=3.0).limit  # later ones: times backoff
    1.875
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Final

from apiexec._checks import check_positive_number
from apiexec.errors import ConfigError

#: The limit's starting point (slow start finds the real one quickly).
DEFAULT_INITIAL: Final = 4.0
#: Multiplicative decrease: between Reno's 0.5 and Netflix AIMDLimit's 0.9.
DEFAULT_BACKOFF: Final = 0.75
#: Short-term latency above this many times the long-term one is overload.
DEFAULT_LATENCY_TOLERANCE: Final = 2.0
#: Successes needed before latency is trusted as a signal.
MIN_LATENCY_SAMPLES: Final = 20
#: The decrease that ends slow start.
SLOW_START_BACKOFF: Final = 0.5
#: Near the last overload (this band around it) the limit grows at
#: ``PROBE_RATE`` calls per round trip instead of one.
NEAR_PEAK: Final = (0.9, 1.1)
PROBE_RATE: Final = 0.25
#: The increase per success once the limit is past the band without overload.
BEYOND_PEAK_STEP: Final = 0.5
#: The slowest probing, after overloads again and again at one place.
MIN_PROBE_RATE: Final = 1 / 16
#: Weight of a new sample in the short and long latency averages.
SHORT_SMOOTHING: Final = 0.2
LONG_SMOOTHING: Final = 0.02


@dataclass(frozen=True)
class AIMDState:
    """Where an adaptive limit stands.

    Attributes:
        limit: Calls allowed in flight (fractional: additive increase adds
            ``1/limit`` per success; ``floor(limit)`` slots are granted).
        threshold: End of slow start (TCP's ``ssthresh``); infinite until the
            first overload.
        short_latency: Short-term average latency of successes (s), or None.
        long_latency: Long-term average latency of successes (s), or None.
        samples: Successes seen.
        last_decrease: Clock time of the last decrease.
        overload_at: The limit when the last overload came (CUBIC's
            ``W_max``), or None before any.
        probe_rate: Calls per round trip the limit grows by near
            ``overload_at``: halved each time the overload comes back at the
            same place (the capacity is known better each time), reset when
            it comes elsewhere.
    """

    limit: float
    threshold: float = math.inf
    short_latency: float | None = None
    long_latency: float | None = None
    samples: int = 0
    last_decrease: float = -math.inf
    overload_at: float | None = None
    probe_rate: float = PROBE_RATE

    @property
    def slots(self) -> int:
        """Whole calls allowed in flight now."""
        return max(1, math.floor(self.limit + 1e-9))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form (infinities as None) for shared storage."""
        return {
            "limit": self.limit,
            "threshold": None if math.isinf(self.threshold) else self.threshold,
            "short_latency": self.short_latency,
            "long_latency": self.long_latency,
            "samples": self.samples,
            "last_decrease": None if math.isinf(self.last_decrease) else self.last_decrease,
            "overload_at": self.overload_at,
            "probe_rate": self.probe_rate,
        }

    @classmethod
    def from_dict(cls, data: Any, default: AIMDState) -> AIMDState:
        """The state stored by :meth:`to_dict`; ``default`` if it is unusable.

        Shared storage may hold anything (another version, a hand edit): a
        value that does not make sense restarts the limit rather than failing
        every call.
        """
        try:
            limit = float(data["limit"])
            threshold = math.inf if data.get("threshold") is None else float(data["threshold"])
            short = data.get("short_latency")
            long = data.get("long_latency")
            last = data.get("last_decrease")
            peak = data.get("overload_at")
            state = cls(
                limit=limit,
                threshold=threshold,
                short_latency=None if short is None else float(short),
                long_latency=None if long is None else float(long),
                samples=int(data.get("samples", 0)),
                last_decrease=-math.inf if last is None else float(last),
                overload_at=None if peak is None else float(peak),
                probe_rate=float(data.get("probe_rate", PROBE_RATE)),
            )
        except (TypeError, ValueError, KeyError, AttributeError):
            return default
        if not (math.isfinite(state.limit) and state.limit > 0):
            return default
        if not (MIN_PROBE_RATE <= state.probe_rate <= PROBE_RATE):
            state = replace(state, probe_rate=PROBE_RATE)
        return state


@dataclass(frozen=True, kw_only=True)
class AIMD:
    """The adaptive concurrency rules (an immutable configuration).

    Attributes:
        max_limit: Upper bound (``--concurrency``): never more in flight.
        min_limit: Lower bound: the limit never drops below it.
        initial: Starting limit (clamped into the bounds).
        backoff: Factor applied on overload, in (0, 1).
        latency_tolerance: Overload when the short-term latency exceeds the
            long-term one by this factor (> 1); None ignores latency.

    Raises:
        ConfigError: A value is out of range (the message names the field).

    Example:
        >>> AIMD(max_limit=8, backoff=1.5)
        Traceback (most recent call last):
        ...
        apiexec.errors.ConfigError: backoff: must be in (0, 1), got 1.5
    """

    max_limit: float
    min_limit: float = 1.0
    initial: float = DEFAULT_INITIAL
    backoff: float = DEFAULT_BACKOFF
    latency_tolerance: float | None = DEFAULT_LATENCY_TOLERANCE

    def __post_init__(self) -> None:
        check_positive_number("max_limit", self.max_limit)
        check_positive_number("min_limit", self.min_limit)
        check_positive_number("initial", self.initial)
        if self.min_limit > self.max_limit:
            raise ConfigError("min_limit", f"must be at most max_limit ({self.max_limit:g}), got {self.min_limit:g}")
        if not (isinstance(self.backoff, (int, float)) and 0 < self.backoff < 1):
            raise ConfigError("backoff", f"must be in (0, 1), got {self.backoff!r}")
        tolerance = self.latency_tolerance
        if tolerance is not None and not (isinstance(tolerance, (int, float)) and 1 < tolerance < math.inf):
            raise ConfigError("latency_tolerance", f"must be a finite number > 1 or None, got {tolerance!r}")

    def start(self) -> AIMDState:
        """The state before any call."""
        return AIMDState(limit=self._clamp(self.initial))

    def on_success(self, state: AIMDState, *, latency: float | None, in_flight: int, now: float) -> AIMDState:
        """A call succeeded after ``latency`` s with ``in_flight`` calls out.

        The limit grows only when it was being used (``in_flight`` at least
        half of it, as in Netflix's AIMDLimit): a light workload must not
        inflate it to the bound and then flood the server when work arrives.
        """
        state = self._record_latency(state, latency)
        if self._latency_rose(state):
            return self.on_overload(state, now=now)
        if in_flight * 2 < state.limit:
            return state
        return _evolve(state, limit=self._clamp(state.limit + self._step(state)))

    def _step(self, state: AIMDState) -> float:
        """The increase for one success: slow start, additive, or probing near the last overload."""
        if state.limit < state.threshold:
            return 1.0
        peak = state.overload_at
        if peak is not None and peak * NEAR_PEAK[0] <= state.limit <= peak * NEAR_PEAK[1]:
            return state.probe_rate / state.limit
        if peak is not None and state.limit > peak * NEAR_PEAK[1]:
            # Well past the last overload without a new one: the server has grown.
            # Speed up (half of slow start: x1.5 per round trip), as CUBIC's convex
            # region does, rather than crawl towards a capacity far away.
            return BEYOND_PEAK_STEP
        return 1.0 / state.limit

    def on_overload(self, state: AIMDState, *, now: float) -> AIMDState:
        """The server showed overload: shrink, once per round trip.

        Signals arriving within one short-term latency of the last decrease
        belong to the same overload (the calls sent together were refused
        together) and change nothing.
        """
        window = state.short_latency or 0.0
        if now - state.last_decrease < window:
            return state
        # Slow start doubles the limit every round trip: at its first overload
        # the limit may be twice what the server takes, so it halves (Reno's
        # decrease); afterwards the limit is near the capacity and ``backoff``.
        factor = SLOW_START_BACKOFF if math.isinf(state.threshold) else self.backoff
        limit = self._clamp(state.limit * factor)
        peak = state.overload_at
        same_place = peak is not None and abs(state.limit - peak) <= (NEAR_PEAK[1] - 1) * peak
        probe_rate = max(MIN_PROBE_RATE, state.probe_rate / 2) if same_place else PROBE_RATE
        # The latency seen during the overload is not the server's normal:
        # restart the short average from the long one.
        return replace(
            state,
            limit=limit,
            threshold=limit,
            last_decrease=now,
            short_latency=state.long_latency,
            overload_at=state.limit,
            probe_rate=probe_rate,
        )

    def _record_latency(self, state: AIMDState, latency: float | None) -> AIMDState:
        if latency is None or not math.isfinite(latency) or latency < 0:
            return state
        short = latency if state.short_latency is None else _ewma(state.short_latency, latency, SHORT_SMOOTHING)
        long = latency if state.long_latency is None else _ewma(state.long_latency, latency, LONG_SMOOTHING)
        return _evolve(state, short_latency=short, long_latency=long, samples=state.samples + 1)

    def _latency_rose(self, state: AIMDState) -> bool:
        tolerance = self.latency_tolerance
        if tolerance is None or state.samples < MIN_LATENCY_SAMPLES:
            return False
        short, long = state.short_latency, state.long_latency
        return short is not None and long is not None and long > 0 and short > tolerance * long

    def _clamp(self, limit: float) -> float:
        return float(min(self.max_limit, max(self.min_limit, limit)))


def _evolve(
    state: AIMDState,
    *,
    limit: float | None = None,
    short_latency: float | None = None,
    long_latency: float | None = None,
    samples: int | None = None,
) -> AIMDState:
    """``dataclasses.replace`` for the changes of every success, without its field walk.

    Every successful call changes the state once or twice: ``replace``
    looks the fields up each time and cost more than the rules themselves.

    Example:
        >>> _evolve(AIMDState(limit=4.0), limit=5.0) == replace(AIMDState(limit=4.0), limit=5.0)
        True
    """
    return AIMDState(
        limit=state.limit if limit is None else limit,
        threshold=state.threshold,
        short_latency=state.short_latency if short_latency is None else short_latency,
        long_latency=state.long_latency if long_latency is None else long_latency,
        samples=state.samples if samples is None else samples,
        last_decrease=state.last_decrease,
        overload_at=state.overload_at,
        probe_rate=state.probe_rate,
    )


def _ewma(average: float, sample: float, weight: float) -> float:
    return average + weight * (sample - average)


__all__ = ["AIMD", "AIMDState", "DEFAULT_BACKOFF", "DEFAULT_INITIAL", "DEFAULT_LATENCY_TOLERANCE"]
