"""One request through a pooled connection, without requests' per-call detours.

:meth:`requests.adapters.HTTPAdapter.send` does, for every request, work an
endpoint does not need again: it checks the CA bundle on disk (two ``stat``
calls per HTTPS request, each a moment when another thread takes the GIL),
hands urllib3 the request's :class:`~requests.structures.CaseInsensitiveDict`
(every header looked up through Python-level ``__getitem__``), and builds the
response with a cookie jar it fills even when no ``Set-Cookie`` came back.

:func:`send_direct` sends the same request through the same pool with the same
urllib3 arguments (no redirects followed, no retries beyond the adapter's,
body left unread), and turns urllib3's errors into requests' exceptions by
requests' documented rules (see :func:`as_requests_error`), so everything
above it sees exactly what ``HTTPAdapter.send`` would have given it. It is
used only without a proxy and with a ``(connect, read)`` timeout; anything
else takes requests' own path.

Example:
    >>> import requests
    >>> from urllib3.exceptions import MaxRetryError, NewConnectionError
    >>> reason = NewConnectionError(None, "refused")
    >>> type(as_requests_error(MaxRetryError(None, "/v1", reason), None)).__name__
    'ConnectionError'
"""

from __future__ import annotations

from typing import Any

import requests
from requests import exceptions as rex
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3 import exceptions as u3
from urllib3.util.timeout import Timeout

__all__ = ["as_requests_error", "build_response", "send_direct"]


def send_direct(
    adapter: Any, pool: Any, request: requests.PreparedRequest, target: str, timeout: tuple[Any, Any]
) -> Any:
    """Send ``request`` through ``pool`` as ``HTTPAdapter.send`` would; the body is not read.

    Args:
        adapter: The adapter the pool belongs to (its ``max_retries``; set as
            the response's ``connection``).
        pool: The urllib3 connection pool for the request's URL, its TLS
            settings already applied.
        request: The prepared request.
        target: The request line's target (path and query).
        timeout: ``(connect, read)`` seconds (None: no limit).

    Raises:
        requests.RequestException: The subclass requests raises for the failure.
    """
    headers = request.headers
    body = request.body
    chunked = not (body is None or "Content-Length" in headers)
    connect, read = timeout
    try:
        raw = pool.urlopen(
            method=request.method,
            url=target,
            body=body,
            headers=dict(headers.items()),  # a plain dict: urllib3 reads each header twice
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=adapter.max_retries,
            timeout=Timeout(connect=connect, read=read),
            chunked=chunked,
        )
    except (u3.ProtocolError, OSError, u3.HTTPError) as exc:
        raise as_requests_error(exc, request) from exc
    return build_response(adapter, request, raw)


def as_requests_error(exc: BaseException, request: requests.PreparedRequest | None) -> BaseException:
    """The exception ``HTTPAdapter.send`` raises for urllib3's ``exc`` (the same rules).

    - a protocol error or an ``OSError`` (refused, reset): ``ConnectionError``;
    - retries exhausted (``MaxRetryError``), by its reason: a connect timeout
      that is not a failed new connection is ``ConnectTimeout``, a bad
      response ``RetryError``, a proxy failure ``ProxyError``, a TLS failure
      ``SSLError``, anything else ``ConnectionError``;
    - a closed pool: ``ConnectionError``; a proxy failure: ``ProxyError``;
      a TLS failure: ``SSLError``; a read timeout: ``ReadTimeout``; an
      invalid header: ``InvalidHeader``;
    - any other urllib3 error is returned unchanged (requests re-raises it).

    Example:
        >>> from urllib3.exceptions import ReadTimeoutError
        >>> type(as_requests_error(ReadTimeoutError(None, "/v1", "read timed out"), None)).__name__
        'ReadTimeout'
    """
    if isinstance(exc, (u3.ProtocolError, OSError)):
        return rex.ConnectionError(exc, request=request)
    if isinstance(exc, u3.MaxRetryError):
        return _exhausted(exc, request)
    if isinstance(exc, u3.ClosedPoolError):
        return rex.ConnectionError(exc, request=request)
    if isinstance(exc, u3.ProxyError):
        return rex.ProxyError(exc)
    if isinstance(exc, u3.SSLError):
        return rex.SSLError(exc, request=request)
    if isinstance(exc, u3.ReadTimeoutError):
        return rex.ReadTimeout(exc, request=request)
    if isinstance(exc, u3.InvalidHeader):
        return rex.InvalidHeader(exc, request=request)
    return exc


def _exhausted(exc: u3.MaxRetryError, request: requests.PreparedRequest | None) -> BaseException:
    reason = exc.reason
    if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(reason, u3.NewConnectionError):
        return rex.ConnectTimeout(exc, request=request)
    if isinstance(reason, u3.ResponseError):
        return rex.RetryError(exc, request=request)
    if isinstance(reason, u3.ProxyError):
        return rex.ProxyError(exc, request=request)
    if isinstance(reason, u3.SSLError):
        return rex.SSLError(exc, request=request)
    return rex.ConnectionError(exc, request=request)


def build_response(adapter: Any, request: requests.PreparedRequest, raw: Any) -> requests.Response:
    """``HTTPAdapter.build_response``, filling the cookie jar only when cookies came.

    Example:
        >>> from urllib3 import HTTPResponse
        >>> prepared = requests.Request("POST", "http://127.0.0.1:9/v1").prepare()
        >>> raw = HTTPResponse(b"{}", headers={"Content-Type": "application/json; charset=utf-8"}, status=200)
        >>> response = build_response(None, prepared, raw)
        >>> response.status_code, response.headers["content-type"], response.encoding, len(response.cookies)
        (200, 'application/json; charset=utf-8', 'utf-8', 0)
    """
    response = requests.Response()
    response.status_code = raw.status
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    raw_headers = raw.headers  # repeated fields joined with ", ", as requests joins them
    headers._store = {name.lower(): (name, raw_headers[name]) for name in raw_headers}  # type: ignore[attr-defined]
    response.headers = headers
    response.encoding = get_encoding_from_headers(headers)
    response.raw = raw
    response.reason = raw.reason
    url = request.url
    response.url = url.decode("utf-8") if isinstance(url, bytes) else (url or "")
    if "set-cookie" in headers._store or "set-cookie2" in headers._store:  # type: ignore[attr-defined]
        extract_cookies_to_jar(response.cookies, request, raw)
    response.request = request
    response.connection = adapter
    return response
