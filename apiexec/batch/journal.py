"""The output journal of ``apiexec run``: resume, append, compact.

The output is **append-only** while a run goes: one row per answered call
(see :mod:`apiexec.batch.rows`), each written with one ``write(2)`` the
moment its answer arrives, so a crash (even ``kill -9``) loses nothing
written and leaves at most a torn last line. A write that fails (disk full)
is cut back off the file, so the file stays whole.

Opening an existing output:

* it must be an apiexec journal: every row records a fingerprint
  (:func:`~apiexec.batch.rows.fingerprint_of`).
  Anything else is refused (:class:`NotAJournal`) and left untouched,
  unless ``force=True``;
* a torn last line is cut off; a complete last row that only lacks its
  newline is kept (the newline is added);
* the rows that succeeded are returned as ``custom_id`` + fingerprint keys:
  a resumed run skips a line only when both match.

When a run has read its whole input, :meth:`Journal.compact` keeps one row per
input line (its success, else its latest failure). Rows whose ``custom_id``
is not in the input, or whose fingerprint shows a changed request, are
never silently kept: they are moved to ``<output>.set-aside.jsonl``.

Example:
    >>> journal = Journal(Path("results.jsonl"))            # doctest: +SKIP
    >>> done = journal.open()                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from apiexec.batch.id_set import IdSet
from apiexec.batch.rows import fingerprint_of, is_success
from apiexec.errors import APIExecError

logger = logging.getLogger(__name__)

#: Suffix of the file receiving rows that no longer belong to the output.
SET_ASIDE_SUFFIX: Final = ".set-aside.jsonl"


class NotAJournal(APIExecError):
    """The output file exists but was not written by apiexec."""


def row_key(custom_id: str, fp: str) -> str:
    """The key of a request: its ``custom_id`` and fingerprint.

    Example:
        >>> row_key("q1", "ab12")
        'q1\\x00ab12'
    """
    return f"{custom_id}\x00{fp}"


def done_marker(custom_id: str) -> str:
    """The entry saying "``custom_id`` has a successful row" (whatever its request)."""
    return "\x01" + custom_id


def key_of(row: Any) -> str | None:
    """The request key of a journal row, or None for a foreign row."""
    if not isinstance(row, dict):
        return None
    custom_id, fp = row.get("custom_id"), fingerprint_of(row)
    if not isinstance(custom_id, str) or not isinstance(fp, str):
        return None
    return row_key(custom_id, fp)


@dataclass(frozen=True)
class Compaction:
    """What :meth:`Journal.compact` did.

    Attributes:
        dropped: Superseded rows removed (older tries of the same request).
        set_aside: Rows moved to the set-aside file.
        aside_path: That file.
    """

    dropped: int = 0
    set_aside: int = 0
    aside_path: Path | None = None


class Journal:
    """One append-only output file (thread-safe writes).

    Args:
        path: The output JSONL file.
        force: Use a file that is not an apiexec journal (its rows are set
            aside at compaction, never deleted).
    """

    def __init__(self, path: Path, *, force: bool = False) -> None:
        self.path = path
        self.force = force
        #: Lines the file held when opened (at least 1 when any was foreign).
        self.rows_before = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0

    @property
    def aside_path(self) -> Path:
        """Where rows that no longer belong here are moved."""
        return self.path.with_name(self.path.name + SET_ASIDE_SUFFIX)

    # -- opening ----------------------------------------------------------------

    def open(self) -> IdSet:
        """Check the file, repair its tail, open it; return the keys done.

        Returns:
            An on-disk set holding, for every successful row, its
            :func:`row_key` and its :func:`done_marker` (the caller closes it).

        Raises:
            NotAJournal: The file holds rows apiexec did not write (and not ``force``).
            OSError: The file cannot be read or opened.
        """
        done = IdSet()
        try:
            if self.path.exists() and self.path.stat().st_size > 0:
                self._check_is_journal()
                self._repair_tail()
                done.update(self._successful_keys())
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size
        except BaseException:
            done.close()
            raise
        return done

    def _check_is_journal(self) -> None:
        for index, text, complete in self._lines():
            if not text.strip() or (not complete and _parse(text) is None):
                continue  # blank, or a torn tail (only the last line lacks a newline; repaired next)
            self.rows_before += 1
            if key_of(_parse(text)) is None:
                if self.force:
                    logger.warning("%s: line %d was not written by apiexec; --force: using it", self.path, index + 1)
                    self.rows_before = max(self.rows_before, 1)
                    return
                raise NotAJournal(
                    f"{self.path} is not an apiexec output file (line {index + 1} is not an apiexec row); "
                    "refusing to modify it: choose another output, or pass --force to use it anyway "
                    f"(its rows would be moved to {self.aside_path.name})"
                )

    def _repair_tail(self) -> None:
        """Cut a torn last line; give a complete last row its missing newline."""
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            start = _last_line_start(handle, size)
            handle.seek(start)
            if _parse(handle.read(size - start).decode("utf-8", "replace")) is not None:
                handle.seek(size)
                handle.write(b"\n")
                return
            handle.truncate(start)
            logger.warning("%s: removed a torn last line left by an interrupted run", self.path)

    def _successful_keys(self) -> Iterator[str]:
        for _, row in self._rows():
            key = key_of(row)
            if key is not None and is_success(row):
                yield key
                yield done_marker(row["custom_id"])

    def successful_keys(self) -> IdSet:
        """:func:`row_key` of every successful row now in the file (the caller closes the set)."""
        keys = IdSet()
        try:
            keys.update(key for _, row in self._rows() if is_success(row) and (key := key_of(row)) is not None)
        except BaseException:
            keys.close()
            raise
        return keys

    # -- writing ------------------------------------------------------------------

    def write(self, row: dict[str, Any]) -> None:
        """Append one row with one ``write(2)`` (it survives ``kill -9``).

        Raises:
            OSError: The write failed (the partial row is cut off again).
            RuntimeError: The journal is not open.
        """
        # ASCII escapes: a lone surrogate in a model's answer cannot break the write.
        data = (json.dumps(row) + "\n").encode("ascii")
        with self._lock:
            if self._fd is None:
                raise RuntimeError("the journal is not open")
            written = 0
            try:
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError:
                # Leave no torn row behind (a failing write may have stored part of it):
                # later rows must start on a line of their own.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                raise
            self._size += written

    def close(self) -> None:
        """Close the file. Safe twice."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- compaction -----------------------------------------------------------------

    def compact(self, current: IdSet, *, superseded: IdSet | None = None) -> Compaction:
        """Keep one row per request of this input; set the others aside.

        For each key in ``current`` the kept row is the first success, else
        the last failure. Rows whose key is not in ``current`` (another
        input's ids, changed requests, foreign lines) go to
        :attr:`aside_path`. Failure rows whose key is in ``superseded`` (it
        succeeded elsewhere, e.g. failures kept in an errors file) are
        dropped. Memory stays flat (SQLite on disk); the rewrite is atomic.

        Args:
            current: :func:`row_key` of every line of the input.
            superseded: Keys whose failures are no longer wanted here.
        """
        best = sqlite3.connect("", isolation_level=None)  # private, on disk, removed on close
        try:
            total, aside = self._choose_rows(best, current, superseded)
            kept = best.execute("SELECT COUNT(*) FROM best WHERE keep = 1").fetchone()[0]
            if kept == total:
                return Compaction()
            best.execute("CREATE INDEX best_idx ON best (idx)")
            keep = (idx for (idx,) in best.execute("SELECT idx FROM best WHERE keep = 1 ORDER BY idx"))
            self._rewrite(keep, aside)
            return Compaction(total - kept - len(aside), len(aside), self.aside_path if aside else None)
        finally:
            best.close()

    def _choose_rows(
        self, best: sqlite3.Connection, current: IdSet, superseded: IdSet | None
    ) -> tuple[int, set[int]]:
        """Fill ``best(key, idx, ok, keep)``; return the line count and lines to set aside."""
        best.execute("CREATE TABLE best (key TEXT PRIMARY KEY, idx INTEGER, ok INTEGER, keep INTEGER) WITHOUT ROWID")
        total, aside = 0, set()
        best.execute("BEGIN")
        for index, text, _ in self._lines():
            if not text.strip():
                continue
            total += 1
            row = _parse(text)
            key = key_of(row)
            if key is None or key not in current:
                aside.add(index)
                continue
            ok = is_success(row)
            keep = int(ok or superseded is None or key not in superseded)
            best.execute(  # a success, once kept, stays
                "INSERT INTO best VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE "
                "SET idx = excluded.idx, ok = excluded.ok, keep = excluded.keep WHERE best.ok = 0",
                (key, index, int(ok), keep),
            )
        best.execute("COMMIT")
        return total, aside

    def _rewrite(self, keep: Iterator[int], aside: set[int]) -> None:
        """Write the lines ``keep`` yields (ascending) atomically; append ``aside`` lines."""
        tmp = self.path.with_name(self.path.name + ".compact")
        wanted = next(keep, None)
        spare_file = self.aside_path.open("ab") if aside else contextlib.nullcontext(None)
        with tmp.open("wb") as out, spare_file as spare:
            for index, text, _ in self._lines():
                data = (text if text.endswith("\n") else text + "\n").encode("utf-8", "surrogateescape")
                if index == wanted:
                    out.write(data)
                    wanted = next(keep, None)
                elif index in aside and spare is not None:
                    spare.write(data)
            out.flush()
            os.fsync(out.fileno())
            if spare is not None:
                spare.flush()
                os.fsync(spare.fileno())
        os.replace(tmp, self.path)

    # -- reading ------------------------------------------------------------------------

    def _lines(self) -> Iterator[tuple[int, str, bool]]:
        """(index, text, newline-terminated) of every line; bytes kept as they are."""
        with self.path.open("r", encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
            for index, text in enumerate(handle):
                yield index, text, text.endswith("\n")

    def _rows(self) -> Iterator[tuple[int, Any]]:
        for index, text, _ in self._lines():
            if text.strip():
                row = _parse(text)
                if row is not None:
                    yield index, row


def _parse(text: str) -> Any:
    try:
        row = json.loads(text)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _last_line_start(handle: Any, size: int) -> int:
    pos = size
    while pos > 0:
        step = min(pos, 1 << 16)
        handle.seek(pos - step)
        cut = handle.read(step).rfind(b"\n")
        if cut != -1:
            return pos - step + cut + 1
        pos -= step
    return 0
