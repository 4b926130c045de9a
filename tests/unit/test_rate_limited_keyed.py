"""RateLimitedExecutor with limits per model and adaptive concurrency: routing, isolation, metrics."""

import threading
import time

import pytest

from apiexec import Event, RateLimitedExecutor
from apiexec.call_context import note_response
from apiexec.errors import ConfigError
from apiexec.limits.adaptive import AIMD
from apiexec.limits.keyed import KeyedLimits
from apiexec.limits.rate_limits import RateLimits
from apiexec.rate_limited import KeyedRateLimitAdmission, _names_rate_limit, limit_key_of

HEADERS_429 = {"retry-after": "30", "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"}


class ModelCall(Event):
    """An event that calls "model" and may answer with a status and headers."""

    def __init__(self, model, status=200, headers=None, *, gate=None):
        self.request = {"model": model, "messages": []}
        self.answer = (status, headers or {})
        self.gate = gate
        super().__init__(self.run)

    def run(self):
        if self.gate is not None:
            self.gate.wait(5)
        note_response(*self.answer)
        return self.request["model"]


class Endpointed:
    class endpoint:  # noqa: N801
        class config:  # noqa: N801
            endpoint = "embeddings"


def test_the_key_of_a_call():
    assert limit_key_of(ModelCall("gpt-4o")) == "gpt-4o"
    explicit = ModelCall("gpt-4o")
    explicit.limit_key = "tier-2"
    assert limit_key_of(explicit) == "tier-2"
    assert limit_key_of(Endpointed()) == "embeddings"
    assert limit_key_of(Event(abs, args=(1,))) == "*"
    odd = ModelCall("x")
    odd.request = {"model": 42}
    assert limit_key_of(odd) == "*"


def test_limits_accepts_rate_limits_settings_or_keyed_limits():
    for limits in (
        {"a": RateLimits.per_minute(requests=5)},
        {"a": {"requests_per_minute": 5}},
        KeyedLimits({"a": RateLimits.per_minute(requests=5)}),
    ):
        ex = RateLimitedExecutor(limits=limits)
        assert ex.keyed_admission.keyed.limits.for_key("a").requests == 5
    with pytest.raises(ConfigError, match="limits"):
        RateLimitedExecutor(limits=[("a", 5)])
    with pytest.raises(ConfigError, match=r"limits\[a\].rpm"):
        RateLimitedExecutor(limits={"a": {"rpm": 5}})


def test_a_429_pauses_only_the_model_it_names():
    ex = RateLimitedExecutor(limits={"*": RateLimits.per_minute()}, concurrency_limit=4)
    with ex:
        assert ex.submit(ModelCall("slow", 429, HEADERS_429)).result(5) == "slow"
        started = time.monotonic()
        results = [ex.submit(ModelCall("fast")).result(5) for _ in range(20)]
        assert results == ["fast"] * 20 and time.monotonic() - started < 2.0
        paused = ex.keyed_admission.policy("slow").limiter
        assert not paused.try_acquire()  # slow stays paused for its retry-after
        assert ex.limiter.try_acquire()  # the overall limiter never paused
        ex.keyed_admission.wake()


def test_a_model_waiting_for_its_bucket_does_not_hold_up_the_others():
    ex = RateLimitedExecutor(limits={"slow": RateLimits.per_minute(requests=1)}, concurrency_limit=8)
    with ex:
        first = ex.submit(ModelCall("slow"))
        waiting = ex.submit(ModelCall("slow"))  # the bucket of one is empty for a minute
        fast = [ex.submit(ModelCall("fast")) for _ in range(10)]
        assert first.result(5) == "slow"
        assert [f.result(5) for f in fast] == ["fast"] * 10
        assert not waiting.done()
        ex.shutdown(wait=True, cancel_futures=True)
    assert waiting.cancelled() or waiting.exception(5) is not None


