"""Small test helpers shared by several test modules."""

import threading
import time

from apiexec import Event


class Recorder:
    """Counts invocations per key and remembers the start order, thread-safely."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}
        self.order = []
        self.start_times = []

    def note(self, key):
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            self.order.append(key)
            self.start_times.append(time.monotonic())


def work(recorder, key, *, delay=0.0, gate=None, result=None, error=None):
    """An Event that records its start, optionally waits, then returns or raises."""

    def run():
        recorder.note(key)
        if gate is not None:
            gate.wait(10)
        if delay:
            time.sleep(delay)
        if error is not None:
            raise error
        return key if result is None else result

    return Event(run)
