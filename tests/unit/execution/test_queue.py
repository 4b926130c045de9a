"""Queue: bound, concurrency gate, prompt stop, and a model-based property test."""

import collections
import queue as stdlib_queue
import threading
import time

import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from apiexec import Queue, QueueConfig, QueueStopped
from tests.helpers import FakeClock


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"queue_capacity": 0}, "queue_capacity"),
        ({"queue_capacity": True}, "queue_capacity"),
        ({"queue_capacity": 1.5}, "queue_capacity"),
        ({"capacity_refresh_time": -1}, "capacity_refresh_time"),
        ({"capacity_refresh_time": float("inf")}, "capacity_refresh_time"),
        ({"concurrency_limit": 0}, "concurrency_limit"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        QueueConfig(**kwargs)


def test_config_is_immutable():
    config = QueueConfig(queue_capacity=5)
    with pytest.raises(AttributeError):
        config.queue_capacity = 6


def test_enqueue_raises_full_after_timeout():
    clock = FakeClock(auto_advance=True)
    q = Queue(queue_capacity=2, capacity_refresh_time=1.0, waiter=clock)
    q.enqueue("a")
    q.enqueue("b")
    with pytest.raises(stdlib_queue.Full):
        q.enqueue("c", timeout=2.5)
    assert clock.now() == 2.5  # waited exactly the timeout, in refresh-time steps
    assert clock.waits == [1.0, 1.0, 0.5]


def test_dequeue_raises_empty_after_timeout_exactly():
    clock = FakeClock(auto_advance=True)
    q = Queue(queue_capacity=2, capacity_refresh_time=10.0, waiter=clock)
    with pytest.raises(stdlib_queue.Empty):
        q.dequeue(timeout=0.25)
    assert clock.now() == 0.25 and clock.waits == [0.25]


def test_enqueue_blocks_until_room():
    q = Queue(queue_capacity=1, capacity_refresh_time=5.0)
    q.enqueue("a")
    done = threading.Event()
    t = threading.Thread(target=lambda: (q.enqueue("b"), done.set()))
    t.start()
    assert not done.wait(0.1)
    assert q.dequeue() == "a"
    assert done.wait(1.0)
    t.join(1)


def test_stop_wakes_blocked_threads_at_once():
    q = Queue(queue_capacity=1, capacity_refresh_time=30.0, concurrency_limit=1)
    q.enqueue("a")
    errors = []

    def blocked(fn):
        try:
            fn()
        except QueueStopped as exc:
            errors.append(exc)

    full_put = threading.Thread(target=blocked, args=(lambda: q.enqueue("b"),))
    q.dequeue()  # takes the only slot
    q.enqueue("c")
    gated_get = threading.Thread(target=blocked, args=(q.dequeue,))
    full_put.start()
    gated_get.start()
    time.sleep(0.05)
    start = time.monotonic()
    q.stop()
    full_put.join(2)
    gated_get.join(2)
    assert time.monotonic() - start < 0.5  # not the 30 s refresh time
    assert len(errors) == 2
    assert q.is_stopped()
    with pytest.raises(QueueStopped):
        q.enqueue("d")
    with pytest.raises(QueueStopped):
        q.start()


def test_task_done_too_often_raises():
    q = Queue(queue_capacity=3)
    q.enqueue(1)
    q.dequeue()
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()


def test_drain_returns_queued_events_in_order():
    q = Queue(queue_capacity=5, concurrency_limit=1)
    for i in range(4):
        q.enqueue(i)
    assert q.dequeue() == 0
    assert q.drain() == [1, 2, 3]
    assert q.qsize() == 0
    assert q.unfinished_tasks == 1


def test_dequeue_timeout_when_gate_full():
    q = Queue(queue_capacity=5, concurrency_limit=1)
    q.enqueue(1)
    q.enqueue(2)
    q.dequeue()
    with pytest.raises(stdlib_queue.Empty):
        q.dequeue(timeout=0.05)
    q.task_done()
    assert q.dequeue(timeout=0.5) == 2


def test_nonblocking_forms():
    q = Queue(queue_capacity=1)
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    q.put_nowait(1)
    with pytest.raises(stdlib_queue.Full):
        q.put_nowait(2)
    with pytest.raises(ValueError):
        q.enqueue(3, timeout=-1)


def test_many_producers_and_consumers_lose_nothing():
    q = Queue(queue_capacity=8, capacity_refresh_time=1.0, concurrency_limit=3)
    n_producers, per = 8, 250
    seen = collections.Counter()
    lock = threading.Lock()
    in_use = [0]
    max_in_use = [0]

    def produce(p):
        for i in range(per):
            q.enqueue((p, i))

    def consume():
        while True:
            try:
                item = q.dequeue(timeout=2.0)
            except (stdlib_queue.Empty, QueueStopped):
                return
            with lock:
                in_use[0] += 1
                max_in_use[0] = max(max_in_use[0], in_use[0])
                seen[item] += 1
                in_use[0] -= 1
            q.task_done()

    producers = [
        threading.Thread(target=produce, args=(p,)) for p in range(n_producers)
    ]
    consumers = [threading.Thread(target=consume) for _ in range(6)]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join(10)
    q.join()
    q.stop()
    for t in consumers:
        t.join(5)
    assert len(seen) == n_producers * per
    assert set(seen.values()) == {1}
    assert max_in_use[0] <= 3


class QueueModel(RuleBasedStateMachine):
    """The Queue behaves like a bounded FIFO with `limit` slots."""

    def __init__(self):
        super().__init__()
        self.q = Queue(queue_capacity=4, capacity_refresh_time=1.0, concurrency_limit=2)
        self.items = collections.deque()
        self.taken = 0
        self.counter = 0

    @rule()
    def enqueue(self):
        if len(self.items) >= 4:
            with pytest.raises(stdlib_queue.Full):
                self.q.enqueue("x", timeout=0)
            return
        self.counter += 1
        self.q.enqueue(self.counter)
        self.items.append(self.counter)

    @rule()
    def dequeue(self):
        if not self.items or self.taken >= 2:
            with pytest.raises(stdlib_queue.Empty):
                self.q.dequeue(timeout=0)
            return
        assert self.q.dequeue() == self.items.popleft()
        self.taken += 1

    @precondition(lambda self: self.taken > 0)
    @rule()
    def task_done(self):
        self.q.task_done()
        self.taken -= 1

    @invariant()
    def sizes_match(self):
        assert self.q.qsize() == len(self.items)
        assert self.q.unfinished_tasks == len(self.items) + self.taken


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
