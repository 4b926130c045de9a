"""APICalling: an event that makes one API call through an endpoint.

Example:
    >>> call = APICalling(endpoint, {"model": "gpt-4o-mini", "messages": [...]},
    ...                   requires_tokens=True)          # doctest: +SKIP
    >>> call.required_tokens                              # doctest: +SKIP
    312
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from apiexec.event import Event, ExecutionStatus
from apiexec.tokens import estimate_tokens, usage_tokens

if TYPE_CHECKING:
    from apiexec.endpoint import Endpoint


class APICalling(Event):
    """One API call: ``endpoint.call(request=request, cache_control=...)``.

    Args:
        endpoint: The endpoint that makes the call.
        request: The request body (a JSON-serialisable mapping).
        cache_control: Answer from the endpoint's cache when possible.
        requires_tokens: The call is metered in tokens: ``required_tokens``
            is estimated from the request unless set explicitly.

    Raises:
        TypeError: ``request`` is not a mapping.
    """

    event_type: ClassVar[str] = "api_calling"

    def __init__(
        self,
        endpoint: Endpoint,
        request: Mapping[str, Any],
        cache_control: bool = False,
        requires_tokens: bool = False,
    ) -> None:
        if not isinstance(request, Mapping):
            raise TypeError(f"request must be a mapping, not {type(request).__name__}")
        super().__init__(
            endpoint.call, {"request": request, "cache_control": cache_control}
        )
        self.endpoint = endpoint
        self.request = request
        self.cache_control = cache_control
        self.requires_tokens = requires_tokens
        self._required_tokens: int | None = None

    @property
    def required_tokens(self) -> int | None:
        """Tokens the rate limiter reserves for this call.

        The explicit value when one was set; else, with
        ``requires_tokens=True``, an estimate (prompt tokens plus the output
        reservation, see :mod:`apiexec.tokens`); else None (no tokens).
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
        """Tokens the completed response reports using, when it says."""
        if self.execution.status is not ExecutionStatus.COMPLETED:
            return None
        return usage_tokens(self.execution.result)
