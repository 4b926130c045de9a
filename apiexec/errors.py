"""Exceptions raised by apiexec.

Every exception apiexec raises on purpose derives from :class:`APIExecError`;
builtins are mixed in where a caller would naturally catch them::

    APIExecError
    ├── ConfigError (ValueError)          bad configuration value; names the field
    ├── CapacityError (ValueError)        a call can never fit inside a limit
    ├── ExecutorNotRunning (RuntimeError) submit to an executor that is not started or is closing
    ├── QueueStopped (RuntimeError)       enqueue/dequeue on a stopped Queue
    ├── EventFailed                       an event failed without an exception object
    ├── StorageError                      shared limit storage (SQLite, Redis) unreachable or failing
    ├── DeadlineExceeded (TimeoutError)   a call's total deadline passed; ``phase`` says where
    ├── BudgetExceeded                    the next call could cross the spending cap
    └── APIError                          an HTTP call failed
        ├── APIConnectionError            could not connect, or the connection broke
        │   ├── APITimeoutError           connect or read timeout
        │   └── APIStreamIncomplete       a stream ended before its final event
        ├── ResponseTooLarge              the (decompressed) body passed max_body_bytes
        └── APIStatusError                the server answered with an error status
            ├── RateLimitError            429, carries ``retry_after``
            └── ServiceRefused            the account was refused service (401/403, quota/billing)

Messages never contain credentials: request headers are never echoed, and
response excerpts are short.
"""

from __future__ import annotations


class APIExecError(Exception):
    """Base class of every error apiexec raises on purpose."""


class ConfigError(APIExecError, ValueError):
    """A configuration value is invalid.

    Attributes:
        field: Name of the offending field.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class CapacityError(APIExecError, ValueError):
    """A call needs more capacity than a limit can ever provide.

    Attributes:
        needed: Tokens (or requests) the call needs.
        limit: The configured limit.
    """

    def __init__(self, needed: int, limit: float, what: str = "tokens") -> None:
        super().__init__(
            f"call needs {needed} {what} but limit_{what} is {limit:g}: "
            f"it can never run; raise the limit or shrink the request"
        )
        self.needed = needed
        self.limit = limit


class ExecutorNotRunning(APIExecError, RuntimeError):
    """The executor is not started, or it is shutting down."""


class QueueStopped(APIExecError, RuntimeError):
    """The queue was stopped; nothing more goes in or comes out."""


class EventFailed(APIExecError):
    """An event ended ``FAILED`` with only an error message to show for it."""


class StorageError(APIExecError):
    """The shared limit storage (a SQLite file, a Redis server) failed.

    Raised at start when the storage cannot be reached, and mid-run instead
    of granting a call without it: the call fails, the quota is never
    exceeded. The message names the storage URL without its password.

    Attributes:
        url: The storage URL, password removed.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class DeadlineExceeded(APIExecError, TimeoutError):
    """A call's total deadline passed before it finished.

    Attributes:
        phase: Where the call was when time ran out: ``"queued"``,
            ``"admission"`` (waiting for rate-limit capacity), ``"retry"``
            (backing off), ``"connect"``, ``"response"`` or ``"stream"``.
        timeout: The deadline, in seconds from submission.
    """

    def __init__(self, phase: str, timeout: float) -> None:
        super().__init__(f"call deadline of {timeout:g}s passed while {_PHASES.get(phase, phase)}")
        self.phase = phase
        self.timeout = timeout


_PHASES = {
    "queued": "waiting in the queue",
    "admission": "waiting for rate-limit capacity",
    "retry": "waiting to retry",
    "connect": "connecting",
    "response": "reading the response",
    "stream": "reading the stream",
}


class BudgetExceeded(APIExecError):
    """Admitting the next call could cross the spending cap.

    Attributes:
        cap: The cap, in US dollars.
        spent: Dollars spent or reserved when the call was refused.
    """

    def __init__(self, message: str, *, cap: float, spent: float) -> None:
        super().__init__(message)
        self.cap = cap
        self.spent = spent


class APIError(APIExecError):
    """An HTTP API call failed.

    Attributes:
        url: The URL that was called (never contains credentials).
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class APIConnectionError(APIError):
    """The connection could not be made or broke before a response."""


class APITimeoutError(APIConnectionError):
    """The server did not connect or answer within the timeout."""


class APIStreamIncomplete(APIConnectionError):
    """A stream ended before its final event (``[DONE]``, a finish reason,
    ``message_stop``): the answer is truncated. Retryable while no event was
    handed to the caller yet."""


class ResponseTooLarge(APIError):
    """The response body, once decompressed, is larger than allowed.

    Reading stops at the limit (a gzip bomb never fills memory). Not retried.

    Attributes:
        limit: The limit in bytes (``EndpointConfig.max_body_bytes``).
    """

    def __init__(self, message: str, *, url: str | None = None, limit: int) -> None:
        super().__init__(message, url=url)
        self.limit = limit


class APIStatusError(APIError):
    """The server answered with an error status.

    Attributes:
        status_code: HTTP status code.
        body_excerpt: The first few hundred characters of the response body.
        request_id: The provider's request id, when it sent one.
        retry_after: Seconds the server asked us to wait, when it said.
        should_retry: The server's own verdict (``x-should-retry: true`` or
            ``false``, or a ``retry-after`` longer than the caller allows:
            False), which wins over the status rules; None when it gave none.
        error_type: The ``type`` (or ``code``) of the provider's error body,
            e.g. ``insufficient_quota``, when it had one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        url: str | None = None,
        body_excerpt: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status_code = status_code
        self.body_excerpt = body_excerpt
        self.request_id = request_id
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.error_type = error_type


class RateLimitError(APIStatusError):
    """The server answered 429 Too Many Requests."""


class ServiceRefused(APIStatusError):
    """The account was refused service: retrying cannot help.

    Raised for 401/403 and for 429s whose body says the quota or billing is
    exhausted (OpenAI ``insufficient_quota``). A batch run stops admitting
    new lines when it sees one (a circuit breaker).
    """
