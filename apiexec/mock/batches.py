"""The OpenAI Batch API of the mock server: create, retrieve, list, cancel.

A batch reads an uploaded ``purpose=batch`` file of lines ``{"custom_id",
"method": "POST", "url", "body"}`` and answers each line as the online endpoint
would (no rate limit, no faults: the real batch queue has its own limits). Its
life runs on the server's clock, in units of ``batch_time_scale`` seconds:
``validating`` for one unit, ``in_progress`` for one unit per request (the
``request_counts`` grow as it goes), ``finalizing`` for one unit, then
``completed`` with an ``output_file_id`` (and an ``error_file_id`` when some
lines failed). A scale of 0 finishes a batch at once. ``cancel`` moves a batch
to ``cancelling`` and, one unit later, ``cancelled``, with the lines processed
before the cancel in its output file. A file that does not validate (bad JSON,
missing fields, wrong ``url``, duplicate ``custom_id``) makes the batch
``failed`` with ``errors``. Batches do not expire.

Example:
    >>> from apiexec.mock.files import FileStore
    >>> files = FileStore()
    >>> line = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "hi"}}'
    >>> upload = files.add(line, "in.jsonl", "batch", created_at=0)
    >>> batches = BatchStore(files, scale=0.0, clock=lambda: 0.0)
    >>> batch = batches.create({"input_file_id": upload["id"], "endpoint": "/v1/embeddings",
    ...                         "completion_window": "24h"})
    >>> batch["status"], batch["request_counts"]
    ('completed', {'total': 1, 'completed': 1, 'failed': 0})
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from apiexec.mock.answers import MODEL_ROUTES, BadRequest
from apiexec.mock.files import FileStore, NotFound, page
from apiexec.mock.wire import new_id, openai_error_body

ENDPOINTS: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
COMPLETION_WINDOW: Final = "24h"
EXPIRES_AFTER_S: Final = 24 * 3600
MAX_LINES: Final = 50_000


@dataclass
class _Batch:
    record: dict[str, Any]
    start: float  # clock reading at creation
    rows: list[tuple[bool, dict[str, Any], dict[str, int]]]  # (ok, output line, usage) per line
    errors: list[dict[str, Any]] = field(default_factory=list)  # file-level validation errors
    cancel_at: float | None = None
    processed_at_cancel: int = 0


class BatchStore:
    """OpenAI batches, advanced lazily from the clock whenever one is read (thread-safe)."""

    def __init__(self, files: FileStore, *, scale: float, clock: Callable[[], float]) -> None:
        self._files = files
        self._scale = scale
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._wall_start = time.time() - clock()  # wall time of clock reading 0

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/batches``."""
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise BadRequest(f"'endpoint' must be one of {', '.join(ENDPOINTS)}", "endpoint")
        if body.get("completion_window") != COMPLETION_WINDOW:
            raise BadRequest("'completion_window' must be '24h'", "completion_window")
        file_id = body.get("input_file_id")
        try:
            upload = self._files.get(file_id) if isinstance(file_id, str) else None
        except NotFound:
            upload = None
        if upload is None or upload["purpose"] != "batch":
            raise BadRequest(f"'input_file_id' must name a file uploaded with purpose 'batch', got {file_id!r}",
                             "input_file_id")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise BadRequest("'metadata' must be an object", "metadata")
        now = self._clock()
        created = self._wall(now)
        rows, errors = _process(self._files.content(upload["id"]), str(endpoint))
        record = {
            "id": new_id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": file_id, "completion_window": COMPLETION_WINDOW, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": created, "in_progress_at": None,
            "expires_at": created + EXPIRES_AFTER_S, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0 if errors else len(rows), "completed": 0, "failed": 0},
            "metadata": metadata, "model": _model(rows), "usage": None,
        }
        batch = _Batch(record, now, rows, errors)
        with self._lock:
            self._batches[record["id"]] = batch
            return self._advance_locked(batch)

    def get(self, batch_id: str) -> dict[str, Any]:
        """``GET /v1/batches/{id}``."""
        with self._lock:
            return self._advance_locked(self._find_locked(batch_id))

    def listing(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/batches`` (newest first, ``limit`` and ``after``)."""
        with self._lock:
            records = [self._advance_locked(b) for b in self._batches.values()]
        return page(records[::-1], query)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """``POST /v1/batches/{id}/cancel``."""
        with self._lock:
            batch = self._find_locked(batch_id)
            record = self._advance_locked(batch)
            if record["status"] not in ("validating", "in_progress", "finalizing"):
                raise BadRequest(f"Cannot cancel a batch with status '{record['status']}'.")
            now = self._clock()
            batch.processed_at_cancel = self._processed(batch, now)
            batch.cancel_at = now
            batch.record["cancelling_at"] = self._wall(now)
            return self._advance_locked(batch)

    # ----------------------------------------------------------------- the timeline

    def _find_locked(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise NotFound(f"No batch found with id '{batch_id}'.")
        return batch

    def _wall(self, reading: float) -> int:
        return int(self._wall_start + reading)

    def _units(self, batch: _Batch, now: float) -> float:
        """Time units since creation; infinite with a scale of 0."""
        return math.inf if self._scale == 0 else (now - batch.start) / self._scale

    def _processed(self, batch: _Batch, now: float) -> int:
        return int(min(len(batch.rows), max(0.0, self._units(batch, now) - 1)))

    def _at(self, batch: _Batch, units: float) -> int:
        return self._wall(batch.start + units * self._scale)

    def _advance_locked(self, batch: _Batch) -> dict[str, Any]:
        """Bring ``batch.record`` up to the clock; returns a copy."""
        record, now, total = batch.record, self._clock(), len(batch.rows)
        units = self._units(batch, now)
        if record["status"] in ("completed", "failed", "cancelled"):
            return dict(record)
        if batch.errors:
            if units >= 1:
                record.update(status="failed", failed_at=self._at(batch, 1),
                              errors={"object": "list", "data": batch.errors})
            return dict(record)
        if batch.cancel_at is not None:
            self._count(batch, batch.processed_at_cancel)
            cancelled = self._scale == 0 or (now - batch.cancel_at) / self._scale >= 1
            if cancelled:
                self._finish(batch, batch.processed_at_cancel)
                record.update(status="cancelled", cancelled_at=self._wall(batch.cancel_at + self._scale))
            else:
                record["status"] = "cancelling"
            return dict(record)
        if units >= 1:
            record.update(status="in_progress", in_progress_at=record["in_progress_at"] or self._at(batch, 1))
            self._count(batch, self._processed(batch, now))
        if units >= 1 + total:
            record.update(status="finalizing", finalizing_at=record["finalizing_at"] or self._at(batch, 1 + total))
        if units >= 2 + total:
            self._finish(batch, total)
            record.update(status="completed", completed_at=self._at(batch, 2 + total))
        return dict(record)

    def _count(self, batch: _Batch, processed: int) -> None:
        done = batch.rows[:processed]
        failed = sum(1 for ok, _, _ in done if not ok)
        batch.record["request_counts"] = {"total": len(batch.rows), "completed": processed - failed, "failed": failed}

    def _finish(self, batch: _Batch, processed: int) -> None:
        """Write the output (and error) file of the first ``processed`` lines."""
        self._count(batch, processed)
        done = batch.rows[:processed]
        record, created = batch.record, self._wall(self._clock())
        name = record["id"]
        ok_lines = [line for ok, line, _ in done if ok]
        bad_lines = [line for ok, line, _ in done if not ok]
        record["output_file_id"] = self._files.add(_jsonl(ok_lines), f"{name}_output.jsonl", "batch_output",
                                                   created_at=created)["id"]
        if bad_lines:
            record["error_file_id"] = self._files.add(_jsonl(bad_lines), f"{name}_error.jsonl", "batch_output",
                                                      created_at=created)["id"]
        totals = {"input": 0, "output": 0}
        for ok, _, usage in done:
            if ok:
                totals["input"] += usage["input"]
                totals["output"] += usage["output"]
        record["usage"] = {
            "input_tokens": totals["input"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": totals["output"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": totals["input"] + totals["output"],
        }


def _process(data: bytes, endpoint: str) -> tuple[list[tuple[bool, dict[str, Any], dict[str, int]]],
                                                   list[dict[str, Any]]]:
    """Answer every line of an input file, or list why the file does not validate."""
    rows: list[tuple[bool, dict[str, Any], dict[str, int]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        errors.append(_error("empty_file", "The input file has no requests.", None, None))
    if len(lines) > MAX_LINES:
        errors.append(_error("too_many_requests", f"A batch may hold at most {MAX_LINES} requests.", None, None))
    for number, text in enumerate(lines[:MAX_LINES], start=1):
        try:
            line = json.loads(text)
        except ValueError:
            errors.append(_error("invalid_json_line", "This line is not valid JSON.", None, number))
            continue
        problem = _line_problem(line, endpoint, seen)
        if problem is not None:
            errors.append(_error(problem[0], problem[1], problem[2], number))
            continue
        seen.add(line["custom_id"])
        rows.append(_answer_line(line, endpoint))
    return rows, errors


def _line_problem(line: object, endpoint: str, seen: set[str]) -> tuple[str, str, str] | None:
    if not isinstance(line, dict):
        return ("invalid_request", "Each line must be a JSON object.", "body")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return ("missing_required_parameter", "Each line needs a 'custom_id' string.", "custom_id")
    if custom_id in seen:
        return ("duplicate_custom_id", f"The custom_id {custom_id!r} appears more than once.", "custom_id")
    if line.get("method") != "POST":
        return ("invalid_method", "The 'method' of each line must be 'POST'.", "method")
    if line.get("url") != endpoint:
        return ("mismatched_endpoint", f"The 'url' of each line must be the batch endpoint {endpoint}.", "url")
    if not isinstance(line.get("body"), dict):
        return ("missing_required_parameter", "Each line needs a 'body' object.", "body")
    return None


def _answer_line(line: dict[str, Any], endpoint: str) -> tuple[bool, dict[str, Any], dict[str, int]]:
    body = dict(line["body"])
    if body.get("stream") is True:
        return _failed(line, BadRequest("streaming is not supported in batches", "stream"))
    try:
        answer = MODEL_ROUTES[endpoint].build(body)
    except BadRequest as exc:
        return _failed(line, exc)
    usage = answer.payload.get("usage") or {}
    spent = {"input": int(usage.get("prompt_tokens", usage.get("input_tokens", 0))),
             "output": int(usage.get("completion_tokens", usage.get("output_tokens", 0)))}
    response = {"status_code": 200, "request_id": new_id("req_"), "body": answer.payload}
    return True, {"id": new_id("batch_req_"), "custom_id": line["custom_id"], "response": response, "error": None}, spent


def _failed(line: dict[str, Any], exc: BadRequest) -> tuple[bool, dict[str, Any], dict[str, int]]:
    response = {"status_code": 400, "request_id": new_id("req_"), "body": openai_error_body(400, str(exc), exc.param)}
    output = {"id": new_id("batch_req_"), "custom_id": line["custom_id"], "response": response, "error": None}
    return False, output, {"input": 0, "output": 0}


def _error(code: str, message: str, param: str | None, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _model(rows: list[tuple[bool, dict[str, Any], dict[str, int]]]) -> str | None:
    for ok, line, _ in rows:
        if ok:
            return str(line["response"]["body"].get("model"))
    return None


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
