"""Endpoint: one HTTP API endpoint over one pooled ``requests.Session``.

``call(request)`` is a chain of short steps::

    call ─ cache? ─ retry policy ─ _call_requests ─ session.request ─ _parse

``stream(request)`` is the same chain up to the first event, then a
generator over the server-sent events (see :mod:`apiexec.http.sse`)::

    stream ─ retry policy ─ _open_stream ─ session.request(stream=True) ─ first event
           ─ yield events ... ─ _EventStream.close (drain briefly, release)

The session is created lazily (thread-safely) or by ``with endpoint:``, and
closed when the block is left, also after an exception. Its
:class:`~requests.adapters.HTTPAdapter` keeps ``pool_maxsize`` connections
so that many worker threads reuse connections instead of opening and
discarding them, and it applies the configured timeouts to every request.

Thread-safety contract: one Endpoint (and its session) is shared by every
worker thread. apiexec never changes the session after creating it; the
environment (proxies, CA bundle) is read once at creation, not per request.
Do not mutate ``endpoint.client`` while calls are running.

Example:
    >>> cfg = EndpointConfig(provider="local", endpoint="chat/completions",
    ...                      base_url="http://127.0.0.1:8000/v1")
    >>> with Endpoint(cfg) as ep:                            # doctest: +SKIP
    ...     ep.call({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator, Mapping
from types import TracebackType
from typing import Any, Final

import requests
import urllib3
from requests.adapters import HTTPAdapter

from apiexec.call_context import REQUEST_ID_HEADERS, note_attempt, note_response, wait_before_retry
from apiexec.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
)
from apiexec.http.cache import ResponseCache, cache_key
from apiexec.http.config import EndpointConfig
from apiexec.http.rate_limit_headers import parse_retry_after
from apiexec.http.retry import retry_policy
from apiexec.http.sse import DONE, ServerSentEvent, iter_sse

logger = logging.getLogger(__name__)

#: Characters of an error body kept in exceptions.
BODY_EXCERPT_CHARS: Final = 300
#: Credential headers besides Authorization (which requests strips itself).
_CREDENTIAL_HEADERS: Final = ("x-api-key", "api-key")
#: When a stream is closed before its end, the rest is read for at most this
#: long (seconds) and this many bytes so that the connection can go back to
#: the pool; a server still generating is cut off instead (which also stops
#: the generation, as LLM providers document).
STREAM_DRAIN_TIMEOUT: Final = 0.1
STREAM_DRAIN_BYTES: Final = 64 * 1024
#: Bytes asked of the socket per read of a stream that is not chunked.
_STREAM_READ_BYTES: Final = 8 * 1024
#: Errors the transport may raise while a stream body is read.
_BODY_ERRORS: Final = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class _Session(requests.Session):
    """A Session that drops every credential header on a cross-host redirect.

    requests strips only ``Authorization``; an ``x-api-key`` (Anthropic)
    would otherwise follow a redirect to another host.
    """

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        url = prepared_request.url or ""
        if response.request.url and self.should_strip_auth(response.request.url, url):
            for name in _CREDENTIAL_HEADERS:
                prepared_request.headers.pop(name, None)


class _PooledAdapter(HTTPAdapter):
    """An HTTPAdapter that applies default (connect, read) timeouts."""

    def __init__(self, timeout: tuple[float, float], pool_maxsize: int) -> None:
        self.default_timeout = timeout
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().send(request, **kwargs)


class Endpoint:
    """Calls one endpoint, with pooling, retries, typed errors and a cache.

    Args:
        config: Where and how to call.
        sleep: How retries wait (tests inject a recorder). The default
            sleeps, and ends at once when the executor running the call
            shuts down.

    Raises:
        TypeError: ``config`` is not an :class:`EndpointConfig`.

    Example:
        >>> ep = Endpoint.for_provider("openai", "chat/completions")   # doctest: +SKIP
    """

    def __init__(self, config: EndpointConfig, *, sleep: Callable[[float], Any] = wait_before_retry) -> None:
        if not isinstance(config, EndpointConfig):
            raise TypeError(f"config must be an EndpointConfig, not {type(config).__name__}")
        self.config = config
        self.client: requests.Session | None = None
        self._client_lock = threading.Lock()
        self._retrying = retry_policy(
            max_retries=config.max_retries,
            backoff_base=config.backoff_base,
            backoff_max=config.backoff_max,
            retry_after_cap=config.retry_after_cap,
            sleep=sleep,
        )
        self.cache = ResponseCache(config.cache_size, config.cache_ttl)

    @classmethod
    def for_provider(cls, provider: str, endpoint: str | None = None, **overrides: Any) -> Endpoint:
        """An endpoint from a provider preset (see :mod:`apiexec.http.presets`)."""
        from apiexec.http.presets import preset_config

        return cls(preset_config(provider, endpoint, **overrides))

    # -- session life-cycle ---------------------------------------------------

    def _create_client(self) -> requests.Session:
        """A new session with a pool sized to ``pool_maxsize`` and timeouts."""
        cfg = self.config
        session = _Session()
        adapter = _PooledAdapter((cfg.connect_timeout, cfg.timeout), cfg.pool_maxsize)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Read the environment once instead of on every request (trust_env
        # makes requests look up proxies, netrc and CA bundles per call).
        session.proxies.update(requests.utils.get_environ_proxies(cfg.full_url))
        session.verify = _resolve_verify(cfg.verify)
        session.trust_env = False
        session.headers.update({"Accept": "application/json", "User-Agent": "apiexec/0.1"})
        return session

    def _session(self) -> requests.Session:
        client = self.client
        if client is None:
            with self._client_lock:
                if self.client is None:
                    self.client = self._create_client()
                client = self.client
        return client

    def close(self) -> None:
        """Close the session and its connections. Safe to call twice."""
        with self._client_lock:
            old, self.client = self.client, None
        if old is not None:
            old.close()

    def __enter__(self) -> Endpoint:
        self._session()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- calling --------------------------------------------------------------

    def call(
        self,
        request: Mapping[str, Any],
        cache_control: bool = False,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send ``request`` as JSON and return the parsed JSON response.

        Args:
            request: The request body.
            cache_control: Answer an identical earlier request from the cache.
            headers: Extra headers for this call.

        Returns:
            The parsed JSON body (None for an empty body).

        Raises:
            APIStatusError: An error status, after retries where retryable.
            RateLimitError: 429 after the last retry.
            APIConnectionError: Connection failed after retries.
            APITimeoutError: Timed out after retries.
        """
        payload = dict(request)
        key = cache_key(self.config.method, self.config.full_url, payload) if cache_control else None
        if key is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        send_headers = self._headers(headers)
        result = self._retrying.copy()(self._call_requests, payload, send_headers)
        if key is not None and result is not None:
            self.cache.put(key, result)
        return result

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        headers.update(self.config.auth_headers())
        headers.update(self.config.default_headers)
        headers.update(extra or {})
        return headers

    def _call_requests(self, payload: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
        """One attempt: send, map transport errors, parse the response."""
        return self._parse(self._send(payload, headers))

    def _send(self, payload: Mapping[str, Any], headers: Mapping[str, str], **options: Any) -> requests.Response:
        """Count the attempt and send the request; map transport errors."""
        session = self._session()
        note_attempt()
        try:
            if self.config.method == "GET":
                return session.request(
                    method="GET", url=self.config.full_url, headers=headers, params=payload, **options
                )
            return session.request(
                method=self.config.method, url=self.config.full_url, headers=headers, json=payload, **options
            )
        except requests.RequestException as exc:
            raise self._transport_error(exc) from exc

    def _parse(self, response: requests.Response) -> Any:
        note_response(response.status_code, response.headers)
        if not response.ok:
            raise self._status_error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise APIError(
                f"{self._safe_url()} answered {response.status_code} with a body that is not JSON",
                url=self._safe_url(),
            ) from exc

    # -- streaming ------------------------------------------------------------

    def stream(
        self,
        request: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Send ``request`` with ``"stream": true``; yield its events as they arrive.

        Each item is the parsed JSON ``data`` of one server-sent event:
        OpenAI ``chat.completion.chunk`` dicts (the closing ``data: [DONE]``
        is not yielded), or Anthropic events, whose ``type`` is their
        ``event:`` name. :func:`apiexec.llm.stream_assembly.assemble` joins them
        into the final message. OpenAI sends ``usage`` only when the request
        asks for it with ``stream_options={"include_usage": True}``.

        Nothing is sent until the first item is asked for. Up to the first
        event the retry policy of :meth:`call` applies (connection errors,
        408/409/429/5xx, ``retry-after``); once an event was yielded a broken
        connection raises :class:`APIConnectionError` and is not retried, as
        the consumer has already seen data. The cache never applies.

        The response is always closed when the generator ends, also when the
        consumer stops early (``break`` or ``close()``): its rest is read
        for at most :data:`STREAM_DRAIN_TIMEOUT` so the connection can be
        reused, else the connection is closed, which stops the server's
        generation. Consume one stream on one thread.

        Args:
            request: The request body (not modified).
            headers: Extra headers for this call.

        Yields:
            One dict per event.

        Raises:
            APIStatusError: An error status, after retries where retryable.
            RateLimitError: 429 after the last retry.
            APIConnectionError: Connection failed after retries, or broke
                during the stream.
            APITimeoutError: Timed out after retries, or during the stream.
            APIError: The stream reported an error event, an event is not a
                JSON object, or the server answered JSON instead of a stream.

        Example:
            >>> for chunk in endpoint.stream({"model": "m", "messages": msgs}):  # doctest: +SKIP
            ...     print(chunk["choices"][0]["delta"].get("content", ""), end="")
        """
        payload = {**request, "stream": True}
        send_headers = self._headers({"Accept": "text/event-stream", **(headers or {})})
        events, first = self._retrying.copy()(self._open_stream, payload, send_headers)
        try:
            if first is None:
                return
            yield first
            yield from events
        finally:
            events.close()

    def _open_stream(
        self, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[_EventStream, dict[str, Any] | None]:
        """One attempt: send, check the answer, read up to the first event."""
        response = self._send(payload, headers, stream=True)
        note_response(response.status_code, response.headers)
        events = _EventStream(response, self)
        try:
            if not response.ok:
                raise self._status_error(response)
            self._check_event_stream(response)
            return events, next(events, None)
        except _BODY_ERRORS as exc:
            events.close()
            raise self._stream_error(exc) from exc
        except BaseException:
            events.close()
            raise

    def _check_event_stream(self, response: requests.Response) -> None:
        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "application/json":
            raise APIError(
                f"{self._safe_url()} answered {response.status_code} with JSON, not an event stream",
                url=self._safe_url(),
            )

    def _event_data(self, event: ServerSentEvent) -> dict[str, Any] | None:
        """The event's parsed data; None at ``[DONE]``.

        Raises:
            APIError: The data is not a JSON object, or it reports an error.
        """
        if event.data == DONE:
            return None
        url = self._safe_url()
        try:
            data = json.loads(event.data)
        except ValueError:
            raise APIError(f"{url}: an event of the stream is not JSON", url=url) from None
        if not isinstance(data, dict):
            raise APIError(f"{url}: an event of the stream is not a JSON object", url=url)
        if _is_error_event(event.event, data):
            detail = json.dumps(data.get("error") or data, ensure_ascii=False)
            excerpt = self._redact(detail)[:BODY_EXCERPT_CHARS]
            raise APIError(f"{url}: the stream reported an error: {excerpt}", url=url)
        return data

    # -- errors ---------------------------------------------------------------

    def _safe_url(self) -> str:
        """The URL without query or fragment (never carries credentials)."""
        parts = urllib.parse.urlsplit(self.config.full_url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    def _redact(self, text: str) -> str:
        key = self.config.api_key
        secret = key.reveal() if key is not None and hasattr(key, "reveal") else key
        return text.replace(secret, "***") if isinstance(secret, str) and secret else text

    def _transport_error(self, exc: requests.RequestException) -> APIError:
        url = self._safe_url()
        timeout = _timeout_cause(exc)
        if timeout is not None:
            return APITimeoutError(f"{url}: timed out ({type(timeout).__name__})", url=url)
        if isinstance(exc, requests.exceptions.SSLError):  # retrying cannot fix a certificate
            return APIError(f"{url}: TLS verification failed ({type(exc).__name__})", url=url)
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            return APIConnectionError(f"{url}: connection failed ({type(exc).__name__})", url=url)
        return APIError(f"{url}: request failed ({type(exc).__name__})", url=url)

    def _stream_error(self, exc: BaseException) -> APIConnectionError:
        """Map an error raised while a stream's body is read."""
        if isinstance(exc, requests.RequestException):
            error = self._transport_error(exc)
            if isinstance(error, APIConnectionError):
                return error
        url = self._safe_url()
        if _timeout_cause(exc) is not None:
            return APITimeoutError(f"{url}: timed out reading the stream ({type(exc).__name__})", url=url)
        return APIConnectionError(f"{url}: the stream broke ({type(exc).__name__})", url=url)

    def _status_error(self, response: requests.Response) -> APIStatusError:
        status = response.status_code
        # Redact before cutting: a key straddling the cut would leak its prefix.
        excerpt = self._redact(response.text)[:BODY_EXCERPT_CHARS]
        request_id = next(
            (response.headers[h] for h in REQUEST_ID_HEADERS if h in response.headers), None
        )
        retry_after = parse_retry_after(response.headers)
        kind = RateLimitError if status == 429 else APIStatusError
        message = f"{self._safe_url()} answered {status} {response.reason or ''}".rstrip()
        if excerpt:
            message += f": {excerpt}"
        return kind(
            message,
            status_code=status,
            url=self._safe_url(),
            body_excerpt=excerpt,
            request_id=request_id,
            retry_after=retry_after,
        )

    def __repr__(self) -> str:
        state = "open" if self.client is not None else "closed"
        return f"Endpoint(provider={self.config.provider!r}, url={self._safe_url()!r}, {state})"


class _EventStream:
    """The events of one streamed response, and its release.

    Iterating yields each event's parsed data and stops at ``[DONE]`` or at
    the end of the body; transport errors become :class:`APIConnectionError`.
    ``close()`` (safe twice) drains the rest within a small budget so the
    connection can return to the pool, then closes the response.
    """

    def __init__(self, response: requests.Response, endpoint: Endpoint) -> None:
        self._response: requests.Response | None = response
        self._endpoint = endpoint
        self._body = _body_chunks(response)
        self._events = iter_sse(self._body)
        self._done = False

    def __iter__(self) -> _EventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._done:
            raise StopIteration
        try:
            event = next(self._events, None)
        except _BODY_ERRORS as exc:
            self._done = True
            raise self._endpoint._stream_error(exc) from exc
        data = None if event is None else self._endpoint._event_data(event)
        if data is None:
            self._done = True
            raise StopIteration
        return data

    def close(self) -> None:
        """Drain what is left within the budget, then close the response."""
        response, self._response = self._response, None
        if response is None:
            return
        self._done = True
        try:
            self._drain(response)
        finally:
            response.close()

    def _drain(self, response: requests.Response) -> None:
        sock = _socket_of(response)
        if sock is None:  # body read to its end, or no way to bound the wait
            return
        deadline = time.monotonic() + STREAM_DRAIN_TIMEOUT
        drained = 0
        try:
            while drained <= STREAM_DRAIN_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                sock.settimeout(remaining)
                chunk = next(self._body, None)
                if chunk is None:
                    return
                drained += len(chunk)
        except _BODY_ERRORS:
            return  # the connection is closed with the response


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: one item per HTTP chunk, or per socket read."""
    raw = response.raw
    if getattr(raw, "chunked", False) or not hasattr(raw, "read1"):
        return response.iter_content(chunk_size=None)
    # Not chunked: read1 returns what has arrived instead of waiting for EOF.
    return iter(lambda: raw.read1(_STREAM_READ_BYTES), b"")


def _socket_of(response: requests.Response) -> Any:
    """The socket still attached to the response, if urllib3 exposes it."""
    raw = response.raw
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if callable(getattr(sock, "settimeout", None)) else None


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
    return next((arg for arg in exc.args if isinstance(arg, timeouts)), None)


def _is_error_event(name: str, data: Mapping[str, Any]) -> bool:
    """Anthropic ``event: error``; OpenAI and compatible ``{"error": ...}``."""
    return (
        name == "error"
        or data.get("type") == "error"
        or data.get("object") == "error"
        or data.get("error") is not None
    )


def _resolve_verify(verify: bool | str) -> bool | str:
    """Read the CA bundle from the environment once (as requests would)."""
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify
