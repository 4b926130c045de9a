"""Batch input: read lines from a file, ``.gz`` or stdin, and parse each one.

Three line formats are accepted, line by line:

* OpenAI Batch: ``{"custom_id", "method", "url", "body"}``;
* Anthropic Message Batches: ``{"custom_id", "params"}`` (sent to ``/v1/messages``);
* a bare request body (its ``custom_id`` is the line number).

Input is read as bytes, one line at a time (memory stays flat). A UTF-8 byte
order mark on the first line is accepted; a line that is not valid UTF-8,
not JSON, or not a valid request becomes a :class:`BatchLine` with an
``error``: it gets its own error row and the run goes on.

Each valid line carries a **fingerprint** of its request (method, endpoint
path, body): a resumed run counts an earlier answer as this line's only when
the fingerprints match.

Example:
    >>> line = parse_line(1, b'{"model": "m", "messages": []}', base_url="http://h/v1",
    ...                   default_endpoint="chat/completions")
    >>> line.custom_id, line.path, line.layout, len(line.fingerprint)
    ('1', 'chat/completions', 'openai', 32)
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from apiexec.batch.urls import LineURLError, endpoint_path

#: Methods a line may use; anything else (``BREW``) is an error row.
METHODS: Final = frozenset({"POST", "GET", "PUT", "PATCH", "DELETE"})
#: Where Anthropic Message Batches requests go.
ANTHROPIC_URL: Final = "/v1/messages"
#: ``-`` names standard input.
STDIN: Final = "-"

_BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class BatchLine:
    """One input line, parsed.

    Attributes:
        line_no: 1-based line number.
        custom_id: The caller's id (the line number for bare bodies and
            for lines too broken to name one).
        layout: Output row layout: ``"openai"`` or ``"anthropic"``.
        method: HTTP method.
        path: Endpoint path below the API root (``chat/completions``).
        body: The request body, or None when the line is invalid.
        error: Why the line is invalid, or None.
        fingerprint: Hash of (method, path, body); for an invalid line, of
            its raw bytes.
    """

    line_no: int
    custom_id: str
    layout: str = "openai"
    method: str = "POST"
    path: str = ""
    body: dict[str, Any] | None = None
    error: str | None = None
    fingerprint: str = ""


def fingerprint(method: str, path: str, body: Any) -> str:
    """A stable hash of one request (keys sorted, so key order does not matter).

    Example:
        >>> fingerprint("POST", "chat/completions", {"a": 1, "b": 2}) == \\
        ...     fingerprint("POST", "chat/completions", {"b": 2, "a": 1})
        True
    """
    text = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _raw_fingerprint(raw: bytes) -> str:
    return "raw-" + hashlib.sha256(raw.strip()).hexdigest()[:28]


def parse_line(line_no: int, raw: bytes, *, base_url: str, default_endpoint: str) -> BatchLine | None:
    """Parse one input line (bytes, newline optional); None for a blank line.

    Args:
        line_no: 1-based line number.
        raw: The line's bytes.
        base_url: The API root line urls are joined to.
        default_endpoint: Path for bare bodies.
    """
    if line_no == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if not raw.strip():
        return None
    fallback = str(line_no)

    def invalid(why: str, custom_id: str = fallback, layout: str = "openai") -> BatchLine:
        return BatchLine(line_no, custom_id, layout, error=f"line {line_no}: {why}", fingerprint=_raw_fingerprint(raw))

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return invalid(f"not valid UTF-8 (byte {exc.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return invalid(f"not valid JSON ({exc.msg})")
    if not isinstance(data, dict):
        return invalid("expected a JSON object")
    if "custom_id" not in data and "body" not in data and "params" not in data:
        path = default_endpoint
        return BatchLine(line_no, fallback, "openai", "POST", path, data, None, fingerprint("POST", path, data))
    custom_id = data.get("custom_id")
    layout = "anthropic" if "params" in data and "body" not in data else "openai"
    if not isinstance(custom_id, str) or not custom_id:
        return invalid("custom_id must be a non-empty string", layout=layout)
    if layout == "anthropic":
        return _anthropic_line(line_no, custom_id, data, base_url, invalid)
    body = data.get("body")
    if not isinstance(body, dict):
        return invalid("missing or non-object body", custom_id)
    method, url = data.get("method", "POST"), data.get("url")
    if not isinstance(method, str) or (url is not None and not isinstance(url, str)):
        return invalid("method and url must be strings", custom_id)
    method = method.upper()
    if method not in METHODS:
        return invalid(f"method {method!r} is not one of {', '.join(sorted(METHODS))}", custom_id)
    try:
        path = default_endpoint if url is None else endpoint_path(base_url, url)
    except LineURLError as exc:
        return invalid(str(exc), custom_id)
    return BatchLine(line_no, custom_id, "openai", method, path, body, None, fingerprint(method, path, body))


def _anthropic_line(
    line_no: int, custom_id: str, data: dict[str, Any], base_url: str, invalid: Callable[..., BatchLine]
) -> BatchLine:
    params = data.get("params")
    if not isinstance(params, dict):
        return invalid("params must be an object", custom_id, "anthropic")
    path = endpoint_path(base_url, ANTHROPIC_URL)
    return BatchLine(line_no, custom_id, "anthropic", "POST", path, params, None, fingerprint("POST", path, params))


@contextlib.contextmanager
def open_input(source: Path | str) -> Iterator[IO[bytes]]:
    """Open the input as a binary stream: a file, a ``.gz`` file, or ``-`` (stdin).

    Raises:
        OSError: The file cannot be opened.
    """
    if str(source) == STDIN:
        yield sys.stdin.buffer
        return
    path = Path(source)
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            yield handle  # type: ignore[misc]
        return
    with path.open("rb") as handle:
        yield handle


def read_batch(source: Path | str, *, base_url: str, default_endpoint: str) -> Iterator[BatchLine]:
    """Stream the parsed lines of the input (blank lines skipped).

    Raises:
        OSError: The input cannot be read (also a corrupt ``.gz``, as
            :class:`gzip.BadGzipFile` is an ``OSError``).
    """
    with open_input(source) as handle:
        try:
            for line_no, raw in enumerate(handle, start=1):
                parsed = parse_line(line_no, raw, base_url=base_url, default_endpoint=default_endpoint)
                if parsed is not None:
                    yield parsed
        except (EOFError, zlib.error) as exc:  # a truncated or corrupt .gz
            raise OSError(f"{source}: cannot read the input: {exc}") from exc


def count_lines(source: Path | str) -> int | None:
    """Lines in a plain input file (for the progress total); None for stdin or ``.gz``."""
    if str(source) == STDIN or Path(source).suffix == ".gz":
        return None
    count, last = 0, b"\n"
    with Path(source).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
