"""The httpx side of the SDK adapter: a transport that reports to the executor.

:func:`http_client` builds the httpx client to give an SDK (``openai``,
``anthropic``) as ``http_client=``; every transport of it is a
``LimitedTransport`` (:func:`limited_transport`), which, for each request:

1. counts the attempt in the running call's context; a retry (every attempt
   after the first) first passes the executor's retry gate, i.e. takes a
   request from the rate limiter like any call, and is refused with
   :class:`~apiexec.errors.ExecutorNotRunning` once the executor shuts down;
2. caps the attempt's socket timeouts by the time the call has left, and
   ends the call with :class:`~apiexec.errors.DeadlineExceeded` once its
   deadline passed (before an attempt, on a timeout, between body chunks);
3. hands every response's status and headers to the executor (rate-limit
   headers, a 429's ``retry-after``, metrics).

Inside an :class:`~apiexec.llm.sdk.SDKCall` those errors travel as a
``BaseException`` through the SDK's ``except Exception`` retry loop, so the
SDK neither retries nor wraps a call the executor ended. Outside an executor
the transport only passes requests on. httpx (or ``httpx2``, which newer SDKs
import) is imported only when used.

Example:
    >>> client = http_client("openai")
    >>> type(client._transport).__name__
    'LimitedTransport'
    >>> client.close()
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, Final

from apiexec.call_context import CallContext, call_context, note_attempt, note_response
from apiexec.clock import REAL, Waiter
from apiexec.errors import APIExecError, DeadlineExceeded
from apiexec.http.rate_limit_headers import tag_dialect

#: httpx's per-request timeout kinds (``request.extensions["timeout"]``).
_TIMEOUT_KINDS: Final = ("connect", "read", "write", "pool")

#: Shortest socket timeout an attempt gets from a deadline almost passed (s).
MIN_SOCKET_TIMEOUT: Final = 0.001

#: The SDKs' defaults: socket timeouts (s) and connections kept.
DEFAULT_READ_TIMEOUT, DEFAULT_CONNECT_TIMEOUT = 600.0, 5.0
DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_KEEPALIVE = 1000, 100

#: Set while an SDKCall runs its function: the transport may end the call.
_IN_SDK_CALL: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar("apiexec_in_sdk_call", default=False)


class _CallEnded(BaseException):
    """Carries an error of ours through an SDK's ``except Exception`` (retry) blocks."""

    def __init__(self, error: APIExecError) -> None:
        super().__init__(str(error))
        self.error = error


#: SDKs whose httpx module ``httpx_module(None)`` follows, once imported.
KNOWN_SDKS: Final = ("openai", "anthropic")

_MISSING: Final = "the SDK adapter needs httpx (or httpx2) and the SDK: pip install 'apiexec[sdk]'"


# -- which httpx --------------------------------------------------------------------


def httpx_module(sdk: Any = None) -> types.ModuleType:
    """The httpx module an SDK sends with (``httpx2`` or ``httpx``).

    Args:
        sdk: The SDK: its module (``openai``), a client class or client, or
            its name. None takes the module of an SDK already imported
            (``openai``, then ``anthropic``), else ``httpx2`` if installed,
            else ``httpx``.

    Returns:
        The module whose ``Client`` the SDK accepts as ``http_client``.

    Raises:
        ImportError: Neither module is installed (the message says what to install).

    Example:
        >>> httpx_module("openai").__name__ in ("httpx", "httpx2")
        True
    """
    if sdk is None:  # the SDK the caller imported knows which httpx it takes
        sdk = next((name for name in KNOWN_SDKS if name in sys.modules), None)
    if sdk is not None:
        root = _sdk_root(sdk)
        for name in (f"{root}._base_client", root):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            for attr in ("httpx2", "httpx"):
                found = getattr(module, attr, None)
                if isinstance(found, types.ModuleType):
                    return found
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(_MISSING)


def _sdk_root(sdk: Any) -> str:
    """The top-level package name of an SDK given as module, class, object or name."""
    if isinstance(sdk, str):
        name = sdk
    elif isinstance(sdk, types.ModuleType):
        name = sdk.__name__
    else:
        name = (sdk if isinstance(sdk, type) else type(sdk)).__module__
    return name.split(".", 1)[0]


# -- the transport ------------------------------------------------------------------


