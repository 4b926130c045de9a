"""Endpoint: one HTTP API endpoint over one pooled ``requests.Session``.

``call(request)`` is a chain of short steps::

    call ─ cache? ─ retry policy ─ _call_requests ─ session.request ─ _parse

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

import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

import requests
from requests.adapters import HTTPAdapter

from apiexec.cache import ResponseCache, cache_key
from apiexec.call_context import REQUEST_ID_HEADERS, note_attempt, note_response
from apiexec.endpoint_config import EndpointConfig
from apiexec.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
)
from apiexec.limit_headers import parse_retry_after
from apiexec.retry import retry_policy

logger = logging.getLogger(__name__)

#: Characters of an error body kept in exceptions.
BODY_EXCERPT_CHARS: Final = 300
#: Credential headers besides Authorization (which requests strips itself).
_CREDENTIAL_HEADERS: Final = ("x-api-key", "api-key")


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
        sleep: How retries wait (tests inject a recorder; never sleeps twice).

    Raises:
        TypeError: ``config`` is not an :class:`EndpointConfig`.

    Example:
        >>> ep = Endpoint.for_provider("openai", "chat/completions")   # doctest: +SKIP
    """

    def __init__(self, config: EndpointConfig, *, sleep: Callable[[float], Any] = time.sleep) -> None:
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
        """An endpoint from a provider preset (see :mod:`apiexec.presets`)."""
        from apiexec.presets import preset_config

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
        session = self._session()
        note_attempt()
        try:
            if self.config.method == "GET":
                response = session.request(
                    method="GET", url=self.config.full_url, headers=headers, params=payload
                )
            else:
                response = session.request(
                    method=self.config.method, url=self.config.full_url, headers=headers, json=payload
                )
        except requests.RequestException as exc:
            raise self._transport_error(exc) from exc
        return self._parse(response)

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
        if isinstance(exc, requests.Timeout):
            return APITimeoutError(f"{url}: timed out ({type(exc).__name__})", url=url)
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            return APIConnectionError(f"{url}: connection failed ({type(exc).__name__})", url=url)
        return APIError(f"{url}: request failed ({type(exc).__name__})", url=url)

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


def _resolve_verify(verify: bool | str) -> bool | str:
    """Read the CA bundle from the environment once (as requests would)."""
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify
