"""The pooled ``requests.Session`` of an endpoint.

:func:`create_session` builds it once per endpoint:

- an :class:`~requests.adapters.HTTPAdapter` keeping ``pool_maxsize``
  connections, so many worker threads reuse connections instead of opening
  and discarding them (requests' default of 10 is too small for 16+ threads),
  with the configured (connect, read) timeouts as defaults;
- connections that attach their socket to the running attempt's
  :class:`~apiexec.http.deadline.Alarm` (so a total deadline can end a read
  blocked inside ``http.client``) and are detached when they go back to the
  pool;
- redirects that drop every credential (headers and query keys) when they
  leave the origin (scheme, host and port), where requests would drop only
  ``Authorization``, and only on a change of host;
- the environment (proxies, CA bundle) read once, at creation, not per
  request;
- the CA bundle checked once per connection pool instead of twice per
  HTTPS request, and responses built without walking a cookie jar when no
  ``Set-Cookie`` came (requests' own ``cert_verify`` and ``build_response``
  hooks, so requests' ``send``, its errors and any patch of it stay as they are);
- response headers read without the ``email`` package when they are plain
  ``Name: value`` lines (:mod:`apiexec.http.fast_headers`: same message,
  in about a quarter of the time);
- urllib3's debug log redacted (it logs each request's URL, query included).

Thread-safety contract: one session is shared by every worker thread of an
endpoint. apiexec never changes it after creating it; do not mutate
``endpoint.client`` while calls are running.
"""

from __future__ import annotations

import copyreg
import http.client
import os
import urllib.parse
from datetime import timedelta
from typing import Any, SupportsIndex

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

from apiexec.errors import ResponseTooLarge
from apiexec.http.config import EndpointConfig
from apiexec.http.credentials import CREDENTIAL_QUERY_PARAMS, install_log_filter
from apiexec.http.deadline import CURRENT_ALARM
from apiexec.http.fast_headers import FastHeadersResponse

USER_AGENT = "apiexec/0.1"
#: Bytes read (and decompressed) at a time: bounds the memory one read can take.
_READ_BYTES = 64 * 1024
#: URLs whose pool and request target an adapter remembers.
_REMEMBERED_URLS = 64
#: Bodies up to this size go out in one write with the request head.
_ONE_WRITE_BYTES = 256 * 1024


class _Hooks:
    """What the endpoint's connections (plain and TLS) add to urllib3's.

    - A connection attaches itself to the running attempt's alarm before
      waiting for a response.
    - It sends a request's head and a small body in one write. urllib3 writes
      them apart, so each request would cost two system calls and two TCP
      segments. Each call also gives the GIL away twice more, while other
      threads are waiting for it.
    """

    #: Responses whose headers skip the email parser (see :mod:`apiexec.http.fast_headers`).
    response_class: type[http.client.HTTPResponse] = FastHeadersResponse
    _apiexec_alarm: Any = None
    #: The request head, held until the body comes (see :meth:`request`).
    _apiexec_head: bytes | None = None
    _apiexec_holding = False

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        # (_apiexec_head is None here: every request ends by clearing it)
        self._apiexec_holding = (
            isinstance(body, bytes) and 0 < len(body) <= _ONE_WRITE_BYTES and not kwargs.get("chunked")
        )
        try:
            super().request(method, url, body, headers, **kwargs)  # type: ignore[misc]
            head = self._apiexec_head  # no body was sent after all: the head goes alone
        finally:
            self._apiexec_holding = False
            self._apiexec_head = None  # after an error, nothing held is sent
        if head is not None:
            super().send(head)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self._apiexec_holding:
            if self._apiexec_head is None:  # the head, from endheaders()
                self._apiexec_head = bytes(data)
                return
            data, self._apiexec_head, self._apiexec_holding = self._apiexec_head + data, None, False
        super().send(data)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        alarm = CURRENT_ALARM.get()
        if alarm is not None:
            alarm.attach(self)
            self._apiexec_alarm = alarm
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _AlarmedConnection(_Hooks, HTTPConnection):
    pass


