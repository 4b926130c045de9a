"""task_done wakes a waiting worker only when the freed slot lets it take a queued event."""

from unittest.mock import Mock

import pytest

from apiexec.execution.work_queue import Queue


@pytest.fixture
def queue():
    q = Queue(queue_capacity=10, concurrency_limit=2)
    q.not_empty.notify = Mock(wraps=q.not_empty.notify)  # type: ignore[method-assign]
    return q


def test_a_slot_freed_below_the_limit_wakes_nobody(queue):
    queue.put("a")
    assert queue.get() == "a"
    queue.not_empty.notify.reset_mock()
    queue.task_done()  # 1 of 2 slots was in use: nobody waits for a slot
    queue.not_empty.notify.assert_not_called()


def test_a_slot_freed_at_the_limit_with_nothing_queued_wakes_nobody(queue):
    for item in "ab":
        queue.put(item)
    queue.get(), queue.get()
    queue.not_empty.notify.reset_mock()
    queue.task_done()  # the gate was full, but no event waits: a worker woken would find nothing
    queue.not_empty.notify.assert_not_called()


def test_a_slot_freed_at_the_limit_with_an_event_queued_wakes_one(queue):
    for item in "abc":
        queue.put(item)
    queue.get(), queue.get()
    queue.not_empty.notify.reset_mock()
    queue.task_done()
    queue.not_empty.notify.assert_called_once_with()
    assert queue.get(block=False) == "c"
