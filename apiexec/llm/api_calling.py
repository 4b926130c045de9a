"""APICalling: an event that makes one API call through an endpoint.

A call either returns the whole answer (``endpoint.call``) or streams it
(``endpoint.stream``): then every event goes to ``on_chunk`` as it arrives
and the result is the assembled message (see :mod:`apiexec.llm.stream_assembly`),
shaped like the non-streamed answer. Executors run both kinds alike.

Example:
    >>> call = APICalling(endpoint, {"model": "gpt-4o-mini", "messages": [...]},
    ...                   requires_tokens=True)          # doctest: +SKIP
    >>> call.required_tokens                              # doctest: +SKIP
    312
    >>> live = APICalling(endpoint, body, on_chunk=print)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from apiexec.execution.event import Event, ExecutionStatus
from apiexec.llm.stream_assembly import assemble
from apiexec.llm.tokens import estimate_tokens, usage_tokens

if TYPE_CHECKING:
    from apiexec.http.endpoint import Endpoint

#: No result's usage read yet.
_UNREAD: Any = object()


class APICalling(Event):
    """One API call: ``endpoint.call(request=request, cache_control=...)``.

    With ``stream=True`` or an ``on_chunk`` callback the call streams
    instead: it runs :meth:`stream_call`, which passes every event of
    ``endpoint.stream(request)`` to ``on_chunk`` as it arrives and leaves
    the assembled message in ``execution.result`` (so ``used_tokens`` reads
    its usage; OpenAI reports usage in a stream only when the request has
    ``stream_options={"include_usage": True}``).

    Args:
        endpoint: The endpoint that makes the call.
        request: The request body (a JSON-serialisable mapping).
        cache_control: Answer from the endpoint's cache when possible. Does
            not apply to streamed calls, which always reach the server.
        requires_tokens: The call is metered in tokens: ``required_tokens``
            is estimated from the request unless set explicitly.
        on_chunk: Called with each parsed event of a streamed call, on the
            worker thread, as it arrives; an exception it raises fails the
            call (and closes the stream).
        stream: Stream the answer (implied by ``on_chunk``, and by
            ``"stream": true`` in the request, which ``endpoint.call`` could
            not parse).

    Raises:
        TypeError: ``request`` is not a mapping, or ``on_chunk`` is not callable.

    Example:
        >>> pieces = []
        >>> call = APICalling(endpoint, body, on_chunk=pieces.append)  # doctest: +SKIP
        >>> call.invoke()                                              # doctest: +SKIP
        >>> call.execution.result["choices"][0]["message"]["content"]  # doctest: +SKIP
        'Hello!'
    """

    event_type: ClassVar[str] = "api_calling"

    def __init__(
        self,
        endpoint: Endpoint,
        request: Mapping[str, Any],
        cache_control: bool = False,
        requires_tokens: bool = False,
        *,
        on_chunk: Callable[[dict[str, Any]], Any] | None = None,
        stream: bool = False,
    ) -> None:
        if not isinstance(request, Mapping):
            raise TypeError(f"request must be a mapping, not {type(request).__name__}")
        if on_chunk is not None and not callable(on_chunk):
            raise TypeError(f"on_chunk must be callable, not {type(on_chunk).__name__}")
        self.stream = bool(stream) or on_chunk is not None or request.get("stream") is True
        if self.stream:
            super().__init__(self.stream_call, {"request": request})
        else:
            super().__init__(
                endpoint.call, {"request": request, "cache_control": cache_control}
            )
        self.endpoint = endpoint
        self.request = request
        self.cache_control = cache_control
        self.requires_tokens = requires_tokens
        self.on_chunk = on_chunk
        self._required_tokens: int | None = None
        self._usage_of: Any = _UNREAD  # the result whose usage _used_tokens holds
        self._used_tokens: int | None = None

    def stream_call(self, request: Mapping[str, Any]) -> Any:
        """Stream ``request``, hand each event to ``on_chunk``, assemble them.

        Returns:
            The assembled message (see :func:`apiexec.llm.stream_assembly.assemble`).

        Raises:
            APIError: As :meth:`Endpoint.stream`.
            Exception: Whatever ``on_chunk`` raised.
        """
        events: list[dict[str, Any]] = []
        with contextlib.closing(self.endpoint.stream(request)) as stream:
            for event in stream:
                events.append(event)
                if self.on_chunk is not None:
                    self.on_chunk(event)
        return assemble(events)

    @property
    def required_tokens(self) -> int | None:
        """Tokens the rate limiter reserves for this call.

        The explicit value when one was set; else, with
        ``requires_tokens=True``, an estimate (prompt tokens plus the output
        reservation, see :mod:`apiexec.llm.tokens`); else None (no tokens).
        """
        if self._required_tokens is None and self.requires_tokens:
            self._required_tokens = estimate_tokens(self.request)
        return self._required_tokens

    @required_tokens.setter
    def required_tokens(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"required_tokens must be an int >= 0 or None, not {value!r}")
        self._required_tokens = value

    @property
    def used_tokens(self) -> int | None:
        """Tokens the completed response reports using, when it says (read once per result)."""
        execution = self.execution
        if execution.status is not ExecutionStatus.COMPLETED:
            return None
        result = execution.result
        if self._usage_of is not result:  # read once per result (the limiter, the summary and the cost ask)
            self._used_tokens, self._usage_of = usage_tokens(result), result
        return self._used_tokens
