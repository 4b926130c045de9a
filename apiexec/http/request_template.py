"""The short road through the pooled session: one prepared request per endpoint.

``requests.Session.request`` rebuilds, on every call, what never changes for an
endpoint: it merges the session's headers, cookies, auth and hooks, parses and
re-encodes the URL, reads the environment for proxies, and looks the adapter
up. That is most of requests' own time per call (about 300 Python calls).

A :class:`RequestTemplate` does that work once, through the session itself
(``session.prepare_request``, so the URL, query credentials, default headers,
auth from the URL and cookies come out exactly as requests makes them), and
then each call is a cheap copy of the template with its JSON body and
``Content-Length``, sent through the session's mounted adapter with the
session's proxies, CA bundle and client certificate (read once, see
:mod:`apiexec.http.session`). What ``Session.send`` does after the adapter is
kept: ``elapsed``, cookies a response sets, and redirects, which go through
``session.resolve_redirects`` so that credentials are still dropped on a
redirect to another origin.

The template is used only for the session apiexec created
(:class:`~apiexec.http.session.CredentialSession`, environment already read),
and only while nothing makes it inexact: a session holding cookies, response
hooks, or a ``request``/``send`` replaced on the instance (a test recorder, a
user's wrapper) takes requests' full path.

Example:
    >>> from apiexec.http.config import EndpointConfig
    >>> from apiexec.http.session import create_session
    >>> cfg = EndpointConfig(provider="t", endpoint="chat", base_url="http://127.0.0.1:9/v1", api_key="k")
    >>> session = create_session(cfg)
    >>> template = RequestTemplate.for_session(session, "POST", cfg.request_url(), {"Authorization": "Bearer k"})
    >>> prepared = template.prepare(template.base_headers, encode_json({"a": 1}))
    >>> prepared.url, prepared.headers["Authorization"], prepared.headers["Content-Length"], prepared.body
    ('http://127.0.0.1:9/v1/chat', 'Bearer k', '8', b'{"a": 1}')
    >>> session.close()
"""

from __future__ import annotations

import copyreg
import json
from collections.abc import ItemsView, Iterator, Mapping
from datetime import timedelta
from operator import itemgetter
from time import perf_counter
from typing import Any, SupportsIndex

import requests
from requests.cookies import extract_cookies_to_jar
from requests.exceptions import InvalidJSONError
from requests.models import REDIRECT_STATI
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity

from apiexec.http.session import CredentialSession, has_header

__all__ = ["RequestHeaders", "RequestTemplate", "encode_json"]

_new_prepared = requests.PreparedRequest.__new__


def encode_json(payload: Any) -> bytes:
    """The JSON body of a request, byte for byte as requests' ``json=`` sends it.

    NaN and infinities are refused, as requests refuses them.

    Raises:
        ValueError: The payload holds NaN or an infinity.
        TypeError: The payload holds something JSON cannot carry.

    Example:
        >>> encode_json({"model": "m", "n": 1})
        b'{"model": "m", "n": 1}'
    """
    return json.dumps(payload, allow_nan=False).encode("utf-8")


def _holds_cookies(jar: Any) -> bool:
    """Whether ``jar`` may hold a cookie, without walking it (``len(jar)`` visits every cookie).

    A standard jar keeps its cookies in ``_cookies``; an emptied domain left
    behind counts as holding one (requests' full path is then taken, which is
    always exact).

    Example:
        >>> import requests
        >>> jar = requests.cookies.RequestsCookieJar()
        >>> _holds_cookies(jar), _holds_cookies(requests.cookies.cookiejar_from_dict({"a": "1"}))
        (False, True)
    """
    store = getattr(jar, "_cookies", None)
    return bool(store) if isinstance(store, dict) else bool(jar)


class RequestHeaders(CaseInsensitiveDict):
    """requests' ``CaseInsensitiveDict`` for a request's headers, read in fewer steps.

    urllib3 copies a request's headers and walks them twice (names, then
    items) for every request; the generic ``Mapping`` way runs a generator
    step and a ``__getitem__`` per header each time. Here the names and
    items come straight from the dict requests keeps (``lower-case name ->
    (name, value)``), and a copy copies that dict: the same content, in the
    same order, as requests' own class gives.

    Example:
        >>> headers = RequestHeaders({"Content-Type": "application/json", "X-A": "1"})
        >>> list(headers), list(headers.items()), headers.copy()["content-type"], type(headers.copy()).__name__
        (['Content-Type', 'X-A'], [('Content-Type', 'application/json'), ('X-A', '1')], 'application/json', 'RequestHeaders')
    """

    _store: dict[str, tuple[str, Any]]

    def __iter__(self) -> Iterator[str]:
        return map(itemgetter(0), self._store.values())

    def items(self) -> ItemsView[str, Any]:
        return _StoredItems(self)

    def copy(self) -> RequestHeaders:
        copied = RequestHeaders()
        copied._store = self._store.copy()
        return copied

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        """Pickled as requests' own ``CaseInsensitiveDict``: a pickle needs only requests to load."""
        return copyreg._reconstructor, (CaseInsensitiveDict, object, None), dict(self.__dict__)  # type: ignore[attr-defined]


