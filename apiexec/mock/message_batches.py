"""The Anthropic Message Batches API of the mock server.

``POST /v1/messages/batches`` takes ``{"requests": [{"custom_id", "params"}]}``
and answers each request as ``POST /v1/messages`` would (no rate limit, no
faults). The batch is ``in_progress`` for one ``batch_time_scale`` unit per
request (``request_counts.processing`` falls as it goes), then ``ended`` with a
``results_url``; ``GET .../results`` streams JSONL lines ``{"custom_id",
"result": {"type": "succeeded", "message"}}`` or ``{"type": "errored",
"error"}`` or, after a cancel, ``{"type": "canceled"}``. ``cancel`` sets
``canceling`` and, one unit later, ``ended``. Ended batches can be deleted.
Batches do not expire.

Example:
    >>> store = MessageBatchStore(scale=0.0, clock=lambda: 0.0)
    >>> params = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    >>> batch = store.create({"requests": [{"custom_id": "a", "params": params}]}, "http://h")
    >>> batch["processing_status"], batch["request_counts"]["succeeded"]
    ('ended', 1)
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from apiexec.mock.answers import MODEL_ROUTES, BadRequest
from apiexec.mock.files import NotFound
from apiexec.mock.wire import anthropic_error_body, new_id

MAX_REQUESTS: Final = 100_000
EXPIRES_AFTER_S: Final = 24 * 3600
_CUSTOM_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass
class _Batch:
    id: str
    start: float
    base_url: str
    results: list[dict[str, Any]]  # one result line per request, in order
    cancel_at: float | None = None
    processed_at_cancel: int = 0
    archived: bool = False


class MessageBatchStore:
    """Anthropic message batches, advanced lazily from the clock (thread-safe)."""

    def __init__(self, *, scale: float, clock: Callable[[], float]) -> None:
        self._scale = scale
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._wall_start = time.time() - clock()

    def create(self, body: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        """``POST /v1/messages/batches``; ``base_url`` makes the ``results_url``."""
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("requests: must be a non-empty list", "requests")
        if len(requests) > MAX_REQUESTS:
            raise BadRequest(f"requests: at most {MAX_REQUESTS} requests per batch", "requests")
        seen: set[str] = set()
        for i, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                raise BadRequest(f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
            if custom_id in seen:
                raise BadRequest(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
            if not isinstance(item.get("params"), dict):
                raise BadRequest(f"requests.{i}.params: Field required")
            seen.add(custom_id)
        batch = _Batch(new_id("msgbatch_"), self._clock(), base_url.rstrip("/"),
                       [_result(item["custom_id"], item["params"]) for item in requests])
        with self._lock:
            self._batches[batch.id] = batch
            return self._record_locked(batch)

    def get(self, batch_id: str) -> dict[str, Any]:
        """``GET /v1/messages/batches/{id}``."""
        with self._lock:
            return self._record_locked(self._find_locked(batch_id))

    def listing(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/messages/batches`` (newest first; ``limit``, ``before_id``, ``after_id``)."""
        with self._lock:
            records = [self._record_locked(b) for b in reversed(self._batches.values())]
        limit = _limit(query)
        ids = [r["id"] for r in records]
        if "after_id" in query:
            records = records[ids.index(query["after_id"]) + 1 :] if query["after_id"] in ids else []
            chunk, more = records[:limit], len(records) > limit
        elif "before_id" in query:
            records = records[: ids.index(query["before_id"])] if query["before_id"] in ids else []
            chunk, more = records[-limit:], len(records) > limit
        else:
            chunk, more = records[:limit], len(records) > limit
        return {"data": chunk, "has_more": more, "first_id": chunk[0]["id"] if chunk else None,
                "last_id": chunk[-1]["id"] if chunk else None}

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """``POST /v1/messages/batches/{id}/cancel`` (a no-op on an ended batch)."""
        with self._lock:
            batch = self._find_locked(batch_id)
            if self._record_locked(batch)["processing_status"] == "in_progress":
                now = self._clock()
                batch.processed_at_cancel = self._processed(batch, now)
                batch.cancel_at = now
            return self._record_locked(batch)

    def delete(self, batch_id: str) -> dict[str, Any]:
        """``DELETE /v1/messages/batches/{id}``: only an ended batch."""
        with self._lock:
            batch = self._find_locked(batch_id)
            if self._record_locked(batch)["processing_status"] != "ended":
                raise BadRequest(f"Message batch {batch_id} cannot be deleted while it is processing; cancel it first.")
            del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> bytes:
        """``GET /v1/messages/batches/{id}/results``: JSONL, once ended."""
        with self._lock:
            batch = self._find_locked(batch_id)
            if self._record_locked(batch)["processing_status"] != "ended":
                raise BadRequest(f"Message batch {batch_id} has not ended yet; its results are not available.")
            lines = self._final_results(batch)
        return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)

    # ----------------------------------------------------------------- the timeline

    def _find_locked(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise NotFound(f"message batch not found: {batch_id}")
        return batch

    def _processed(self, batch: _Batch, now: float) -> int:
        units = math.inf if self._scale == 0 else (now - batch.start) / self._scale
        return int(min(len(batch.results), max(0.0, units)))

    def _ended_at(self, batch: _Batch) -> float | None:
        """Clock reading when the batch ends (or ended); None while it runs."""
        now = self._clock()
        if batch.cancel_at is not None:
            end = batch.cancel_at + self._scale
        else:
            end = batch.start + len(batch.results) * self._scale
        return end if now >= end else None

    def _final_results(self, batch: _Batch) -> list[dict[str, Any]]:
        if batch.cancel_at is None:
            return batch.results
        done = batch.results[: batch.processed_at_cancel]
        canceled = [{"custom_id": r["custom_id"], "result": {"type": "canceled"}}
                    for r in batch.results[batch.processed_at_cancel :]]
        return done + canceled

    def _record_locked(self, batch: _Batch) -> dict[str, Any]:
        ended = self._ended_at(batch)
        if ended is not None:
            results = self._final_results(batch)
            status = "ended"
            processing = 0
        else:
            processed = batch.processed_at_cancel if batch.cancel_at is not None else self._processed(batch, self._clock())
            results = batch.results[:processed]
            status = "canceling" if batch.cancel_at is not None else "in_progress"
            processing = len(batch.results) - processed
        counts = {"processing": processing, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for line in results:
            counts[line["result"]["type"]] += 1
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": self._time(ended),
            "created_at": self._time(batch.start),
            "expires_at": self._time(batch.start + EXPIRES_AFTER_S),
            "archived_at": None,
            "cancel_initiated_at": self._time(batch.cancel_at),
            "results_url": f"{batch.base_url}/v1/messages/batches/{batch.id}/results" if ended is not None else None,
        }

    def _time(self, reading: float | None) -> str | None:
        if reading is None:
            return None
        moment = datetime.fromtimestamp(self._wall_start + reading, tz=timezone.utc)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _result(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("stream") is True:
        return _errored(custom_id, "stream: streaming is not supported in message batches")
    try:
        message = MODEL_ROUTES["/v1/messages"].build(dict(params)).payload
    except BadRequest as exc:
        return _errored(custom_id, str(exc))
    message["usage"]["service_tier"] = "batch"
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def _errored(custom_id: str, message: str) -> dict[str, Any]:
    error = dict(anthropic_error_body(400, message), request_id=new_id("req_"))
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


def _limit(query: Mapping[str, str]) -> int:
    text = query.get("limit", "20")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise BadRequest(f"limit: must be an integer in 1..1000, got {text!r}", "limit")
    return int(text)
