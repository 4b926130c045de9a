"""ThreadFit: the decisions, on fake clocks (no thread runs here)."""

import pytest

from apiexec.execution.thread_fit import BUSY_HIGH, BUSY_LOW, EPOCH, MAX_HOLD, MIN_CALLS, UP_GAIN, ThreadFit


class Clocks:
    """A wall clock and a CPU clock moved by hand, and a call counter."""

    def __init__(self):
        self.wall = 0.0
        self.cpu = 0.0
        self.done = 0

    def epoch(self, busy, calls, seconds=EPOCH):
        self.wall += seconds
        self.cpu += busy * seconds
        self.done += calls


@pytest.fixture
def clocks():
    return Clocks()


def fit_on(clocks, ceiling=16):
    return ThreadFit(ceiling, now=lambda: clocks.wall, cpu=lambda: clocks.cpu)


def step(fit, clocks, busy, calls, seconds=EPOCH):
    clocks.epoch(busy, calls, seconds)
    return fit.decide(clocks.done)


def settled_on_one_thread(clocks):
    """A fit that tried one thread and kept it."""
    fit = fit_on(clocks)
    step(fit, clocks, busy=1.0, calls=800)
    step(fit, clocks, busy=1.0, calls=800)
    assert fit.allowed == 1
    return fit


def test_every_thread_may_run_at_first(clocks):
    fit = fit_on(clocks, ceiling=32)
    assert fit.allowed == 32


def test_nothing_changes_before_the_epoch_ends(clocks):
    fit = fit_on(clocks)
    assert step(fit, clocks, busy=1.0, calls=500, seconds=EPOCH / 2) == 16
    assert fit.due(clocks.wall) is False
    assert fit.left(clocks.wall) == pytest.approx(EPOCH / 2)


def test_a_busy_client_tries_one_thread_and_keeps_it_when_the_pace_holds(clocks):
    fit = fit_on(clocks)
    assert step(fit, clocks, busy=1.0, calls=200) == 1
    assert step(fit, clocks, busy=1.0, calls=260) == 1  # faster with one: kept
    for _ in range(10):  # nothing lower to try, nothing to gain higher while busy
        assert step(fit, clocks, busy=1.0, calls=260) == 1


def test_a_pace_just_inside_the_tolerance_keeps_fewer_threads(clocks):
    fit = fit_on(clocks)
    step(fit, clocks, busy=1.0, calls=1000)
    assert step(fit, clocks, busy=1.0, calls=960) == 1  # -4 %: same pace, less CPU


def test_a_slower_pace_goes_back_then_halves_instead(clocks):
    fit = fit_on(clocks)
    assert step(fit, clocks, busy=1.0, calls=800) == 1
    assert step(fit, clocks, busy=1.0, calls=300) == 16  # one thread is too slow: back
    assert step(fit, clocks, busy=1.0, calls=800) == 16  # waits one epoch
    assert step(fit, clocks, busy=1.0, calls=800) == 8  # then half as many
    assert step(fit, clocks, busy=1.0, calls=800) == 4  # the same pace: on down
    assert step(fit, clocks, busy=1.0, calls=500) == 8  # slower: back


def test_moves_that_do_not_pay_are_tried_less_and_less_often(clocks):
    fit = fit_on(clocks)
    step(fit, clocks, busy=1.0, calls=800)
    step(fit, clocks, busy=1.0, calls=300)  # one thread: slower, back to 16
    holds = []
    for _ in range(8):
        waited = 0
        while step(fit, clocks, busy=1.0, calls=800) == 16:
            waited += 1
            assert waited <= MAX_HOLD
        holds.append(waited)
        assert step(fit, clocks, busy=1.0, calls=500) == 16  # half as many: slower again
    assert holds[:6] == [1, 2, 4, 8, 16, 32]
    assert max(holds) == MAX_HOLD


def test_a_waiting_client_lets_every_thread_run_at_once(clocks):
    fit = settled_on_one_thread(clocks)
    assert step(fit, clocks, busy=BUSY_LOW / 2, calls=3) == 16


def test_fewer_threads_that_leave_the_process_waiting_did_not_pay(clocks):
    """The one thread left waits (its model is rate-limited) while other calls could run."""
    fit = fit_on(clocks)
    assert step(fit, clocks, busy=1.0, calls=800) == 1
    assert step(fit, clocks, busy=0.05, calls=2) == 16  # back, and held...
    assert step(fit, clocks, busy=1.0, calls=800) == 16
    assert step(fit, clocks, busy=1.0, calls=800) == 8  # ...then half as many, not one again
    assert step(fit, clocks, busy=0.05, calls=2) == 16
    for _ in range(2):  # held twice as long this time
        assert step(fit, clocks, busy=1.0, calls=800) == 16
    assert step(fit, clocks, busy=1.0, calls=800) == 8


@pytest.mark.parametrize("busy", [0.0, 1.0], ids=["idle", "busy with other work"])
def test_calls_stuck_for_a_whole_epoch_get_every_thread(clocks, busy):
    """No call finished: the turns are held by stuck calls, whatever else keeps the CPU busy."""
    fit = settled_on_one_thread(clocks)
    assert step(fit, clocks, busy=busy, calls=0) == 16


def test_too_few_calls_while_busy_extend_the_epoch(clocks):
    fit = fit_on(clocks)
    assert step(fit, clocks, busy=1.0, calls=MIN_CALLS - 1) == 16
    assert step(fit, clocks, busy=1.0, calls=MIN_CALLS - 1) == 1  # counted over both epochs


def test_a_half_busy_client_tries_more_threads_and_keeps_them_for_a_gain(clocks):
    fit = fit_on(clocks)
    step(fit, clocks, busy=1.0, calls=800)  # 16 -> 1
    step(fit, clocks, busy=1.0, calls=800)  # kept
    middle = (BUSY_LOW + BUSY_HIGH) / 2
    assert step(fit, clocks, busy=middle, calls=800) == 2
    assert step(fit, clocks, busy=middle, calls=int(800 * (1 + UP_GAIN)) + 10) == 4  # it paid: on up
    assert step(fit, clocks, busy=middle, calls=850) == 2  # no gain: back


def test_a_single_worker_stays_single(clocks):
    fit = fit_on(clocks, ceiling=1)
    for busy in (1.0, 0.0, 0.7):
        assert step(fit, clocks, busy=busy, calls=500) == 1


def test_a_ceiling_below_one_is_one():
    assert ThreadFit(0).allowed == 1


def test_repr_names_the_count(clocks):
    assert repr(fit_on(clocks, ceiling=4)) == "ThreadFit(allowed=4, ceiling=4)"


def test_too_few_calls_put_the_next_decision_an_epoch_away(clocks):
    """No busy loop: a parked ticker waits a whole epoch again, not a millisecond."""
    fit = fit_on(clocks)
    step(fit, clocks, busy=1.0, calls=3)
    assert fit.due(clocks.wall) is False
    assert fit.left(clocks.wall) == pytest.approx(EPOCH)


def test_a_model_paused_again_and_again_does_not_bring_one_thread_back_every_time(clocks):
    fit = fit_on(clocks)
    assert step(fit, clocks, busy=1.0, calls=800) == 1
    assert step(fit, clocks, busy=0.05, calls=2) == 16  # the one thread waited: back
    seen = []
    for _ in range(6):  # busy, then paused twice, again and again
        seen.append(step(fit, clocks, busy=1.0, calls=800))
        seen.append(step(fit, clocks, busy=0.05, calls=2))
        seen.append(step(fit, clocks, busy=0.05, calls=2))
    assert 1 not in seen
