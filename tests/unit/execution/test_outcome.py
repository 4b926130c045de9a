"""resolve(): every future ends in exactly one state, whatever state it was in."""

import concurrent.futures as cf

import pytest

from apiexec.execution.event import ExecutionStatus
from apiexec.execution.outcome import resolve, start_running


def _running() -> cf.Future:
    future: cf.Future = cf.Future()
    assert start_running(future)
    return future


def test_a_running_future_takes_the_result_or_the_error():
    done, failed = _running(), _running()
    resolve(done, ExecutionStatus.COMPLETED, 42, None)
    resolve(failed, ExecutionStatus.FAILED, None, ValueError("no"))
    assert done.result(timeout=0) == 42
    assert isinstance(failed.exception(timeout=0), ValueError)


def test_a_running_future_given_up_at_the_last_step_raises_cancelled():
    future = _running()
    resolve(future, ExecutionStatus.CANCELLED, None, None)
    assert not future.cancelled()  # a running future cannot be cancelled: it ends with the error
    with pytest.raises(cf.CancelledError):
        future.result(timeout=0)


def test_a_pending_future_is_cancelled_and_a_finished_one_is_left_alone():
    pending: cf.Future = cf.Future()
    resolve(pending, ExecutionStatus.CANCELLED, None, None)
    assert pending.cancelled()
    finished = _running()
    finished.set_result("first")
    resolve(finished, ExecutionStatus.COMPLETED, "second", None)
    resolve(finished, ExecutionStatus.FAILED, None, ValueError("late"))
    assert finished.result(timeout=0) == "first"


def test_a_pending_future_takes_a_result_too():
    pending: cf.Future = cf.Future()
    resolve(pending, ExecutionStatus.COMPLETED, "x", None)
    assert pending.result(timeout=0) == "x"
