"""Output rows, in the providers' own batch result layouts.

OpenAI-style input (and bare bodies) get OpenAI's ``BatchRequestOutput``::

    {"id": "batch_req_...", "custom_id": "q1",
     "response": {"status_code": 200, "request_id": "req_...", "body": {...}},
     "error": null}

For an HTTP failure ``response`` keeps the status, request id and the
provider's error JSON as ``body`` (``error`` stays null); ``error``
(``{"code", "message"}``) is used only when there was no HTTP answer
(connection failure, timeout, invalid line) and then ``response`` is null.

Anthropic Message Batches input gets Anthropic's result layout::

    {"custom_id": "q1", "result": {"type": "succeeded", "message": {...}}}
    {"custom_id": "q1", "result": {"type": "errored",
        "error": {"type": "error", "error": {"type": "...", "message": "..."}}}}
    {"custom_id": "q1", "result": {"type": "expired"}}

Every row also records the **fingerprint** of its request (see
:func:`apiexec.batch.lines.fingerprint`): it marks the file as an apiexec
journal and tells a resumed run whether the answer is to the same request.
An OpenAI row keeps exactly OpenAI's four keys, so the fingerprint lives in
its opaque ``id`` (``batch_req_<fingerprint>_<random>``); an Anthropic row
has no id, so it carries a ``"fingerprint"`` key (which the SDK's model
ignores). :func:`fingerprint_of` reads either.

Example:
    >>> row = openai_row("q1", "fp", Outcome(status_code=200, body={"ok": 1}))
    >>> sorted(row), row["error"], is_success(row), fingerprint_of(row)
    (['custom_id', 'error', 'id', 'response'], None, True, 'fp')
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Final

#: The key holding the fingerprint of an Anthropic-layout row.
FINGERPRINT: Final = "fingerprint"
#: An OpenAI-layout row's id: the fingerprint, then a random part.
_ROW_ID: Final = re.compile(r"^batch_req_(.+)_([0-9a-f]{16})$")

#: Random tails of row ids: 64 bits from a generator seeded by the OS, not a
#: uuid4 per row (a system call each, a moment for another thread to take the
#: GIL); reseeded in a forked child so that parent and child never repeat.
_ROW_IDS: Final = random.Random()
os.register_at_fork(after_in_child=_ROW_IDS.seed)

#: Anthropic's error type for an HTTP status.
_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
#: OpenAI's error type for an HTTP status.
_OPENAI_TYPES: Final = {401: "invalid_request_error", 403: "invalid_request_error", 429: "requests", 404: "invalid_request_error"}


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one call (or invalid line) came to.

    Attributes:
        status_code: The HTTP status, or None when there was no HTTP answer.
        request_id: The provider's request id, when it sent one.
        body: The parsed answer (success) or the provider's error JSON.
        code: Error code when there was no HTTP answer (``connection_error``).
        message: A one-line description of a failure.
        expired: The call's deadline passed before it was ever sent.
    """

    status_code: int | None = None
    request_id: str | None = None
    body: Any = None
    code: str | None = None
    message: str | None = None
    expired: bool = False

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


def openai_row(custom_id: str, fp: str, outcome: Outcome) -> dict[str, Any]:
    """An OpenAI ``BatchRequestOutput`` row."""
    response = None
    error = None
    if outcome.status_code is not None:
        body = outcome.body
        if not outcome.ok and not isinstance(body, dict):
            body = {"error": _openai_error(outcome)}
        response = {"status_code": outcome.status_code, "request_id": outcome.request_id, "body": body}
    else:
        error = {"code": outcome.code or "request_failed", "message": outcome.message or "the request failed"}
    row_id = f"batch_req_{fp}_{_ROW_IDS.getrandbits(64):016x}"
    return {"id": row_id, "custom_id": custom_id, "response": response, "error": error}