def test_headers_teach_each_models_own_buckets():
    ex = RateLimitedExecutor(limits={}, concurrency_limit=2)
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "1s"}
    with ex:
        ex.submit(ModelCall("a", 200, headers)).result(5)
        assert not ex.keyed_admission.policy("a").limiter.try_acquire()  # learnt: none left for a second
        assert ex.submit(ModelCall("b")).result(5) == "b"
        assert ex.limiter.backend.levels() == (None, None)  # the overall buckets learnt nothing


def test_the_overall_limit_still_holds_across_models():
    ex = RateLimitedExecutor(limit_requests=3, interval=60.0, limits={}, concurrency_limit=4)
    with ex:
        done = [ex.submit(ModelCall(m)) for m in ("a", "b", "c")]
        late = ex.submit(ModelCall("d"))
        assert [f.result(5) for f in done] == ["a", "b", "c"]
        time.sleep(0.2)
        assert not late.done()  # a fourth request within the minute, whatever its model
        ex.shutdown(wait=True, cancel_futures=True)


def test_adaptive_concurrency_is_a_metrics_gauge_and_shrinks_on_503():
    ex = RateLimitedExecutor(adaptive=AIMD(max_limit=16, initial=8), concurrency_limit=16)
    assert ex.metrics.snapshot()["concurrency_limit"] == 8.0
    with ex:
        ex.submit(ModelCall("m", 503)).result(5)
    assert ex.metrics.snapshot()["concurrency_limit"] == 4.0


def test_adaptive_keeps_the_calls_in_flight_below_the_limit():
    gate = threading.Event()
    ex = RateLimitedExecutor(adaptive=AIMD(max_limit=16, initial=3), concurrency_limit=16)
    with ex:
        futures = [ex.submit(ModelCall("m", gate=gate)) for _ in range(10)]
        time.sleep(0.3)
        assert ex.adaptive_admission.in_flight == 3 and ex.metrics.snapshot()["in_flight"] == 3
        gate.set()
        assert [f.result(5) for f in futures] == ["m"] * 10
    assert ex.adaptive_admission.in_flight == 0
    assert ex.metrics.snapshot()["concurrency_limit"] > 3  # successes at full use grew it


def test_adaptive_is_off_by_default_and_bounded_by_the_workers():
    assert RateLimitedExecutor().adaptive_admission is None
    ex = RateLimitedExecutor(adaptive=True, concurrency_limit=24)
    assert ex.adaptive_admission.gate.rules.max_limit == 24


def test_adaptive_and_per_model_limits_are_shared_through_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    a = RateLimitedExecutor(storage=url, key="fleet", adaptive=AIMD(max_limit=8, initial=2),
                            limits={"m": RateLimits.per_minute(requests=1)})
    b = RateLimitedExecutor(storage=url, key="fleet", adaptive=AIMD(max_limit=8, initial=2),
                            limits={"m": RateLimits.per_minute(requests=1)})
    assert a.keyed_admission.policy("m").limiter.try_acquire()
    assert not b.keyed_admission.policy("m").limiter.try_acquire()  # one request a minute for the fleet
    store_a, store_b = a.adaptive_admission.gate.store, b.adaptive_admission.gate.store
    assert store_a.try_acquire() and store_b.try_acquire() and not store_a.try_acquire()


def test_keyed_admission_is_not_blocking_so_models_admit_side_by_side():
    ex = RateLimitedExecutor(limits={})
    assert isinstance(ex.keyed_admission, KeyedRateLimitAdmission)
    assert ex.admission.blocking is False
    assert RateLimitedExecutor().admission.blocking is True  # one quota: strict submission order


@pytest.mark.parametrize(("headers", "names"), [
    ({}, False),
    ({"retry-after": "2"}, False),  # a pause alone names no limit: an overloaded server says this too
    ({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"}, True),
    ({"x-ratelimit-remaining-tokens": "0"}, True),
    ({"anthropic-ratelimit-requests-limit": "50"}, True),
    ({"anthropic-ratelimit-input-tokens-remaining": "0"}, True),
])
def test_which_429s_state_a_rate_limit(headers, names):
    assert _names_rate_limit(headers) is names
