"""Every failure of the HTTP layer mapped to apiexec's error tree, in one place.

Like httpx's ``map_httpcore_exceptions`` and openai-python's
``_make_status_error``: the transport's exceptions, error statuses, error
bodies and stream error events all become :class:`~apiexec.errors.APIError`
subclasses here, raised ``from`` the original. Redaction (every credential of
the endpoint, credential query values, bearer tokens) and request-id parsing
also happen once, here::

    requests/urllib3/OSError ─ transport_error ─ DeadlineExceeded (total deadline passed)
                                                ├ APITimeoutError (read/connect, stream idle)
                                                ├ APIConnectionError (refused, reset, cut)
                                                └ APIError (TLS verification, anything else)
    status >= 400 ─ status_error ─ ServiceRefused (401, 402, 403, quota/billing 429)
                                 ├ RateLimitError (429)
                                 └ APIStatusError (the rest)
    200 + {"error": ...} ─ body_error ─ APIError

Example:
    >>> from apiexec.http.config import EndpointConfig
    >>> mapper = ErrorMapper(EndpointConfig(provider="t", endpoint="chat", base_url="http://h/v1", api_key="k-123"))
    >>> err = mapper.status_error(429, "Too Many Requests", {"retry-after": "2"},
    ...                           '{"error": {"type": "insufficient_quota", "message": "k-123"}}')
    >>> type(err).__name__, err.error_type, err.retry_after, "k-123" in str(err)
    ('ServiceRefused', 'insufficient_quota', 2.0, False)
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import requests
import urllib3

from apiexec.call_context import request_id
from apiexec.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    DeadlineExceeded,
    RateLimitError,
    ServiceRefused,
)
from apiexec.http.config import EndpointConfig
from apiexec.http.deadline import Alarm, CallDeadline
from apiexec.http.rate_limit_headers import parse_retry_after

logger = logging.getLogger(__name__)

#: Characters of an error body kept in exceptions.
BODY_EXCERPT_CHARS: Final = 300
#: Statuses that mean the account (key, billing, permission) is refused.
REFUSED_STATUSES: Final = frozenset({401, 402, 403})
#: Error ``type``/``code`` values that mean quota or billing is exhausted:
#: a 429 with one of them is not a rate limit, and retrying cannot succeed.
QUOTA_ERROR_CODES: Final = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "account_deactivated"}
)
#: Errors the transport may raise while a body is read.
BODY_ERRORS: Final = (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)


def should_retry_header(headers: Mapping[str, str]) -> bool | None:
    """``x-should-retry: true/false`` (openai-python honours it); None otherwise."""
    value = str(headers.get("x-should-retry", "")).strip().lower()
    return {"true": True, "false": False}.get(value)


def error_type(body: Any) -> str | None:
    """The ``type`` (else ``code``) of an OpenAI or Anthropic error body."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        for key in ("type", "code"):
            if isinstance(error.get(key), str) and error[key]:
                return str(error[key])
        for key in ("code", "status"):  # Gemini: {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}
            if isinstance(error.get(key), str):
                return str(error[key])
    return None


def is_error_body(body: Any) -> bool:
    """A JSON body that reports a failure although the status said success."""
    if not isinstance(body, Mapping):
        return False
    error = body.get("error")
    return bool(error) or body.get("type") == "error"