class _AlarmedHTTPSConnection(_Hooks, HTTPSConnection):
    pass


class _Detaching:
    """A pool mixin: a connection given back is detached from its alarm first."""

    def _put_conn(self, conn: Any) -> None:
        alarm = getattr(conn, "_apiexec_alarm", None)
        if alarm is not None:
            alarm.detach(conn)
            conn._apiexec_alarm = None
        super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_Detaching, HTTPConnectionPool):
    ConnectionCls = _AlarmedConnection


class _HTTPSPool(_Detaching, HTTPSConnectionPool):
    ConnectionCls = _AlarmedHTTPSConnection


class PooledAdapter(HTTPAdapter):
    """An HTTPAdapter with default timeouts, alarmed connections and a body cap.

    Bodies not streamed are read here, in chunks, and refused with
    :class:`~apiexec.errors.ResponseTooLarge` past ``max_body_bytes`` counted
    after decompression, so a gzip bomb never fills memory. Socket timeouts
    never reach past the running call's deadline.

    Args:
        timeout: Default ``(connect, read)`` timeouts.
        pool_maxsize: Connections kept per host.
        max_body_bytes: Largest body accepted.

    Example:
        >>> adapter = PooledAdapter((10.0, 120.0), pool_maxsize=32, max_body_bytes=2**20)
        >>> adapter.default_timeout, adapter.max_body_bytes
        ((10.0, 120.0), 1048576)
    """

    def __init__(self, timeout: tuple[float, float], pool_maxsize: int, max_body_bytes: int = 1 << 40) -> None:
        self.default_timeout = timeout
        self.max_body_bytes = max_body_bytes
        # Per URL (and TLS settings): the connection pool and the request
        # line's target. requests works both out again on every send (five
        # URL parses, the proxy rules, the pool manager's key); an endpoint
        # sends to one URL. Only without proxies; bounded; a closed pool
        # (evicted, or the adapter closed) is looked up again.
        self._pools: dict[tuple[Any, ...], Any] = {}
        self._targets: dict[str, str] = {}
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        """requests' pool for ``request``, remembered per URL when no proxy applies."""
        if proxies or not request.url:
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        key = (request.url, verify, cert)
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:
            pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            if len(self._pools) >= _REMEMBERED_URLS:
                self._pools.clear()
            self._pools[key] = pool
        return pool

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        """The request line's target (path and query), remembered per URL when no proxy applies."""
        url = request.url
        if proxies or not url:
            return str(super().request_url(request, proxies))
        target = self._targets.get(url)
        if target is None:
            target = str(super().request_url(request, proxies))
            if len(self._targets) >= _REMEMBERED_URLS:
                self._targets.clear()
            self._targets[url] = target
        return target

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """requests' TLS settings for ``conn``, applied once per pool and settings.

        requests checks on every HTTPS request that the CA bundle exists (two
        ``stat`` calls, each a moment for another thread to take the GIL); the
        settings it applies depend only on the scheme, ``verify`` and ``cert``.
        """
        checked = (url.partition(":")[0].lower(), verify, cert)
        if getattr(conn, "_apiexec_tls_checked", None) != checked:
            super().cert_verify(conn, url, verify, cert)
            conn._apiexec_tls_checked = checked

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        """requests' response, its cookie jar filled only when cookies came.

        Example:
            >>> from urllib3 import HTTPResponse
            >>> prepared = requests.Request("POST", "http://127.0.0.1:9/v1").prepare()
            >>> raw = HTTPResponse(b"{}", headers={"Content-Type": "application/json; charset=utf-8"}, status=200)
            >>> response = PooledAdapter((1.0, 1.0), pool_maxsize=1).build_response(prepared, raw)
            >>> response.status_code, response.headers["content-type"], response.encoding, len(response.cookies)
            (200, 'application/json; charset=utf-8', 'utf-8', 0)
        """
        response = _Response()
        response.status_code = resp.status
        headers: requests.structures.CaseInsensitiveDict[str] = requests.structures.CaseInsensitiveDict()
        headers._store = _header_store(resp.headers)  # type: ignore[attr-defined]
        response.headers = headers
        response.encoding = requests.utils.get_encoding_from_headers(headers)
        response.raw = resp
        response.reason = resp.reason
        url = req.url
        response.url = url.decode("utf-8") if isinstance(url, bytes) else (url or "")
        if "set-cookie" in headers._store or "set-cookie2" in headers._store:  # type: ignore[attr-defined]
            requests.cookies.extract_cookies_to_jar(response.cookies, req, resp)
        response.request = req
        response.connection = self
        return response

    def close(self) -> None:
        """Close every pool (and forget them)."""
        self._pools.clear()
        super().close()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Connections through an HTTP(S) proxy are watched by the deadline too."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # SOCKS managers bring their own connection classes
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        timeout = kwargs.get("timeout")
        if timeout is None:
            timeout = self.default_timeout
        kwargs["timeout"] = _within_deadline(timeout)
        response = super().send(request, stream=True, **kwargs)
        if not stream:
            _read_capped(response, self.max_body_bytes)
        return response


