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

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final

from apiexec.errors import APIExecError
from apiexec.execution.event import Event, ExecutionStatus
from apiexec.llm.sdk_transport import _IN_SDK_CALL, _CallEnded, http_client, httpx_module, limited_transport
from apiexec.llm.tokens import estimate_tokens, usage_tokens

__all__ = [
    "SDKCall",
    "SDK_OPTION_KEYS",
    "http_client",
    "httpx_module",
    "limited_transport",
    "request_body",
    "sdk_call",
    "sdk_usage_tokens",
]

logger = logging.getLogger(__name__)

#: Keyword arguments of SDK methods that are request options, not body fields.
SDK_OPTION_KEYS: Final = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


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
