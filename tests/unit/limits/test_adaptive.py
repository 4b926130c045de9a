"""The AIMD rules, pure: slow start, additive increase, probing near the last overload, decreases."""

import dataclasses
import math

import pytest

from apiexec.errors import ConfigError
from apiexec.limits.adaptive import (
    AIMD,
    BEYOND_PEAK_STEP,
    MIN_LATENCY_SAMPLES,
    MIN_PROBE_RATE,
    PROBE_RATE,
    AIMDState,
)


def grown(aimd, state, n, *, latency=0.1, in_flight=None, now=0.0):
    for _ in range(n):
        busy = math.floor(state.limit) if in_flight is None else in_flight
        state = aimd.on_success(state, latency=latency, in_flight=busy, now=now)
    return state


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_limit": 0}, "max_limit"),
        ({"max_limit": math.inf}, "max_limit"),
        ({"max_limit": 8, "min_limit": 9}, "min_limit"),
        ({"max_limit": 8, "initial": -1}, "initial"),
        ({"max_limit": 8, "backoff": 1.0}, "backoff"),
        ({"max_limit": 8, "backoff": 0}, "backoff"),
        ({"max_limit": 8, "latency_tolerance": 1.0}, "latency_tolerance"),
        ({"max_limit": 8, "latency_tolerance": math.nan}, "latency_tolerance"),
    ],
)
def test_bad_rules_name_their_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        AIMD(**kwargs)
    assert info.value.field == field


def test_the_start_is_clamped_into_the_bounds():
    assert AIMD(max_limit=2).start().limit == 2.0
    assert AIMD(max_limit=64, min_limit=10).start().limit == 10.0


def test_slow_start_adds_one_per_success_up_to_the_bound():
    aimd = AIMD(max_limit=64, initial=4)
    state = grown(aimd, aimd.start(), 4)
    assert state.limit == 8.0  # one round trip of 4 successes doubled it
    state = grown(aimd, state, 100)
    assert state.limit == 64.0  # never above --concurrency


def test_an_unused_limit_does_not_grow():
    aimd = AIMD(max_limit=64, initial=10)
    state = grown(aimd, aimd.start(), 50, in_flight=4)  # fewer than half the slots used
    assert state.limit == 10.0


def test_the_first_overload_halves_and_later_ones_multiply_by_backoff():
    aimd = AIMD(max_limit=64, initial=16, backoff=0.75)
    state = aimd.on_overload(aimd.start(), now=1.0)
    assert state.limit == 8.0 and state.threshold == 8.0 and state.overload_at == 16.0
    state = aimd.on_overload(state, now=100.0)
    assert state.limit == 6.0


def test_overloads_within_one_round_trip_count_once():
    aimd = AIMD(max_limit=64, initial=16)
    state = grown(aimd, aimd.start(), 5, latency=0.5)  # short latency ~0.5 s
    first = aimd.on_overload(state, now=10.0)
    again = aimd.on_overload(first, now=10.2)  # the same burst of refusals
    assert again == first
    later = aimd.on_overload(first, now=11.0)
    assert later.limit < first.limit


def test_the_limit_never_drops_below_the_minimum():
    aimd = AIMD(max_limit=64, min_limit=2, initial=3)
    state = aimd.start()
    for t in range(20):
        state = aimd.on_overload(state, now=float(t))
    assert state.limit == 2.0 and state.slots == 2


def test_after_slow_start_the_increase_is_one_per_round_trip():
    aimd = AIMD(max_limit=64, initial=40)
    state = aimd.on_overload(aimd.start(), now=0.0)  # 40 -> 20, far below the peak
    assert state.limit == 20.0
    state = grown(aimd, state, 20)  # one round trip at 20 in flight
    assert state.limit == pytest.approx(21.0, abs=0.05)


def test_near_the_last_overload_the_limit_probes_slowly():
    aimd = AIMD(max_limit=64, initial=10, backoff=0.75)
    state = AIMDState(limit=9.5, threshold=5.0, overload_at=10.0)
    step = aimd.on_success(state, latency=None, in_flight=9, now=0.0).limit - 9.5
    assert step == pytest.approx(PROBE_RATE / 9.5)
    far = AIMDState(limit=5.0, threshold=5.0, overload_at=10.0)
    assert aimd.on_success(far, latency=None, in_flight=5, now=0.0).limit == pytest.approx(5.2)