def fingerprint_of(row: Any) -> str | None:
    """The request fingerprint an apiexec row records, or None (not our row).

    Example:
        >>> fingerprint_of({"id": "batch_req_abc", "custom_id": "x"}) is None   # OpenAI's own
        True
    """
    if not isinstance(row, dict):
        return None
    fp = row.get(FINGERPRINT)
    if isinstance(fp, str) and fp:
        return fp
    row_id = row.get("id")
    match = _ROW_ID.match(row_id) if isinstance(row_id, str) else None
    return match.group(1) if match else None


def _openai_error(outcome: Outcome) -> dict[str, Any]:
    status = outcome.status_code or 0
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"message": outcome.message or f"HTTP {status}", "type": kind, "param": None, "code": None}


def anthropic_row(custom_id: str, fp: str, outcome: Outcome) -> dict[str, Any]:
    """An Anthropic Message Batches result row."""
    result: dict[str, Any]
    if outcome.ok:
        result = {"type": "succeeded", "message": outcome.body}
    elif outcome.expired:
        result = {"type": "expired"}
    else:
        result = {"type": "errored", "error": _anthropic_error(outcome)}
    return {"custom_id": custom_id, "result": result, FINGERPRINT: fp}


def _anthropic_error(outcome: Outcome) -> dict[str, Any]:
    body = outcome.body
    if isinstance(body, dict) and body.get("type") == "error" and isinstance(body.get("error"), dict):
        error = dict(body)
    else:
        status = outcome.status_code
        kind = "api_error" if status is None else _ANTHROPIC_TYPES.get(status, "api_error")
        error = {"type": "error", "error": {"type": kind, "message": outcome.message or f"HTTP {status}"}}
    error.setdefault("request_id", outcome.request_id)
    return error


def make_row(layout: str, custom_id: str, fp: str, outcome: Outcome) -> dict[str, Any]:
    """The row for ``outcome`` in ``layout`` (``"openai"`` or ``"anthropic"``)."""
    return anthropic_row(custom_id, fp, outcome) if layout == "anthropic" else openai_row(custom_id, fp, outcome)


def is_success(row: Any) -> bool:
    """True for a row (either layout) whose call succeeded.

    Example:
        >>> is_success({"custom_id": "a", "result": {"type": "succeeded", "message": {}}})
        True
        >>> is_success({"custom_id": "a", "response": {"status_code": 404}, "error": None})
        False
    """
    if not isinstance(row, dict):
        return False
    result = row.get("result")
    if isinstance(result, dict):
        return result.get("type") == "succeeded"
    if row.get("error") is not None:
        return False
    response = row.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    return isinstance(status, int) and 200 <= status < 300


_FIELD = re.compile(r'"(message|type|param|code)"\s*:\s*"((?:[^"\\]|\\.)*)"')
_CUT_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)$')


def salvage_error(excerpt: str) -> dict[str, Any] | None:
    """An OpenAI-shaped error body from a *cut* JSON excerpt, or None.

    The HTTP layer keeps only the first few hundred characters of an error
    body; a long one no longer parses, but its fields usually survive.

    Example:
        >>> salvage_error('{"error": {"message": "context too long", "type": "invalid_request_error", "par')
        {'error': {'message': 'context too long', 'type': 'invalid_request_error', 'param': None, 'code': None}}
    """
    fields: dict[str, Any] = {"message": None, "type": None, "param": None, "code": None}
    for name, value in _FIELD.findall(excerpt):
        if fields[name] is None:
            try:
                fields[name] = json.loads(f'"{value}"')
            except ValueError:
                fields[name] = value
    if fields["message"] is None:  # the message itself was cut: keep what arrived
        cut = _CUT_MESSAGE.search(excerpt)
        if cut is not None:
            fields["message"] = cut.group(1).replace('\\"', '"') + "..."
    return {"error": fields} if fields["message"] is not None else None


def error_json(text: str) -> Any:
    """The provider's error JSON from a response body, or None if it is not JSON.

    Example:
        >>> error_json('{"error": {"message": "no"}}')
        {'error': {'message': 'no'}}
        >>> error_json("<html>") is None
        True
    """
    try:
        return json.loads(text)
    except ValueError:
        return None