class _Response(requests.Response):
    """requests' ``Response``, built without the parts :meth:`PooledAdapter.build_response` replaces.

    ``Response()`` fills a cookie jar (with its own cookie policy), a
    header dict and a ``timedelta`` that the adapter replaces at once or
    that most answers never use: together they cost more than the rest of
    building the response. Here the jar is made when first asked for;
    everything else is as requests leaves it. A pickle or a copy of one is
    requests' own ``Response``, with the same fields.
    """

    def __init__(self) -> None:  # every field of requests.Response.__init__, set here or by build_response
        self._content: Any = False
        self._content_consumed = False
        self._next = None
        self.history = []
        self.elapsed = _NO_TIME
        self.request = None  # type: ignore[assignment]  # (as requests.Response leaves it)

    @property
    def cookies(self) -> requests.cookies.RequestsCookieJar:
        """The response's cookie jar (made on first use)."""
        jar = self.__dict__.get("_cookie_jar")
        if jar is None:  # two threads asking first at once get the same jar (setdefault is atomic)
            jar = self.__dict__.setdefault("_cookie_jar", requests.cookies.cookiejar_from_dict({}))
        return jar

    @cookies.setter
    def cookies(self, jar: requests.cookies.RequestsCookieJar) -> None:
        self.__dict__["_cookie_jar"] = jar

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        """Pickled (and copied) as requests' own ``Response``: a pickle needs only requests to load."""
        return copyreg._reconstructor, (requests.Response, object, None), self.__getstate__()  # type: ignore[attr-defined]


#: A response's elapsed time until the sender sets it (timedelta is immutable).
_NO_TIME = timedelta(0)


def _header_store(raw_headers: Any) -> dict[str, tuple[str, str]]:
    """requests' header index (``lower-case name -> (name, value)``) of urllib3's headers.

    Repeated fields are joined with ``", "``, as requests joins them. urllib3's
    own index (``lower-case name -> [name, value, ...]``) is read directly
    when it is there: its ``__getitem__`` per name cost a call, a type check
    and a ``lower()`` each.
    """
    if type(raw_headers) is urllib3.HTTPHeaderDict:
        return {key: (values[0], ", ".join(values[1:])) for key, values in raw_headers._container.items()}
    return {name.lower(): (name, raw_headers[name]) for name in raw_headers}


def has_header(headers: Any, name: str) -> bool:
    """``name in headers`` (``name`` in lower case) without the ``KeyError`` a miss raises inside.

    requests' ``CaseInsensitiveDict`` answers ``in`` through ``Mapping``: a
    lookup that raises and catches ``KeyError`` for every header a response
    does not have (``Set-Cookie``, ``Location``, ``Content-Encoding``: most).

    Example:
        >>> headers = requests.structures.CaseInsensitiveDict({"Location": "/x"})
        >>> has_header(headers, "location"), has_header(headers, "set-cookie"), has_header({"a": 1}, "a")
        (True, False, True)
    """
    if isinstance(headers, requests.structures.CaseInsensitiveDict):
        return name in headers._store  # type: ignore[attr-defined]
    return name in headers


