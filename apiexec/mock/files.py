"""The OpenAI Files API of the mock server: upload, list, retrieve, download, delete.

``POST /v1/files`` takes ``multipart/form-data`` with ``file`` and ``purpose``,
as the OpenAI SDK sends it. Files live in memory for the server's life.

Example:
    >>> store = FileStore()
    >>> record = store.add(b'{"a": 1}\\n', "in.jsonl", "batch", created_at=0)
    >>> store.get(record["id"])["bytes"], store.content(record["id"])
    (9, b'{"a": 1}\\n')
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final

from apiexec.mock.answers.common import BadRequest
from apiexec.mock.wire import new_id

PURPOSES: Final = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
OUTPUT_PURPOSE: Final = "batch_output"


class NotFound(Exception):
    """No such object; the message goes back to the client (a 404)."""


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a ``multipart/form-data`` body: name -> (filename, bytes).

    Raises:
        BadRequest: The body is not multipart form data.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest("the body must be multipart/form-data with 'file' and 'purpose'")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise BadRequest("the multipart body could not be parsed")
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            parts[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return parts


class FileStore:
    """Uploaded and generated files, by id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}

    def add(self, data: bytes, filename: str, purpose: str, *, created_at: int) -> dict[str, Any]:
        """Store ``data``; returns its ``FileObject``."""
        record: dict[str, Any] = {
            "id": new_id("file-"),
            "object": "file",
            "bytes": len(data),
            "created_at": created_at,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        with self._lock:
            self._files[str(record["id"])] = (record, data)
        return dict(record)

    def upload(self, content_type: str, body: bytes, *, created_at: int) -> dict[str, Any]:
        """``POST /v1/files``."""
        parts = parse_multipart(content_type, body)
        if "file" not in parts:
            raise BadRequest("'file' is required", "file")
        purpose = parts.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
        if purpose not in PURPOSES:
            raise BadRequest(f"'purpose' must be one of {', '.join(sorted(PURPOSES))}", "purpose")
        filename, data = parts["file"]
        return self.add(data, filename or "upload", purpose, created_at=created_at)

    def get(self, file_id: str) -> dict[str, Any]:
        """``GET /v1/files/{id}``."""
        return dict(self._entry(file_id)[0])

    def content(self, file_id: str) -> bytes:
        """``GET /v1/files/{id}/content``."""
        return self._entry(file_id)[1]

    def delete(self, file_id: str) -> dict[str, Any]:
        """``DELETE /v1/files/{id}``."""
        with self._lock:
            if self._files.pop(file_id, None) is None:
                raise NotFound(f"No such File object: {file_id}")
        return {"id": file_id, "object": "file", "deleted": True}

    def listing(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/files`` with ``purpose``, ``limit``, ``after`` and ``order``."""
        with self._lock:
            records = [dict(record) for record, _ in self._files.values()]
        if "purpose" in query:
            records = [r for r in records if r["purpose"] == query["purpose"]]
        records.reverse()  # newest first, as OpenAI lists by default
        if query.get("order") == "asc":
            records.reverse()
        return page(records, query, default_limit=10000)

    def _entry(self, file_id: str) -> tuple[dict[str, Any], bytes]:
        with self._lock:
            entry = self._files.get(file_id)
        if entry is None:
            raise NotFound(f"No such File object: {file_id}")
        return entry


def page(items: list[dict[str, Any]], query: Mapping[str, str], *, default_limit: int = 20) -> dict[str, Any]:
    """An OpenAI cursor page of ``items`` (already ordered) after ``query["after"]``."""
    limit = _limit(query, default_limit)
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    chunk = items[:limit]
    return {
        "object": "list",
        "data": chunk,
        "first_id": chunk[0]["id"] if chunk else None,
        "last_id": chunk[-1]["id"] if chunk else None,
        "has_more": len(items) > limit,
    }


def _limit(query: Mapping[str, str], default: int) -> int:
    text = query.get("limit")
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise BadRequest(f"'limit' must be a positive integer, got {text!r}", "limit")
    return int(text)
