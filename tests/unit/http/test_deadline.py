"""The call deadline and the socket watchdog, on a fake clock and a socketpair."""

import math
import socket
import threading
import time

import pytest

from apiexec.call_context import call_context
from apiexec.errors import DeadlineExceeded
from apiexec.http.deadline import WATCHDOG, CallDeadline, Watchdog
from tests.helpers import FakeClock


def test_deadline_counts_from_its_creation():
    clock = FakeClock(100.0)
    deadline = CallDeadline(30.0, waiter=clock)
    assert deadline.at == 130.0 and deadline.timeout == 30.0
    clock.advance(29.5)
    deadline.check("response")
    clock.advance(0.5)
    with pytest.raises(DeadlineExceeded) as info:
        deadline.check("response")
    assert info.value.phase == "response" and info.value.timeout == 30.0
    assert "30s" in str(info.value) and "reading the response" in str(info.value)


def test_the_executors_earlier_deadline_wins():
    clock = FakeClock(100.0)
    with call_context(deadline=110.0, timeout=10.0):
        deadline = CallDeadline(30.0, waiter=clock)
    assert deadline.at == 110.0 and deadline.timeout == 10.0


def test_the_configs_earlier_deadline_wins():
    clock = FakeClock(100.0)
    with call_context(deadline=500.0, timeout=400.0):
        deadline = CallDeadline(30.0, waiter=clock)
    assert deadline.at == 130.0 and deadline.timeout == 30.0


def _blocked_reader(sock, result):
    try:
        result.append(sock.recv(10))
    except OSError as exc:
        result.append(exc)


def test_watchdog_ends_a_blocked_read_when_the_alarm_is_due():
    left, right = socket.socketpair()
    try:
        alarm = WATCHDOG.alarm()
        alarm.attach(type("Conn", (), {"sock": left})())
        result = []
        reader = threading.Thread(target=_blocked_reader, args=(left, result))
        reader.start()
        start = time.monotonic()
        alarm.set(time.monotonic() + 0.2, "deadline")
        reader.join(5)
        assert not reader.is_alive()
        assert 0.15 <= time.monotonic() - start < 2.0
        assert alarm.fired == "deadline"
        assert result == [b""] or isinstance(result[0], OSError)
    finally:
        left.close()
        right.close()


def test_a_cancelled_or_detached_alarm_never_touches_the_socket():
    left, right = socket.socketpair()
    try:
        conn = type("Conn", (), {"sock": left})()
        cancelled, detached = WATCHDOG.alarm(), WATCHDOG.alarm()
        for alarm in (cancelled, detached):
            alarm.attach(conn)
            alarm.set(time.monotonic() + 0.05, "deadline")
        cancelled.cancel()
        detached.detach(conn)
        time.sleep(0.3)
        right.sendall(b"ok")
        left.settimeout(2)
        assert left.recv(2) == b"ok"  # still open and readable
        assert cancelled.fired is None
    finally:
        left.close()
        right.close()


def test_a_rescheduled_alarm_fires_at_its_new_time_only():
    clock = FakeClock(0.0)
    dog = Watchdog(clock)
    alarm = dog.alarm()
    alarm.set(1.0, "idle")
    alarm.set(5.0, "deadline")  # the earlier entry is stale now
    clock.advance(2.0)
    with dog.lock:
        dog._due.notify()
    time.sleep(0.1)
    assert alarm.fired is None
    clock.advance(4.0)
    with dog.lock:
        dog._due.notify()
    for _ in range(100):
        if alarm.fired:
            break
        time.sleep(0.01)
    assert alarm.fired == "deadline"
    assert alarm.seconds_left() == -1.0


def test_an_alarm_already_due_shuts_a_late_attached_socket_at_once():
    left, right = socket.socketpair()
    try:
        alarm = WATCHDOG.alarm()
        alarm.set(time.monotonic() - 1, "deadline")
        for _ in range(200):
            if alarm.fired:
                break
            time.sleep(0.01)
        alarm.attach(type("Conn", (), {"sock": left})())
        left.settimeout(2)
        assert left.recv(10) == b""  # shut down: EOF at once
    finally:
        left.close()
        right.close()


def test_dead_entries_do_not_pile_up_in_a_busy_process():
    """One alarm per call for a whole total_timeout would grow without bound: dead ones are compacted."""
    clock = FakeClock(0.0)
    dog = Watchdog(clock)
    for _ in range(20_000):
        alarm = dog.alarm()
        alarm.set(600.0, "deadline")
        alarm.cancel()
    assert dog.pending() < 5_000


def _wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.005)
    return predicate()


def test_arming_far_alarms_wakes_nothing_and_cancelled_ones_leave_no_trace():
    """The hot path: each call arms its deadline far ahead and cancels it soon after."""
    dog = Watchdog()
    first = dog.alarm()
    far = time.monotonic() + 600
    first.set(far, "deadline")
    assert _wait_for(lambda: dog._wake_at == far)  # the thread looked and sleeps until then
    notified = []
    original = dog._due.notify
    dog._due.notify = lambda n=1: (notified.append(n), original(n))
    for i in range(1_000):
        alarm = dog.alarm()
        alarm.set(far + 1 + i, "deadline")
        alarm.cancel()
    assert notified == []
    assert dog.pending() == 1
    first.cancel()
    assert dog.pending() == 0


def test_an_alarm_due_before_the_next_look_wakes_the_watchdog():
    left, right = socket.socketpair()
    try:
        dog = Watchdog()
        far = dog.alarm()
        far.set(time.monotonic() + 600, "deadline")
        assert _wait_for(lambda: dog._wake_at < math.inf)
        near = dog.alarm()
        near.attach(type("Conn", (), {"sock": left})())
        start = time.monotonic()
        near.set(start + 0.1, "idle")
        left.settimeout(5)
        assert left.recv(10) == b""  # shut down by the watchdog
        assert 0.05 <= time.monotonic() - start < 3.0
        assert near.fired == "idle" and far.fired is None
        assert dog.pending() == 1  # the fired one left the active set
        far.cancel()
    finally:
        left.close()
        right.close()


def test_a_cancelled_alarm_is_never_fired_even_when_due():
    clock = FakeClock(0.0)
    dog = Watchdog(clock)
    alarm = dog.alarm()
    alarm.set(1.0, "deadline")
    alarm.cancel()
    clock.advance(5.0)
    with dog.lock:
        dog._due.notify()
    time.sleep(0.05)
    assert alarm.fired is None and dog.pending() == 0
