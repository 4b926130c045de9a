"""Batch input and the output journal of ``apiexec run``.

Input is OpenAI Batch API JSONL (``{"custom_id", "method", "url", "body"}``)
or bare request bodies, one per line (``custom_id`` = the line number). It is
read as a stream: one line at a time, never the whole file.

The output is an **append-only journal** in OpenAI Batch output format, one
line per answered call, flushed as soon as it is written::

    {"id", "custom_id", "response": {"status_code", "request_id", "body"} | null,
     "error": {"code", "message"} | null}

A crash (even ``kill -9``) leaves at most a torn last line, which the next
run cuts off. The next run skips every ``custom_id`` already answered with
success and sends the others again; when the run completes, the journal is
compacted to exactly one line per ``custom_id`` (a success if there was one,
else the latest failure).

Example:
    >>> journal = Journal(Path("results.jsonl"))            # doctest: +SKIP
    >>> done = journal.open()                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from apiexec.batch.id_set import IdSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchLine:
    """One input line, parsed.

    Attributes:
        line_no: 1-based line number.
        custom_id: The caller's id (the line number for bare bodies).
        method: HTTP method (``POST`` unless the line says otherwise).
        url: The line's path (``/v1/chat/completions``), or None.
        body: The request body, or None when the line is invalid.
        error: Why the line is invalid, or None.
    """

    line_no: int
    custom_id: str
    method: str = "POST"
    url: str | None = None
    body: dict[str, Any] | None = None
    error: str | None = None


def parse_line(line_no: int, text: str) -> BatchLine | None:
    """Parse one input line; None for a blank line."""
    if not text.strip():
        return None
    fallback_id = str(line_no)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return BatchLine(line_no, fallback_id, error=f"line {line_no}: not valid JSON ({exc.msg})")
    if not isinstance(data, dict):
        return BatchLine(line_no, fallback_id, error=f"line {line_no}: expected a JSON object")
    if "custom_id" not in data and "body" not in data:
        return BatchLine(line_no, fallback_id, body=data)  # a bare request body
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BatchLine(line_no, fallback_id, error=f"line {line_no}: custom_id must be a non-empty string")
    body = data.get("body")
    if not isinstance(body, dict):
        return BatchLine(line_no, custom_id, error=f"line {line_no}: missing or non-object body")
    method = data.get("method", "POST")
    url = data.get("url")
    if not isinstance(method, str) or (url is not None and not isinstance(url, str)):
        return BatchLine(line_no, custom_id, error=f"line {line_no}: method and url must be strings")
    return BatchLine(line_no, custom_id, method=method.upper(), url=url, body=body)


def read_batch(path: Path) -> Iterator[BatchLine]:
    """Stream the parsed lines of a JSONL file (blank lines skipped)."""
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line_no, text in enumerate(handle, start=1):
            parsed = parse_line(line_no, text)
            if parsed is not None:
                yield parsed


def count_lines(path: Path) -> int:
    """Count newline-terminated lines fast (for the progress bar's total)."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def success_row(custom_id: str, status_code: int, request_id: str | None, body: Any) -> dict[str, Any]:
    """An output row for an answered call."""
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def error_row(
    custom_id: str, code: str, message: str, *, status_code: int | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """An output row for a failed call or an invalid line."""
    response = None
    if status_code is not None:
        response = {"status_code": status_code, "request_id": request_id, "body": None}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": response,
        "error": {"code": code, "message": message},
    }


def is_success(row: Any) -> bool:
    """True for a row whose call succeeded (2xx, no error)."""
    if not isinstance(row, dict) or row.get("error") is not None:
        return False
    response = row.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    return isinstance(status, int) and 200 <= status < 300


class Journal:
    """The append-only output file: resume, write (thread-safe), compact.

    Args:
        path: The output JSONL file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None
        self.rows_before = 0

    def open(self) -> IdSet:
        """Repair a torn tail, open for appending, return ids already done.

        The ids are kept on disk (:class:`~apiexec.batch.id_set.IdSet`): the
        caller closes the set.
        """
        done = IdSet()
        if self.path.exists():
            self._cut_torn_tail()
            done.update(self._successful_ids())
        self._handle = self.path.open("a", encoding="utf-8")
        return done

    def _successful_ids(self) -> Iterator[str]:
        for _, row in self._rows():
            self.rows_before += 1
            if is_success(row):
                yield row["custom_id"]

    def write(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the OS (survives ``kill -9``)."""
        # ASCII escapes: a lone surrogate in a model's answer cannot break the write.
        text = json.dumps(row) + "\n"
        with self._lock:
            if self._handle is None:
                raise RuntimeError("the journal is not open")
            self._handle.write(text)
            self._handle.flush()

    def close(self) -> None:
        """Flush and close the file. Safe twice."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def compact(self) -> int:
        """Rewrite the file with one row per custom_id; return rows dropped.

        For each id the kept row is the first success, else the last failure.
        Which row to keep is worked out in a temporary SQLite table, so
        memory stays flat; the rewrite goes to a temporary file replaced
        atomically.
        """
        best = sqlite3.connect("", isolation_level=None)  # private, on disk, removed on close
        try:
            total = self._choose_rows(best)
            kept = best.execute("SELECT COUNT(*) FROM best").fetchone()[0]
            if kept == total:
                return 0
            best.execute("CREATE INDEX best_idx ON best (idx)")
            keep = (idx for (idx,) in best.execute("SELECT idx FROM best ORDER BY idx"))
            self._rewrite(keep)
            return total - kept
        finally:
            best.close()

    def _choose_rows(self, best: sqlite3.Connection) -> int:
        """Fill ``best(id, idx, ok)`` with the row to keep per id; count rows."""
        best.execute("CREATE TABLE best (id TEXT PRIMARY KEY, idx INTEGER, ok INTEGER) WITHOUT ROWID")
        total = 0
        best.execute("BEGIN")
        for index, row in self._rows():
            total += 1
            best.execute(  # a success, once kept, stays
                "INSERT INTO best VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET idx = excluded.idx, ok = excluded.ok WHERE best.ok = 0",
                (row["custom_id"], index, int(is_success(row))),
            )
        best.execute("COMMIT")
        return total

    def _rewrite(self, keep: Iterator[int]) -> None:
        """Write the lines whose index ``keep`` yields (ascending), atomically."""
        tmp = self.path.with_name(self.path.name + ".compact")
        wanted = next(keep, None)
        with tmp.open("w", encoding="utf-8") as out:
            for index, text in self._lines():
                if index == wanted:
                    out.write(text)
                    wanted = next(keep, None)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def _lines(self) -> Iterator[tuple[int, str]]:
        """(index, text) of every line, newline-terminated."""
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for index, text in enumerate(handle):
                yield index, text if text.endswith("\n") else text + "\n"

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index, row) of every readable row."""
        for index, text in self._lines():
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError:
                logger.warning("%s: line %d is unreadable; ignored", self.path, index + 1)
                continue
            if isinstance(row, dict) and isinstance(row.get("custom_id"), str):
                yield index, row

    def _cut_torn_tail(self) -> None:
        """Drop a last line that a crash left without its newline."""
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            pos = size
            while pos > 0:
                step = min(pos, 1 << 16)
                handle.seek(pos - step)
                chunk = handle.read(step)
                cut = chunk.rfind(b"\n")
                if cut != -1:
                    handle.truncate(pos - step + cut + 1)
                    break
                pos -= step
            else:
                handle.truncate(0)
            logger.warning("%s: removed a torn last line left by an interrupted run", self.path)
