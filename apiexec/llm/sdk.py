"""The official SDKs (``openai``, ``anthropic``) under an executor's limits.

Run as they are inside an executor, SDK calls would bypass the limiter: no
tokens reserved, no usage reported, a 429 seen only by the SDK, its retries
sent whenever it likes. Two pieces close the gap:

* :func:`http_client` gives the SDK an httpx client whose transport reports
  to the running call (:mod:`apiexec.call_context`): it counts each attempt;
  a retry first passes the executor's retry gate (takes a request from the
  limiter); every response's status and headers go to the executor, so
  ``x-ratelimit-*``/``anthropic-ratelimit-*`` sync the buckets and a 429's
  ``retry-after`` pauses every call. The call's deadline caps each
  attempt's socket timeouts. Outside an executor it only passes requests on.
* :class:`SDKCall` (or :func:`sdk_call`) is the event: it reserves the tokens
  the request may use (estimated as :class:`~apiexec.llm.api_calling.APICalling`
  does) and reports the response's ``usage`` as ``used_tokens``, which the
  rate-limited executor uses to correct the token bucket.

httpx, openai and anthropic are optional (``pip install 'apiexec[sdk]'``) and
imported only when used. SDKs that moved to ``httpx2`` are supported: the
adapter builds its client with the httpx module the SDK itself imports.

Example (against the built-in mock server)::

    import openai
    from apiexec import RateLimitedExecutor
    from apiexec.llm.sdk import http_client, sdk_call

    client = openai.OpenAI(api_key="sk-test", base_url=f"{server.url}/v1",
                           http_client=http_client(openai))
    with RateLimitedExecutor(limit_requests=500, limit_tokens=100_000) as ex:
        call = sdk_call(client.chat.completions.create, model="gpt-4o-mini",
                        messages=[{"role": "user", "content": "Hi"}], max_tokens=50)
        completion = ex.submit(call).result()   # an openai ChatCompletion
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final

from apiexec.call_context import CallContext, call_context, note_attempt, note_response
from apiexec.clock import REAL, Waiter
from apiexec.errors import APIExecError, DeadlineExceeded
from apiexec.execution.event import Event, ExecutionStatus
from apiexec.http.rate_limit_headers import tag_dialect
from apiexec.llm.tokens import estimate_tokens, usage_tokens

logger = logging.getLogger(__name__)

#: Keyword arguments of SDK methods that are request options, not body fields.
SDK_OPTION_KEYS: Final = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})

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


_MISSING: Final = "the SDK adapter needs httpx (or httpx2) and the SDK: pip install 'apiexec[sdk]'"


# -- which httpx --------------------------------------------------------------------


def httpx_module(sdk: Any = None) -> types.ModuleType:
    """The httpx module an SDK sends with (``httpx2`` or ``httpx``).

    Args:
        sdk: The SDK: its module (``openai``), a client class or client, or
            its name. None takes ``httpx2`` if installed, else ``httpx``.

    Returns:
        The module whose ``Client`` the SDK accepts as ``http_client``.

    Raises:
        ImportError: Neither module is installed (the message says what to install).

    Example:
        >>> httpx_module("openai").__name__ in ("httpx", "httpx2")
        True
    """
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
            if _IN_SDK_CALL.get():
                # Past the SDK's ``except Exception``: it must not retry (or
                # wrap) a call the executor ended; SDKCall re-raises ``exc``.
                raise _CallEnded(exc) from None
            raise

    def _send(self, request: Any) -> Any:
        with call_context() as ctx:  # the executor's context; a throwaway one outside
            retry = ctx.attempts > 0
            self._check_deadline(ctx, "retry" if retry else "connect")
            note_attempt()  # a retry blocks here on the executor's retry gate
            if retry:
                self._check_deadline(ctx, "admission")
            capped = self._cap_timeouts(ctx, request)
            try:
                response = self.inner.handle_request(request)
            except Exception as exc:
                phase = _timeout_phase(exc)
                if capped and phase is not None:
                    self._check_deadline(ctx, phase, cause=exc)
                raise
            note_response(response.status_code, tag_dialect(response.headers, self.dialect))
            return response

    def _check_deadline(self, ctx: CallContext, phase: str, cause: BaseException | None = None) -> None:
        """Raise DeadlineExceeded (from ``cause``) if the call's deadline passed."""
        if ctx.deadline is not None and ctx.deadline - self.waiter.now() <= 0:
            raise DeadlineExceeded(phase, ctx.timeout or 0.0) from cause

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


@functools.cache
def _transport_class(httpx: types.ModuleType) -> type:
    """``LimitedTransport`` for one httpx module (a subclass of its BaseTransport)."""
    return type("LimitedTransport", (_Reporting, httpx.BaseTransport), {"__module__": __name__})


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


# -- the event ----------------------------------------------------------------------


