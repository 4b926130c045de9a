"""Lanes: one model's lines never take the whole window while others wait."""

from apiexec.batch.lanes import Lanes, line_key


class Recorder:
    def __init__(self, fail_at=None):
        self.sent = []
        self.fail_at = fail_at

    def __call__(self, item):
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            return False
        self.sent.append(item)
        return True


def no_wait(ready):
    assert ready(), "the lanes waited although nothing could change"


def test_the_key_of_a_line():
    assert line_key({"model": "gpt-4o"}, "/v1/chat/completions") == "gpt-4o"
    assert line_key({"input": "x"}, "/v1/embeddings") == "/v1/embeddings"
    assert line_key({"model": 3}, None) == "*"


def test_one_lane_alone_may_fill_the_window():
    lanes, send = Lanes(4, no_wait), Recorder()
    for i in range(4):
        assert lanes.offer("m", i, send)
    assert send.sent == [0, 1, 2, 3]
    lanes.offer("m", 4, send)
    assert lanes.held == 1


def test_with_two_lanes_each_takes_at_most_half_and_order_holds_within_a_lane():
    lanes, send = Lanes(4, no_wait), Recorder()
    for i in range(6):
        lanes.offer("slow", f"s{i}", send)
    lanes.offer("fast", "f0", send)
    assert send.sent == ["s0", "s1", "s2", "s3"] and lanes.held == 3
    for _ in range(3):
        lanes.done("slow")  # slow holds 1 of the window's 4 places
    lanes.pump(send)
    assert send.sent[4:] == ["s4", "f0"]  # earliest first; then slow holds half and s5 waits for it
    assert lanes.held == 1
    lanes.done("fast")
    lanes.offer("fast", "f1", send)
    assert send.sent[-1] == "f1"  # a place is free, slow holds half: fast goes past s5


def test_when_the_hold_is_full_offer_waits_for_room():
    waits = []
    lanes = None

    def wait(ready):
        waits.append(1)
        lanes.done("m")  # a call ends while the reader waits
        assert ready()

    lanes = Lanes(2, wait, hold=2)
    send = Recorder()
    for i in range(4):
        assert lanes.offer("m", i, send)
        assert lanes.held < 2  # never more held than the bound once offer returns
    assert waits and send.sent == [0, 1, 2]


def test_offer_does_not_wait_once_a_pump_sent_every_held_line():
    """A hold no bigger than the window: one pump may send all of it; then there is nothing to wait for."""
    lanes = None

    def wait(ready):
        while lanes._in_window:
            lanes.done("m")  # every call in the window ends while the reader waits
        assert ready(), "waited for a held line to go although none was left"

    lanes = Lanes(2, wait, hold=2)
    send = Recorder()
    for i in range(3):
        assert lanes.offer("m", i, send)
    assert send.sent == [0, 1] and lanes.held == 1  # the window is full: 2 is held
    lanes.done("m")
    lanes.done("m")  # the window empties; nobody pumps until the next line
    assert lanes.offer("m", 3, send)  # held too (2 waits): the hold is full, yet one pump sends both
    assert send.sent == [0, 1, 2, 3] and lanes.held == 0


def test_drain_sends_everything_held():
    lanes, send = Lanes(2, lambda ready: None), Recorder()
    for i in range(5):
        lanes.offer("m", i, send)
    def wait(ready):
        lanes.done("m")
        assert ready()

    lanes._wait = wait
    assert lanes.drain(send)
    assert send.sent == [0, 1, 2, 3, 4] and lanes.held == 0


def test_a_refusing_send_or_a_halted_run_stops_everything():
    lanes, send = Lanes(8, no_wait), Recorder(fail_at=2)
    assert lanes.offer("m", 0, send) and lanes.offer("m", 1, send)
    assert lanes.offer("m", 2, send) is False
    assert lanes.stopped and lanes.drain(send) is False
    halted = [False]
    lanes = Lanes(8, no_wait, halted=lambda: halted[0])
    halted[0] = True
    assert lanes.offer("m", 0, Recorder()) is False
