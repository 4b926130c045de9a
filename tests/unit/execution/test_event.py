"""Event and Execution: recording outcomes, never raising for call failures."""

import pytest

from apiexec import Event, Execution, ExecutionStatus
from apiexec.call_context import call_context, note_attempt
from apiexec.execution.event import describe_error


def test_event_records_success_duration_and_one_attempt():
    event = Event(lambda a, b: a + b, {"a": 1, "b": 2})
    assert event.execution.status is ExecutionStatus.PENDING
    event.invoke()
    assert event.execution.status is ExecutionStatus.COMPLETED
    assert event.execution.result == 3
    assert event.execution.error is None
    assert event.execution.duration >= 0
    assert event.execution.attempts == 1


def test_event_counts_http_attempts_reported_by_the_callee():
    def three_attempts():
        for _ in range(3):
            note_attempt()
        return "ok"

    event = Event(three_attempts)
    event.invoke()
    assert event.execution.attempts == 3


def test_failure_is_recorded_not_raised():
    event = Event(lambda: 1 / 0)
    event.invoke()
    assert event.execution.status is ExecutionStatus.FAILED
    assert event.execution.error == "ZeroDivisionError: division by zero"
    assert isinstance(event.execution.exception, ZeroDivisionError)


def test_ctrl_c_is_recorded_as_cancelled_and_reraised():
    def interrupted():
        raise KeyboardInterrupt

    event = Event(interrupted)
    with pytest.raises(KeyboardInterrupt):
        event.invoke()
    assert event.execution.status is ExecutionStatus.CANCELLED
    assert event.execution.error == "KeyboardInterrupt"


def test_event_without_function_is_a_type_error():
    with pytest.raises(TypeError, match="no function"):
        Event().invoke()


def test_ids_are_unique_uuid4_and_repr_is_short():
    a, b = Event(int), Event(int)
    assert a.id != b.id and a.id.version == 4
    assert a.created_at > 0
    assert repr(a) == f"Event(id={a.id}, status=pending)"
    assert "exception" not in repr(Execution())


def test_statuses_know_which_are_terminal():
    assert {s for s in ExecutionStatus if s.is_terminal} == {
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    }


def test_describe_error_uses_first_line_only():
    assert describe_error(ValueError("first\nsecond")) == "ValueError: first"
    assert describe_error(RuntimeError()) == "RuntimeError"


def test_nested_context_is_joined_not_replaced():
    with call_context() as outer:
        Event(note_attempt).invoke()
    assert outer.attempts == 1
