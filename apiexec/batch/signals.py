"""Stop signals for a batch run, handled on a thread of their own.

``SIGINT`` (Ctrl-C), ``SIGTERM`` (``docker stop``, Kubernetes, systemd,
``timeout``) and ``SIGHUP`` (a closed terminal) must not kill a run with
answers in flight: they are paid for. The Python-level handlers installed
here do nothing; the signal's number reaches a pipe through
:func:`signal.set_wakeup_fd`, written by the interpreter's C-level handler
the instant the signal arrives, whichever thread the kernel delivered it to
(a Python handler would run only when the main thread next runs bytecode,
which may be long after, while it blocks). A watcher thread reads the pipe
and tells the run (``on_signal``), which stops admitting on the first signal
and abandons calls in flight on the second. Nothing is raised into the main
thread at a random point, so no lock or file is ever left half-updated.

Handlers are installed only on the main thread (Python allows no other)
and the previous handlers are restored by :meth:`SignalWatcher.close`.

Example:
    >>> import os, signal, threading
    >>> got = threading.Event()
    >>> watcher = SignalWatcher((signal.SIGUSR1,), got.set)
    >>> os.kill(os.getpid(), signal.SIGUSR1)
    >>> got.wait(5)
    True
    >>> watcher.close()
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

_STOP: bytes = b"\x00"  # written by close(): ends the watcher thread (no signal has number 0)


def _ignore(signum: int, frame: Any) -> None:
    """The Python-level handler: the wakeup fd already told the watcher."""


class SignalWatcher:
    """Calls ``on_signal()`` on its own thread for every signal in ``signals``.

    Args:
        signals: Signal numbers to take over (only on the main thread; a
            signal that cannot be handled here is left alone).
        on_signal: Called once per signal received, on the watcher thread.
    """

    def __init__(self, signals: Iterable[int], on_signal: Callable[[], None]) -> None:
        self._on_signal = on_signal
        self._signals = frozenset(int(s) for s in signals)
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a full pipe must never block the C handler
        self._thread = threading.Thread(target=self._watch, name="apiexec-signals", daemon=True)
        self._thread.start()
        if threading.current_thread() is not threading.main_thread() or not self._signals:
            return
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in self._signals:
            try:
                self._previous[signum] = signal.signal(signum, _ignore)
            except (ValueError, OSError):  # not available on this platform
                logger.debug("cannot handle signal %s here", signum)

    def _watch(self) -> None:
        while True:
            data = os.read(self._read, 64)  # blocks until a signal or close()
            if not data:
                return
            for byte in data:
                if byte == _STOP[0]:
                    return
                if byte not in self._signals:
                    continue  # another handled signal (SIGCHLD...) also wakes the fd
                try:
                    self._on_signal()
                except Exception:
                    logger.exception("signal callback failed")

    def close(self) -> None:
        """Restore the previous handlers and end the watcher. Safe twice."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous_fd, self._previous_fd = self._previous_fd, None
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
        if self._thread.is_alive():
            os.write(self._write, _STOP)
            self._thread.join()
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read = self._write = -1