def _within_deadline(timeout: Any) -> Any:
    """Socket timeouts no longer than the time left to the call's deadline."""
    alarm = CURRENT_ALARM.get()
    left = alarm.seconds_left() if alarm is not None else None
    if left is None or not isinstance(timeout, tuple):
        return timeout
    left = max(left, 0.001)  # the deadline check before sending raised at 0
    return tuple(left if t is None else min(t, left) for t in timeout)


def _read_capped(response: requests.Response, limit: int) -> None:
    """Read the whole body into ``response`` (as requests would), up to ``limit`` bytes.

    A body of a stated length and no content coding (the usual API answer)
    is read at once, and refused before reading when its length passes the
    cap; any other (chunked, compressed: a decompression bomb) is read in
    chunks, counted after decompression.
    """
    raw = response.raw
    length = getattr(raw, "length_remaining", None)
    try:
        if isinstance(length, int) and not has_header(response.headers, "content-encoding"):
            if length > limit:
                raise _too_large(response, limit)
            response._content = _read_all(raw)
        else:
            chunks, total = [], 0
            for chunk in response.iter_content(_READ_BYTES):
                total += len(chunk)
                if total > limit:
                    raise _too_large(response, limit)
                chunks.append(chunk)
            response._content = b"".join(chunks)
    except BaseException:
        response.close()
        raise
    response._content_consumed = True  # type: ignore[attr-defined]


def _read_all(raw: Any) -> bytes:
    """``raw.read()``, its errors turned into requests' as ``iter_content`` turns them."""
    try:
        return bytes(raw.read(decode_content=True))
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def _too_large(response: requests.Response, limit: int) -> ResponseTooLarge:
    url = _without_query(response.url or "")
    return ResponseTooLarge(
        f"{url}: the response body passed max_body_bytes={limit} (after decompression)", url=url, limit=limit
    )


class CredentialSession(requests.Session):
    """A Session that drops every credential on a redirect to another origin.

    Args:
        secret_headers: Lower-case names of the headers that carry credentials.

    Example:
        >>> session = CredentialSession(frozenset({"x-goog-api-key"}))
        >>> "x-goog-api-key" in session.secret_headers
        True
    """

    def __init__(self, secret_headers: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.secret_headers = secret_headers

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        new_url = prepared_request.url or ""
        if response.request.url and _origin(response.request.url) != _origin(new_url):
            for name in list(prepared_request.headers):
                if name.lower() in self.secret_headers:
                    del prepared_request.headers[name]
            prepared_request.url = _without_credential_params(new_url)


def create_session(config: EndpointConfig) -> requests.Session:
    """A new session for ``config``: pool, timeouts, redirects, environment.

    Example:
        >>> cfg = EndpointConfig(provider="t", endpoint="chat", base_url="http://127.0.0.1:9/v1")
        >>> session = create_session(cfg)
        >>> type(session.get_adapter("http://127.0.0.1:9/v1")).__name__
        'PooledAdapter'
        >>> session.close()
    """
    install_log_filter()
    session = CredentialSession(config.secret_header_names())
    adapter = PooledAdapter((config.connect_timeout, config.timeout), config.pool_maxsize, config.max_body_bytes)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Read the environment once instead of on every request (trust_env
    # makes requests look up proxies, netrc and CA bundles per call).
    session.proxies.update(requests.utils.get_environ_proxies(config.full_url))
    session.verify = resolve_verify(config.verify)
    session.trust_env = False
    session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
    return session


def resolve_verify(verify: bool | str) -> bool | str:
    """Read the CA bundle from the environment once (as requests would)."""
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or ""), port


def _without_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _without_credential_params(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    kept = [
        (name, value)
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if name.lower() not in CREDENTIAL_QUERY_PARAMS
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept)))
