"""One writer per output file: an exclusive, non-blocking lock.

The lock is ``fcntl.flock`` on a ``<output>.lock`` file beside the output
(the output itself is replaced at compaction, which would drop a lock held
on it). The kernel releases it when the process dies, even by ``kill -9``,
so a stale lock file never blocks a later run. A second run on the same
output fails at once with :class:`OutputLocked` instead of sending the same
requests twice.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> with OutputLock(out):
    ...     try:
    ...         OutputLock(out).acquire()
    ...     except OutputLocked as exc:
    ...         print("second run refused")
    second run refused
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from apiexec.errors import APIExecError


class OutputLocked(APIExecError):
    """Another run holds the output file."""


class OutputLock:
    """An exclusive lock on ``path`` (through ``<path>.lock``).

    Args:
        path: The output file to protect.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or fail at once.

        Raises:
            OutputLocked: Another process holds it.
            OSError: The lock file cannot be created.
        """
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputLocked(
                    f"{self.path} is in use by another apiexec run (lock {self.lock_path}); "
                    "wait for it to finish or choose another output"
                ) from None
            # A run that just finished may have unlinked the file we opened:
            # holding a lock on a deleted file protects nothing, so retry.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file and release the lock. Safe twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:  # unlink while still holding it: no one can lock the old file meanwhile
            self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
