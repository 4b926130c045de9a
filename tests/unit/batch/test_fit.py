"""The executor of a batch run: limits per model always, adaptive or fixed gate, the progress figure."""

import threading
from pathlib import Path

from apiexec.batch.fit import fit_executor, with_concurrency
from apiexec.batch.progress import ProgressState, plain_line
from apiexec.batch.runner import BatchOptions
from apiexec.http.presets import preset_config
from apiexec.limits.keyed import KeyedLimits
from apiexec.limits.rate_limits import RateLimits


def options(**kw):
    endpoint = preset_config("openai-compatible", base_url="http://127.0.0.1:9/v1")
    return BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"), endpoint=endpoint, **kw)


def test_a_run_keys_limits_by_model_and_adapts_below_its_concurrency():
    ex = fit_executor(options(concurrency=8, limits=KeyedLimits({"m": RateLimits.per_minute(requests=5)})), window=16)
    assert ex.max_workers == 16  # a worker for every line the run holds: waiting lines keep none from others
    assert ex.keyed_admission.keyed.limits.for_key("m").requests == 5
    assert ex.adaptive_admission.gate.rules.max_limit == 8
    assert ex.metrics.snapshot()["concurrency_limit"] == 4.0


def test_without_adaptation_exactly_concurrency_calls_go_at_once():
    ex = fit_executor(options(concurrency=3, adaptive=False), window=16)
    assert ex.adaptive_admission is None
    gate = ex.admission.policies[-1]
    stop = threading.Event()
    results = []
    for _ in range(3):
        t = threading.Thread(target=lambda: results.append(gate.admit(object(), stop=stop, deadline=None)))
        t.start()
        t.join(5)
    assert results == [0, 0, 0] and gate.in_flight == 3 and gate.limit == 3.0
    gate.observe(503, {})
    assert gate.limit == 3.0  # fixed: no overload moves it


def test_the_progress_shows_the_limit_and_no_false_rate_limit_wait():
    ex = fit_executor(options(concurrency=8), window=16)
    waiting = ProgressState(total=10, done=1, elapsed=1.0, waiting=5.0)
    read = with_concurrency(lambda: waiting, ex)
    assert read().concurrency == 4.0 and read().waiting == 5.0  # slots free: the wait is a rate limit
    store = ex.adaptive_admission.gate.store
    for _ in range(4):
        store.try_acquire()
    state = read()
    assert state.waiting is None  # every slot taken: held back by the adaptive limit, not a rate limit
    assert "concurrency 4" in plain_line(state)
    plain = fit_executor(options(concurrency=8, adaptive=False), window=16)
    assert with_concurrency(lambda: waiting, plain)() is waiting


def test_a_run_fits_its_threads_to_the_pace():
    ex = fit_executor(options(concurrency=8), window=16)
    assert ex.fit_threads is True
    with ex:
        fit = ex._runtime.turns.fit
        assert fit is not None and fit.ceiling == 16 and fit.allowed == 16  # all of them until an epoch says
