"""What every benchmark prints besides its numbers: the machine, the load, tables.

A figure means little without the machine it came from and how busy that
machine was, so every script prints :func:`machine` first and wraps each
measurement in :class:`Load` (load average before and after). Tables are
GitHub markdown, ready to paste into ``docs/benchmarks.md``.

Example:
    >>> print(table(["client", "calls/s"], [["a", "1,234"], ["b", "56"]], align="lr"))
    | client | calls/s |
    |---|---:|
    | a | 1,234 |
    | b | 56 |
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from nginx import find_nginx

ROOT = Path(__file__).resolve().parent.parent


def loadavg() -> str:
    """The 1/5/15-minute load averages, e.g. ``"0.52 0.61 0.70"``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not on every platform
        return "n/a"


class Load:
    """Records the load average when a block starts and when it ends.

    Example:
        >>> with Load() as load:
        ...     pass
        >>> load.text().startswith("load ")
        True
    """

    def __init__(self) -> None:
        self.before = self.after = ""

    def __enter__(self) -> Load:
        self.before = loadavg()
        return self

    def __exit__(self, *exc: object) -> None:
        self.after = loadavg()

    def text(self) -> str:
        """``load <before> -> <after>`` (1/5/15-minute averages)."""
        return f"load {self.before} -> {self.after}"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _git_commit() -> str:
    """The commit measured, and whether apiexec/ had uncommitted changes (then those were measured too)."""
    commit = _git("rev-parse", "--short", "HEAD") or "-"
    if _git("status", "--porcelain", "--", "apiexec"):
        commit += " + uncommitted changes in apiexec/"
    return commit


def _nginx_version() -> str:
    executable = find_nginx()
    if executable is None:
        return "not installed"
    out = subprocess.run([executable, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().rpartition("/")[2] or "?"


def machine() -> str:
    """A markdown paragraph describing this machine and the software measured."""
    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in ("requests", "urllib3", "requests-futures", "httpx", "aiohttp", "requests-ratelimiter",
                     "pyrate-limiter", "tenacity")
    )  # fmt: skip
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"- date: {now}; apiexec {_version('apiexec')} at commit {_git_commit()}\n"
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}\n"
        f"- Python {platform.python_version()} ({sys.implementation.name}); nginx {_nginx_version()}\n"
        f"- libraries: {versions}\n"
        f"- load average (1/5/15 min) now: {loadavg()}"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A GitHub markdown table; ``align`` has one ``l``/``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: float, digits: int = 0) -> str:
    """A number with thousands separators.

    Example:
        >>> num(12345.678), num(0.5, 2)
        ('12,346', '0.50')
    """
    return f"{value:,.{digits}f}"