class _Reporting:
    """What the limited transport does around its inner transport.

    Mixed into a subclass of the right httpx module's ``BaseTransport`` by
    :func:`limited_transport`.
    """

    body_class: type  # the httpx module's SyncByteStream, with _BoundedBody

    def __init__(self, inner: Any, *, dialect: str | None = None, waiter: Waiter = REAL) -> None:
        self.inner = inner
        self.dialect = dialect
        self.waiter = waiter

    def handle_request(self, request: Any) -> Any:
        """Count the attempt (a retry passes the limiter), send, report the response.

        Raises:
            ExecutorNotRunning: The executor shut down before a retry could go.
            DeadlineExceeded: The call's deadline passed before or during the attempt.
            StorageError: The shared rate-limit storage failed at a retry.
        """
        try:
            return self._send(request)
        except APIExecError as exc:
            _raise_if_in_sdk_call(exc)
            raise

    def _send(self, request: Any) -> Any:
        with call_context() as ctx:  # the executor's context; a throwaway one outside
            retry = ctx.attempts > 0
            self._check_deadline(ctx.deadline, ctx.timeout, "retry" if retry else "connect")
            note_attempt()  # a retry blocks here on the executor's retry gate
            if retry:
                self._check_deadline(ctx.deadline, ctx.timeout, "admission")
            capped = self._cap_timeouts(ctx, request)
            try:
                response = self.inner.handle_request(request)
            except Exception as exc:
                phase = _timeout_phase(exc)
                if capped and phase is not None:
                    self._check_deadline(ctx.deadline, ctx.timeout, phase, cause=exc)
                raise
            note_response(response.status_code, tag_dialect(response.headers, self.dialect))
            if ctx.deadline is not None:  # a body trickling in must not outlast the call
                stream = "text/event-stream" in response.headers.get("content-type", "")
                check = functools.partial(
                    self._check_deadline, ctx.deadline, ctx.timeout, "stream" if stream else "response"
                )
                response.stream = self.body_class(response.stream, check)
            return response

    def _check_deadline(
        self, deadline: float | None, timeout: float | None, phase: str, cause: BaseException | None = None
    ) -> None:
        """Raise DeadlineExceeded (from ``cause``) if the call's deadline passed."""
        if deadline is not None and deadline - self.waiter.now() <= 0:
            raise DeadlineExceeded(phase, timeout or 0.0) from cause

    def _cap_timeouts(self, ctx: CallContext, request: Any) -> bool:
        """Cap the attempt's socket timeouts by the time the call has left.

        Returns:
            True when capped (a timeout then may mean the deadline passed).
        """
        if ctx.deadline is None:
            return False
        left = max(ctx.deadline - self.waiter.now(), MIN_SOCKET_TIMEOUT)
        timeouts = dict(request.extensions.get("timeout") or {})
        for kind in _TIMEOUT_KINDS:
            value = timeouts.get(kind)
            timeouts[kind] = left if value is None else min(value, left)
        request.extensions["timeout"] = timeouts
        return True

    def close(self) -> None:
        """Close the inner transport (its connection pool)."""
        self.inner.close()

    def __repr__(self) -> str:
        return f"LimitedTransport(inner={type(self.inner).__name__}, dialect={self.dialect!r})"


class _BoundedBody:
    """A response body that ends with DeadlineExceeded once the call's deadline passed.

    Checked between chunks; a read blocked in between is bounded by the
    attempt's read timeout, capped by the time the call had left.
    """

    def __init__(self, inner: Any, check: Callable[..., None]) -> None:
        self.inner = inner
        self.check = check

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.inner:
                self.check()
                yield chunk
        except APIExecError as exc:
            _raise_if_in_sdk_call(exc)
            raise
        except Exception as exc:
            if _timeout_phase(exc) is not None:
                try:
                    self.check(cause=exc)
                except APIExecError as ours:
                    _raise_if_in_sdk_call(ours)
                    raise
            raise

    def close(self) -> None:
        self.inner.close()


def _raise_if_in_sdk_call(error: APIExecError) -> None:
    """Inside an SDKCall, carry ``error`` past the SDK's ``except Exception``.

    The SDK must not retry (or wrap) a call the executor ended; SDKCall
    re-raises ``error`` itself, its cause and traceback intact.
    """
    if _IN_SDK_CALL.get():
        raise _CallEnded(error) from None


@functools.cache
def _transport_class(httpx: types.ModuleType) -> type:
    """``LimitedTransport`` for one httpx module (a subclass of its BaseTransport)."""
    body = type("BoundedBody", (_BoundedBody, httpx.SyncByteStream), {"__module__": __name__})
    return type("LimitedTransport", (_Reporting, httpx.BaseTransport), {"__module__": __name__, "body_class": body})