class ErrorMapper:
    """Builds the errors of one endpoint: its URL, redaction and retry cap.

    Args:
        config: The endpoint's configuration.
    """

    def __init__(self, config: EndpointConfig) -> None:
        self._config = config
        parts = urllib.parse.urlsplit(config.full_url)
        #: The URL without query or fragment: what errors and logs show.
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    def redact(self, text: str) -> str:
        """``text`` with the endpoint's credentials masked."""
        return self._config.redact(text)

    def excerpt(self, text: str) -> str:
        """A short, redacted excerpt (redacted before the cut: no half keys)."""
        return self.redact(text)[:BODY_EXCERPT_CHARS]

    # -- transport ----------------------------------------------------------

    def transport_error(
        self, exc: BaseException, *, phase: str, deadline: CallDeadline | None = None, alarm: Alarm | None = None
    ) -> APIError | DeadlineExceeded:
        """Map a transport exception raised during ``phase``.

        The alarm (or the clock) is asked first: a read ended by the
        watchdog shows up as a reset or a short read, but it was the deadline.
        """
        self.scrub(exc)
        fired = alarm.fired if alarm is not None else None
        if fired == "idle":
            return APITimeoutError(
                f"{self.url}: no event from the stream within {self._config.timeout:g}s", url=self.url
            )
        if fired == "deadline" or (deadline is not None and deadline.left() <= 0):
            return deadline.error(phase) if deadline is not None else DeadlineExceeded(phase, 0.0)
        url = self.url
        name = type(exc).__name__
        cause = _timeout_cause(exc)
        if phase == "stream":  # the body of an event stream: a broken stream, retryable before its first event
            if cause is not None:
                return APITimeoutError(f"{url}: timed out reading the stream ({name})", url=url)
            return APIConnectionError(f"{url}: the stream broke ({name})", url=url)
        if cause is not None:
            return APITimeoutError(f"{url}: timed out ({type(cause).__name__})", url=url)
        if isinstance(exc, requests.exceptions.SSLError):  # retrying cannot fix a certificate
            return APIError(f"{url}: TLS verification failed ({name})", url=url)
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            return APIConnectionError(f"{url}: connection failed ({name})", url=url)
        if isinstance(exc, requests.exceptions.ContentDecodingError):
            return APIError(f"{url}: the response body could not be decoded ({name})", url=url)
        if isinstance(exc, requests.RequestException):  # an OSError too: checked before
            return APIError(f"{url}: request failed ({name})", url=url)
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            return APIConnectionError(f"{url}: the connection broke ({name})", url=url)
        return APIError(f"{url}: request failed ({name})", url=url)

    def scrub(self, exc: BaseException) -> None:
        """Redact the messages of ``exc`` and of every exception chained to it.

        The mapped error is raised ``from`` the transport's exception, and a
        printed traceback shows that whole chain, whose messages quote the
        URL (``Max retries exceeded with url: /v1/x?key=...``).
        """
        seen: set[int] = set()
        todo: list[BaseException | None] = [exc]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            try:
                # Strings only: chained exceptions are scrubbed in turn and keep their type.
                current.args = tuple(self.redact(arg) if isinstance(arg, str) else arg for arg in current.args)
            except (AttributeError, TypeError):  # an exception that refuses new args keeps them
                pass
            todo += [current.__cause__, current.__context__]
            todo += [arg for arg in current.args if isinstance(arg, BaseException)]
            reason = getattr(current, "reason", None)  # urllib3's MaxRetryError
            todo.append(reason if isinstance(reason, BaseException) else None)

    # -- statuses and bodies ------------------------------------------------

    def status_error(
        self, status: int, reason: str | None, headers: Mapping[str, str], text: str
    ) -> APIStatusError:
        """The error for an error status, with the server's retry signals."""
        body = _json_or_none(text)
        kind_name = error_type(body)
        retry_after = parse_retry_after(headers)
        should_retry = should_retry_header(headers)
        excerpt = self.excerpt(text)
        message = f"{self.url} answered {status} {reason or ''}".rstrip()
        if excerpt:
            message += f": {excerpt}"
        cls: type[APIStatusError] = APIStatusError
        if status in REFUSED_STATUSES or (status == 429 and kind_name in QUOTA_ERROR_CODES):
            cls = ServiceRefused
        elif status == 429:
            cls = RateLimitError
        cap = self._config.retry_after_cap
        if retry_after is not None and retry_after > cap:
            # Retrying before the server's time is a sure second refusal.
            message += f" (the server asked to wait {retry_after:g}s, more than retry_after_cap={cap:g}s)"
            should_retry = False
        return cls(
            message,
            status_code=status,
            url=self.url,
            body_excerpt=excerpt,
            request_id=request_id(headers),
            retry_after=retry_after,
            should_retry=should_retry,
            error_type=kind_name,
        )

    def body_error(self, status: int, body: Any) -> APIError:
        """A success status whose JSON body reports an error."""
        detail = json.dumps(body.get("error") or body, ensure_ascii=False, default=str)
        return APIError(f"{self.url} answered {status} with an error body: {self.excerpt(detail)}", url=self.url)

    def not_event_stream(self, status: int, text: str) -> APIError:
        """A JSON answer where an event stream was asked for."""
        body = _json_or_none(text)
        if is_error_body(body):
            return self.body_error(status, body)
        return APIError(f"{self.url} answered {status} with JSON, not an event stream", url=self.url)

    def not_json(self, status: int) -> APIError:
        return APIError(f"{self.url} answered {status} with a body that is not JSON", url=self.url)

    def event_error(self, name: str, data: Mapping[str, Any]) -> APIError:
        """A stream's error event (Anthropic ``event: error``, OpenAI ``{"error": ...}``)."""
        detail = json.dumps(data.get("error") or data, ensure_ascii=False, default=str)
        return APIError(f"{self.url}: the stream reported an error: {self.excerpt(detail)}", url=self.url)

    def bad_event(self, what: str) -> APIError:
        return APIError(f"{self.url}: an event of the stream is {what}", url=self.url)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _timeout_cause(exc: BaseException) -> BaseException | None:
    """The timeout behind ``exc``, or None.

    ``exc`` itself, or the urllib3 timeout that requests wraps in a plain
    ``ConnectionError`` when a body stalls (``Response.iter_content``): a
    server that sent its headers and then went silent timed out, it did not
    refuse the connection.
    """
    timeouts = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    if isinstance(exc, timeouts):
        return exc
    cause = next((arg for arg in exc.args if isinstance(arg, timeouts)), None)
    if cause is None and isinstance(exc.__context__, timeouts):
        return exc.__context__
    return cause