class SDKCall(Event):
    """One SDK call as an executor's event: tokens reserved, usage reported.

    ``invoke()`` runs ``fn(*args, **request)``. Any callable works: an SDK
    method (``client.chat.completions.create``, ``client.messages.create``,
    ``client.embeddings.create``, a ``with_raw_response`` method) or a
    function of yours that calls one (e.g. consumes a stream and returns its
    final message); ``request`` is what the token estimate reads.

    Args:
        fn: The callable.
        request: Its keyword arguments: the request as the SDK takes it.
        args: Positional arguments for ``fn``.
        tokens: Tokens to reserve, instead of the estimate.
        requires_tokens: Estimate the tokens from ``request`` (prompt plus
            ``max_tokens``/``max_completion_tokens``/``max_output_tokens``);
            False for calls no token limit meters (``models.list()``).
        timeout: The call's deadline in seconds from submission (queueing,
            rate-limit waits, the SDK's retries and the response). Not the
            SDK's ``timeout=`` option, which goes in ``request``.

    Raises:
        TypeError: ``fn`` is not callable or ``request`` not a mapping.
        ConfigError: ``tokens`` or ``timeout`` is invalid.

    Example:
        >>> def create(**request):
        ...     return {"id": "x", "usage": {"prompt_tokens": 9, "completion_tokens": 3}}
        >>> call = SDKCall(create, {"model": "gpt-4o-mini", "max_tokens": 20,
        ...                         "messages": [{"role": "user", "content": "Hi"}]})
        >>> call.required_tokens >= 20
        True
        >>> call.invoke()
        >>> call.used_tokens
        12
    """

    event_type: ClassVar[str] = "sdk_call"

    def __init__(
        self,
        fn: Callable[..., Any],
        request: Mapping[str, Any] | None = None,
        *,
        args: Iterable[Any] = (),
        tokens: int | None = None,
        requires_tokens: bool = True,
        timeout: float | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        if request is not None and not isinstance(request, Mapping):
            raise TypeError(f"request must be a mapping, not {type(request).__name__}")
        self.fn = fn
        self.request: dict[str, Any] = dict(request or {})
        self.requires_tokens = requires_tokens
        super().__init__(self._call, self.request, args=args, tokens=tokens, timeout=timeout)

    def _call(self, *args: Any, **request: Any) -> Any:
        token = _IN_SDK_CALL.set(True)
        try:
            return self.fn(*args, **request)
        except _CallEnded as ended:
            error: BaseException = ended.error
        except Exception as exc:
            ours = _apiexec_cause(exc)
            if ours is None:
                raise
            # An SDK that wrapped what the transport raised (shutdown,
            # deadline) in its connection error: the call failed for our reason.
            raise ours from exc
        finally:
            _IN_SDK_CALL.reset(token)
        raise error  # outside the except block: keeps its own cause and traceback

    @property
    def required_tokens(self) -> int | None:
        """Tokens the rate limiter reserves: the explicit value, else the estimate."""
        if self._required_tokens is None and self.requires_tokens:
            self._required_tokens = estimate_tokens(request_body(self.request))
        return self._required_tokens

    @required_tokens.setter
    def required_tokens(self, value: int | None) -> None:
        Event.required_tokens.fset(self, value)  # type: ignore[attr-defined]

    @property
    def used_tokens(self) -> int | None:
        """Tokens the completed call's response reports using (``usage``), else None."""
        if self.execution.status is not ExecutionStatus.COMPLETED:
            return None
        return sdk_usage_tokens(self.execution.result)


def sdk_call(fn: Callable[..., Any], /, **request: Any) -> SDKCall:
    """``SDKCall(fn, request)``, written like the SDK call itself.

    Every keyword goes to ``fn``; build :class:`SDKCall` directly to give
    ``tokens=`` or a deadline (``timeout=``).

    Example:
        >>> call = sdk_call(dict, model="m", max_tokens=5, messages=[])
        >>> call.invoke()
        >>> call.execution.result["model"]
        'm'
    """
    return SDKCall(fn, request)


def request_body(request: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body an SDK sends for these keyword arguments (for estimates).

    Request options (``extra_headers``, ``timeout``, ...) and the SDKs'
    "not given" sentinels are left out; ``extra_body`` is merged in.

    Example:
        >>> request_body({"model": "m", "timeout": 5, "extra_body": {"seed": 1}})
        {'model': 'm', 'seed': 1}
    """
    body = {k: v for k, v in request.items() if k not in SDK_OPTION_KEYS and not _not_given(v)}
    extra = request.get("extra_body")
    if isinstance(extra, Mapping):
        body.update(extra)
    return body


def _not_given(value: Any) -> bool:
    """The SDKs' ``NOT_GIVEN``/``omit`` sentinels (they are never sent)."""
    return type(value).__name__ in ("NotGiven", "Omit")


def sdk_usage_tokens(result: Any) -> int | None:
    """Tokens an SDK result reports in ``usage``; None when it says nothing.

    Reads pydantic models (``ChatCompletion``, ``Message``, ...), a raw
    response (``with_raw_response``: parsed, as the SDK caches it) and
    plain mappings. OpenAI counts ``usage.total_tokens``; Anthropic
    ``input_tokens + output_tokens`` plus cache reads and writes.

    Example:
        >>> sdk_usage_tokens({"usage": {"input_tokens": 10, "output_tokens": 5}})
        15
    """
    if isinstance(result, Mapping):
        return usage_tokens(result)
    if not hasattr(result, "usage") and callable(getattr(result, "parse", None)):
        try:
            result = result.parse()
        except Exception:  # a body that does not parse reports no usage
            logger.debug("could not parse the raw response for its usage", exc_info=True)
            return None
    usage = getattr(result, "usage", None)
    if usage is None:
        return None
    dump = getattr(usage, "model_dump", None)
    fields = dump() if callable(dump) else getattr(usage, "__dict__", usage)
    return usage_tokens({"usage": fields})


def _apiexec_cause(exc: BaseException) -> APIExecError | None:
    """Our own error an SDK wrapped (``raise ... from``), if any."""
    cause = exc.__cause__
    for _ in range(8):  # chains are short; a cycle must not loop forever
        if cause is None or isinstance(cause, APIExecError):
            return cause
        cause = cause.__cause__
    return None