class _StoredItems(ItemsView):
    """``items()`` of :class:`RequestHeaders`: its stored ``(name, value)`` pairs."""

    _mapping: RequestHeaders

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._mapping._store.values())


class RequestTemplate:
    """What one endpoint's requests share, prepared once through its session.

    Args:
        session: The session it was prepared through (and only sends through).
        prepared: The prepared request without a body.
        base_headers: The headers it was prepared with; a call passing this
            very dict skips re-applying them.
    """

    __slots__ = ("session", "_prepared", "_store", "base_headers", "_proxies", "_verify", "_cert", "_attrs")

    def __init__(self, session: requests.Session, prepared: requests.PreparedRequest, base_headers: dict[str, str]):
        self.session = session
        self._prepared = prepared
        self._store: dict[str, tuple[str, str]] = dict(prepared.headers._store)  # type: ignore[attr-defined]
        self._store.pop("content-length", None)  # set per call
        self.base_headers = base_headers
        self._proxies = dict(session.proxies)
        self._verify: Any = session.verify  # bool or a CA bundle path (read once)
        self._cert = session.cert
        self._attrs = dict(prepared.__dict__)

    @classmethod
    def for_session(
        cls, session: requests.Session, method: str, url: str, base_headers: dict[str, str]
    ) -> RequestTemplate | None:
        """A template for ``session``, or None when only requests' full path is exact.

        Args:
            session: The endpoint's session.
            method: The HTTP method (not GET: its payload goes in the URL).
            url: The URL to send to, query credentials included.
            base_headers: The headers every call sends (auth, defaults).
        """
        if type(session) is not CredentialSession or session.trust_env or method == "GET":
            return None
        if session.hooks.get("response") or session.cookies:
            return None
        prepared = session.prepare_request(requests.Request(method, url, headers=base_headers))
        if prepared.hooks.get("response") or prepared.body is not None:
            return None  # an auth handler that answers challenges: requests' path
        return cls(session, prepared, base_headers)

    def usable(self, session: requests.Session) -> bool:
        """Whether ``session`` is still the one prepared for, unchanged in what matters."""
        if session is not self.session or _holds_cookies(session.cookies):
            return False
        own = session.__dict__
        return "request" not in own and "send" not in own and not session.hooks.get("response")

    def prepare(self, headers: Mapping[str, str], body: bytes) -> requests.PreparedRequest:
        """A copy of the template with ``headers`` applied and ``body``.

        Raises:
            requests.exceptions.InvalidHeader: A header requests would refuse.
        """
        store = self._store.copy()
        if headers is not self.base_headers:
            for name, value in headers.items():
                if value is None:  # as requests' merge: None removes a session header
                    store.pop(name.lower(), None)
                    continue
                check_header_validity((name, value))
                store[name.lower()] = (name, value)
        store["content-length"] = ("Content-Length", str(len(body)))
        merged = RequestHeaders()
        merged._store = store
        prepared = _new_prepared(requests.PreparedRequest)
        prepared.__dict__.update(self._attrs)
        prepared.headers = merged
        prepared.body = body
        return prepared

    def send(self, payload: Any, headers: Mapping[str, str], *, stream: bool = False) -> requests.Response:
        """Send ``payload`` as JSON with ``headers``, as ``session.request`` would.

        Raises:
            requests.RequestException: As requests raises it (InvalidJSONError
                for NaN, connection errors, timeouts...).
        """
        try:
            body = encode_json(payload)
        except ValueError as exc:
            raise InvalidJSONError(exc, request=None) from exc
        prepared = self.prepare(headers, body)
        session = self.session
        adapter = session.get_adapter(prepared.url or "")
        start = perf_counter()
        response: requests.Response = adapter.send(
            prepared, stream=stream, timeout=None, verify=self._verify, cert=self._cert, proxies=self._proxies
        )
        response.elapsed = timedelta(seconds=perf_counter() - start)
        response_headers = response.headers
        if has_header(response_headers, "set-cookie") or has_header(response_headers, "set-cookie2"):
            extract_cookies_to_jar(session.cookies, prepared, response.raw)
        if response.status_code in REDIRECT_STATI and has_header(response_headers, "location"):  # is_redirect
            response = self._follow(response, prepared, stream)
        return response

    def _follow(self, response: requests.Response, prepared: requests.PreparedRequest, stream: bool) -> Any:
        """Follow redirects as ``Session.send`` does (credentials dropped across origins)."""
        history = list(
            self.session.resolve_redirects(
                response,
                prepared,
                stream=stream,
                timeout=None,
                verify=self._verify,
                cert=self._cert,
                proxies=self._proxies,
            )
        )
        if not history:
            return response
        history.insert(0, response)
        final = history.pop()
        final.history = history
        return final