def limited_transport(
    inner: Any = None, *, sdk: Any = None, dialect: str | None = None, waiter: Waiter = REAL
) -> Any:
    """An httpx transport that reports every attempt and response to the executor.

    Args:
        inner: The transport that really sends (default: an
            ``HTTPTransport`` with the SDKs' pool size).
        sdk: The SDK it is for (see :func:`httpx_module`).
        dialect: Rate-limit header dialect (``"openai"``, ``"anthropic"``,
            ``"groq"``, ...); None detects it from the header names.
        waiter: The clock deadlines are read on (tests inject a fake one).

    Returns:
        A ``BaseTransport`` of the SDK's httpx module.

    Raises:
        ImportError: httpx is not installed.

    Example:
        >>> transport = limited_transport(sdk="openai")
        >>> type(transport).__name__
        'LimitedTransport'
        >>> transport.close()
    """
    httpx = httpx_module(sdk)
    inner = httpx.HTTPTransport(limits=_default_limits(httpx)) if inner is None else inner
    return _transport_class(httpx)(inner, dialect=dialect, waiter=waiter)


def http_client(sdk: Any = None, *, dialect: str | None = None, transport: Any = None, **client_kwargs: Any) -> Any:
    """An httpx client for an SDK whose requests report to the executor.

    Pass it as ``http_client=`` to ``openai.OpenAI(...)`` or
    ``anthropic.Anthropic(...)``. One client may serve every thread: share
    it (and the SDK client) across the executor's workers.

    Args:
        sdk: The SDK it is for (module, client class or name): picks the
            httpx module the SDK accepts and its default timeout.
        dialect: Rate-limit header dialect (None: detect from the names).
        transport: The transport that really sends (default: httpx's own,
            with the SDKs' pool size); wrapped, never replaced.
        **client_kwargs: More ``httpx.Client`` arguments (``timeout``,
            ``limits``, ``proxy``, ``verify``, ``mounts``, ...). Every
            transport the client gets (mounts and proxies from the
            environment included) is wrapped.

    Returns:
        An ``httpx.Client`` (or ``httpx2.Client``).

    Raises:
        ImportError: httpx is not installed.

    Example:
        >>> client = http_client("openai")
        >>> type(client._transport).__name__
        'LimitedTransport'
        >>> client.close()
    """
    httpx = httpx_module(sdk)
    client_kwargs.setdefault("timeout", _default_timeout(httpx, sdk))
    client_kwargs.setdefault("follow_redirects", True)
    client_kwargs.setdefault("limits", _default_limits(httpx))
    if transport is not None:
        client_kwargs["transport"] = transport
    # httpx builds its transports (proxies from the environment included,
    # which it skips when given a transport); then each one is wrapped.
    client = httpx.Client(**client_kwargs)
    _wrap_transports(client, sdk, dialect)
    return client


def _default_timeout(httpx: types.ModuleType, sdk: Any) -> Any:
    """The SDK's own default timeout when it exports one, else the same values."""
    found = getattr(sys.modules.get(_sdk_root(sdk)) if sdk is not None else None, "DEFAULT_TIMEOUT", None)
    return found if isinstance(found, httpx.Timeout) else httpx.Timeout(DEFAULT_READ_TIMEOUT, connect=DEFAULT_CONNECT_TIMEOUT)


def _default_limits(httpx: types.ModuleType) -> Any:
    return httpx.Limits(max_connections=DEFAULT_MAX_CONNECTIONS, max_keepalive_connections=DEFAULT_MAX_KEEPALIVE)


def _wrap_transports(client: Any, sdk: Any, dialect: str | None) -> None:
    """Wrap every transport of the client: the default, ``mounts=`` and proxies.

    ``_transport`` and ``_mounts`` are httpx's private attributes (the same
    in httpx and httpx2): the public ``transport=`` would make httpx skip
    the proxies named in the environment.

    Raises:
        TypeError: An httpx without them (pass ``transport=`` to
            :func:`limited_transport` and build the client yourself).
    """
    if not hasattr(client, "_transport") or not isinstance(getattr(client, "_mounts", None), dict):
        raise TypeError(f"{type(client).__module__}.Client has no transports to wrap: use limited_transport()")
    client._transport = limited_transport(client._transport, sdk=sdk, dialect=dialect)
    for pattern, inner in list(client._mounts.items()):
        if inner is not None:
            client._mounts[pattern] = limited_transport(inner, sdk=sdk, dialect=dialect)


def _timeout_phase(exc: BaseException) -> str | None:
    """Where an httpx timeout struck (``ConnectTimeout``, ``ReadTimeout``, ...); None if not one."""
    name = type(exc).__name__
    if not (name.endswith("Timeout") or isinstance(exc, TimeoutError)):
        return None
    return "connect" if name in ("ConnectTimeout", "PoolTimeout") else "response"
