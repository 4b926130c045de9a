"""Wall time, CPU and peak RSS of one command, measured on that command alone.

``getrusage(RUSAGE_CHILDREN)`` mixes every child waited for so far, and even
``os.wait4`` on a direct child over-reports its peak RSS on Linux: a forked
child starts with a copy of the parent's memory, and ``exec`` keeps that
copy's high-water mark in the child's ``ru_maxrss``. A benchmark process that
has loaded aiohttp, httpx and a few thousand responses would then "measure"
its own size. So the command is started by a tiny launcher (a bare Python
with ``os`` and ``json`` only, about 10 MiB): the launcher forks and execs the
command, ``wait4``s for it and writes its rusage to a file. The command's
figure is then max(its own peak, the launcher's ~10 MiB) - its own.

Example:
    >>> usage = run([sys.executable, "-c", "x = bytearray(64 << 20)"])
    >>> usage.exit_code, usage.peak_rss_mib > 64
    (0, True)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Longest a measured command may run (seconds) before it is killed.
DEFAULT_TIMEOUT: Final = 3600.0

# argv: report path, command... ; exit status: the command's (128 + signal if killed).
_LAUNCHER: Final = r"""
import json, os, sys
report, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    json.dump({"exit_code": code, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}, f)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class Usage:
    """What one command cost."""

    wall: float
    cpu: float  # user + system seconds
    peak_rss_mib: float
    exit_code: int  # negative: killed by that signal
    stderr: str
    timed_out: bool = False


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Usage:
    """Runs ``cmd`` (stdin and stdout closed, stderr kept) and measures it alone.

    A command still running after ``timeout`` seconds is killed; its usage
    is then unknown (NaN) and ``timed_out`` is set.

    Raises:
        RuntimeError: The launcher could not report (the command could not be started).
    """
    with tempfile.TemporaryDirectory(prefix="apiexec-bench-usage-") as tmp:
        report = Path(tmp, "usage.json")
        with Path(tmp, "stderr").open("w+b") as err:
            start = time.perf_counter()
            launcher = subprocess.Popen(
                [sys.executable, "-S", "-c", _LAUNCHER, str(report), *cmd],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                start_new_session=True,  # one group: a timeout or Ctrl-C here ends the command too
            )  # fmt: skip
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                _kill_group(launcher.pid)

            killer = threading.Timer(timeout, expire)
            killer.start()
            try:
                launcher.wait()
            finally:
                killer.cancel()
                if launcher.poll() is None:  # interrupted here: leave nothing running
                    _kill_group(launcher.pid)
                    launcher.wait()
            wall = time.perf_counter() - start
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if expired.is_set():
            nan = float("nan")
            return Usage(wall, nan, nan, -signal.SIGKILL, stderr + f"\nkilled after {timeout:g} s", timed_out=True)
        if not report.exists():
            raise RuntimeError(f"could not run {cmd[0]!r}: {stderr[-500:]}")
        data = json.loads(report.read_text())
    return Usage(wall, data["cpu"], data["maxrss_kib"] / 1024, data["exit_code"], stderr)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