def test_a_latency_rise_is_an_overload_once_enough_samples_are_seen():
    aimd = AIMD(max_limit=64, initial=20, latency_tolerance=2.0)
    state = aimd.on_overload(aimd.start(), now=0.0)  # out of slow start: limit 10
    state = grown(aimd, state, MIN_LATENCY_SAMPLES, latency=0.1, now=1.0)
    before = state.limit
    for i in range(10):  # the server starts queueing: 5x the latency
        state = aimd.on_success(state, latency=0.5, in_flight=10, now=2.0 + i)
    assert state.limit < before
    assert state.last_decrease >= 2.0


def test_latency_is_ignored_when_the_tolerance_is_none():
    aimd = AIMD(max_limit=64, initial=20, latency_tolerance=None)
    state = aimd.on_overload(aimd.start(), now=0.0)
    state = grown(aimd, state, MIN_LATENCY_SAMPLES, latency=0.1)
    before = state.limit
    state = grown(aimd, state, 10, latency=5.0, now=5.0)
    assert state.limit > before


def test_bad_latencies_are_not_samples():
    aimd = AIMD(max_limit=8)
    state = aimd.start()
    for latency in (None, -1.0, math.nan, math.inf):
        state = aimd.on_success(state, latency=latency, in_flight=4, now=0.0)
    assert state.samples == 0 and state.short_latency is None


def test_the_state_survives_json_and_garbage_restarts_it():
    aimd = AIMD(max_limit=64)
    state = aimd.on_overload(grown(aimd, aimd.start(), 7), now=3.0)
    assert AIMDState.from_dict(state.to_dict(), aimd.start()) == state
    fresh = AIMDState.from_dict({"limit": 4.0}, aimd.start())
    assert fresh.threshold == math.inf and fresh.last_decrease == -math.inf
    for junk in (None, [], {"limit": "x"}, {"limit": -3}, {"limit": math.nan}, {"nolimit": 1}):
        assert AIMDState.from_dict(junk, aimd.start()) == aimd.start()


def test_overloads_again_at_one_place_slow_the_probing_and_elsewhere_reset_it():
    aimd = AIMD(max_limit=64, initial=8)
    state = AIMDState(limit=9.0, threshold=6.0, overload_at=9.0)
    state = aimd.on_overload(state, now=0.0)  # the same place again
    assert state.probe_rate == PROBE_RATE / 2
    for t in range(1, 6):  # back up to 9 and refused there, again and again
        state = aimd.on_overload(dataclasses.replace(state, limit=9.0), now=float(t))
    assert state.probe_rate == MIN_PROBE_RATE  # bounded below
    moved = aimd.on_overload(AIMDState(limit=20.0, threshold=15.0, overload_at=9.0, probe_rate=MIN_PROBE_RATE), now=9.0)
    assert moved.probe_rate == PROBE_RATE and moved.overload_at == 20.0


def test_well_past_the_last_overload_the_limit_speeds_up():
    aimd = AIMD(max_limit=64)
    state = AIMDState(limit=12.0, threshold=6.0, overload_at=9.0, probe_rate=MIN_PROBE_RATE)
    assert aimd.on_success(state, latency=None, in_flight=12, now=0.0).limit == 12.0 + BEYOND_PEAK_STEP


def test_a_success_keeps_every_field_it_does_not_change() -> None:
    """The fast copy of the state on each success carries every field (a new field must be added to it)."""
    from apiexec.limits import adaptive

    state = AIMDState(
        limit=7.0, threshold=9.0, short_latency=0.5, long_latency=0.25, samples=3,
        last_decrease=12.0, overload_at=8.0, probe_rate=0.5,
    )  # fmt: skip
    copied = {"limit", "threshold", "short_latency", "long_latency", "samples", "last_decrease", "overload_at", "probe_rate"}
    assert {f.name for f in dataclasses.fields(AIMDState)} == copied  # a new field: copy it in _evolve too
    for field in dataclasses.fields(AIMDState):
        changed = {field.name: 1} if field.name in ("limit", "short_latency", "long_latency", "samples") else {}
        assert adaptive._evolve(state, **changed) == dataclasses.replace(state, **changed)
