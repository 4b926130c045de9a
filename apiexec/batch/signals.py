"""Stop signals for a batch run, handled on a thread of their own.

``SIGINT`` (Ctrl-C), ``SIGTERM`` (``docker stop``, Kubernetes, systemd,
``timeout``) and ``SIGHUP`` (a closed terminal) must not kill a run with
answers in flight: they are paid for. The handler installed here does the
one thing that is safe inside a signal handler: it writes a byte to a pipe.
A watcher thread reads the pipe and tells the run (``on_signal``), which
stops admitting on the first signal and abandons calls in flight on the
second. Nothing is raised into the main thread at a random point, so no
lock or file is ever left half-updated.

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

_STOP: bytes = b"\x00"  # written by close(): ends the watcher thread


class SignalWatcher:
    """Calls ``on_signal()`` on its own thread for every signal in ``signals``.

    Args:
        signals: Signal numbers to take over (only on the main thread; a
            signal that cannot be handled here is left alone).
        on_signal: Called once per signal received, on the watcher thread.
    """

    def __init__(self, signals: Iterable[int], on_signal: Callable[[], None]) -> None:
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a full pipe must never block a handler
        self._thread = threading.Thread(target=self._watch, name="apiexec-signals", daemon=True)
        self._thread.start()
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in signals:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # not available on this platform
                logger.debug("cannot handle signal %s here", signum)

    def _handle(self, signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write, b"s")

    def _watch(self) -> None:
        while True:
            data = os.read(self._read, 64)  # blocks until a signal or close()
            for byte in data:
                if byte == _STOP[0]:
                    return
                try:
                    self._on_signal()
                except Exception:
                    logger.exception("signal callback failed")
            if not data:
                return

    def close(self) -> None:
        """Restore the previous handlers and end the watcher. Safe twice."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if self._thread.is_alive():
            os.write(self._write, _STOP)
            self._thread.join()
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read = self._write = -1
