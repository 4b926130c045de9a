"""The reader is woken once a quarter of the window is free, not for every finished call."""

from concurrent.futures import Future
from pathlib import Path

from apiexec.batch.journal import Journal
from apiexec.batch.lanes import Lanes
from apiexec.batch.lines import BatchLine
from apiexec.batch.runner import BatchOptions
from apiexec.batch.state import RunState
from apiexec.http.config import EndpointConfig


def _state(tmp_path: Path) -> RunState:
    inp = tmp_path / "in.jsonl"
    inp.write_text("")
    endpoint = EndpointConfig(provider="t", endpoint="chat/completions", base_url="http://127.0.0.1:9/v1")
    options = BatchOptions(input=inp, output=tmp_path / "out.jsonl", endpoint=endpoint, progress=False)
    return RunState(options, Journal(options.output), None)


def _finish(run: RunState, **kw) -> bool:
    run.wake.clear()
    future: Future = Future()
    future.cancel()  # not sent: no row, only the count
    line = BatchLine(1, "id-1", "openai", "POST", "/v1/chat/completions", {}, None, "fp")
    run.on_done(line, None, future, **kw)  # type: ignore[arg-type]
    return run.wake.is_set()


def test_finished_calls_wake_the_reader_only_below_the_mark(tmp_path):
    run = _state(tmp_path)
    for _ in range(4):
        run.submitted()
    run.wake_at = 2
    assert not _finish(run)  # 3 outstanding: the window is still nearly full
    assert _finish(run)  # 2 outstanding: a quarter free
    assert _finish(run, wake=False) and _finish(run)  # and below, every time (down to 0: the end)


def test_a_call_of_another_lane_always_wakes(tmp_path):
    run = _state(tmp_path)
    for _ in range(3):
        run.submitted()
    run.wake_at = 0
    assert _finish(run, wake=True)


def test_lanes_tell_a_mixed_window():
    lanes = Lanes(window=4, wait=lambda ready: None)
    sent = []
    lanes.offer("a", 1, lambda item: sent.append(item) or True)
    assert not lanes.mixed
    lanes.offer("b", 2, lambda item: sent.append(item) or True)
    assert lanes.mixed and sent == [1, 2]
    lanes.done("a")
    assert not lanes.mixed


class _Endpoint:
    """An endpoint whose call answers, fails, or checks the count in flight while it runs."""

    def __init__(self, run: RunState, fail: bool = False) -> None:
        self.run, self.fail, self.seen = run, fail, []

    def call(self, request, cache_control=False, **kwargs):
        self.seen.append(self.run._in_flight)
        if self.fail:
            raise RuntimeError("refused")
        return {"ok": request}

    def stream(self, request, **kwargs):
        self.seen.append(self.run._in_flight)
        return iter([{"ok": request}])


def test_the_count_in_flight_covers_each_send_and_comes_back_to_zero(tmp_path):
    from apiexec.batch.outcomes import NotSent
    from apiexec.batch.state import Gated

    run = _state(tmp_path)
    answering, failing = _Endpoint(run), _Endpoint(run, fail=True)
    assert Gated(answering, run).call({"a": 1}) == {"ok": {"a": 1}}
    assert list(Gated(answering, run).stream({"b": 2})) == [{"ok": {"b": 2}}]
    try:
        Gated(failing, run).call({})
    except RuntimeError:
        pass
    assert answering.seen == [1, 1] and failing.seen == [1] and run._in_flight == 0
    run.on_signal()  # halted: nothing more is sent, and nothing is counted
    for send in (Gated(answering, run).call, Gated(answering, run).stream):
        try:
            send({})
        except NotSent:
            pass
        else:
            raise AssertionError("a halted run sent a call")
    assert answering.seen == [1, 1] and run._in_flight == 0
