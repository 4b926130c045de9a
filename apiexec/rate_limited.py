"""RateLimitedExecutor: an Executor that admits calls through token buckets.

Before a call runs, the dispatcher takes one request and the call's
``required_tokens`` together from the limiter (see :mod:`apiexec.limits.bucket`);
when capacity is short it waits, in order, exactly until capacity is due.
After the call, the token bucket is corrected by the usage the response
reports, and a 429's ``retry-after`` pauses every call of this executor.

With ``storage=`` (SQLite or Redis) and ``key=``, the buckets and the pause
are shared by every process naming the same storage and key: one quota for a
fleet (see :mod:`apiexec.limits.storage`). A call that cannot reach the
storage fails with :class:`~apiexec.errors.StorageError` before it is sent.

Example:
    >>> ex = RateLimitedExecutor(limit_requests=500, limit_tokens=200_000,
    ...                          interval=60.0, concurrency_limit=16)
    >>> with ex:                                           # doctest: +SKIP
    ...     results = list(ex.map(calls))
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from apiexec._checks import check_positive_number
from apiexec.errors import ConfigError, StorageError
from apiexec.execution.executor import Executor
from apiexec.execution.work_queue import DEFAULT_CAPACITY_REFRESH_TIME, DEFAULT_QUEUE_CAPACITY, QueueConfig
from apiexec.http.rate_limit_headers import RateLimitInfo, parse_rate_limit_headers
from apiexec.limits.bucket import Clock, LimitBackend, MemoryBackend, ServerLimits
from apiexec.limits.limiter import RateLimiter
from apiexec.limits.storage import DEFAULT_KEY, DEFAULT_STORAGE, backend_from_url
from apiexec.llm.api_calling import APICalling

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL: Final = 60.0


class RateLimitedExecutor(Executor):
    """An executor whose calls stay inside request and token limits.

    Args:
        queue_capacity: Bound of the queue (backpressure beyond it).
        capacity_refresh_time: Longest single wait before re-checking shutdown.
        interval: Seconds over which each limit refills completely.
        limit_requests: Requests per ``interval``; None for no request limit.
        limit_tokens: Tokens per ``interval``; None for no token limit.
        concurrency_limit: Calls running at once (worker threads).
        event_type: Events accepted (default :class:`APICalling`).
        storage: Where the buckets live: ``memory://`` (this process),
            ``sqlite:///path.db`` (the processes of one host) or
            ``redis://host:port/db`` (many hosts).
        key: Name of the shared quota inside ``storage`` (e.g. ``"openai-prod"``).
        backend: A ready :class:`~apiexec.limits.bucket.LimitBackend` instead of
            ``storage`` (e.g. a Redis Cluster one).
        clock: Monotonic clock for the ``memory://`` backend (tests inject one).

    Raises:
        ConfigError: A limit, the interval, a queue setting or the storage
            URL is invalid, or ``storage``/``key`` come with ``backend``.
        StorageError: The storage cannot be reached.
    """

    def __init__(
        self,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
        capacity_refresh_time: float = DEFAULT_CAPACITY_REFRESH_TIME,
        interval: float = DEFAULT_INTERVAL,
        limit_requests: float | None = None,
        limit_tokens: float | None = None,
        concurrency_limit: int | None = None,
        *,
        event_type: type | str = APICalling,
        storage: str = DEFAULT_STORAGE,
        key: str = DEFAULT_KEY,
        backend: LimitBackend | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        check_positive_number("interval", interval)
        for field, limit in (("limit_requests", limit_requests), ("limit_tokens", limit_tokens)):
            if limit is not None:
                check_positive_number(field, limit)
        super().__init__(event_type, QueueConfig(queue_capacity, capacity_refresh_time, concurrency_limit))
        self.interval = float(interval)
        self.limit_requests = limit_requests
        self.limit_tokens = limit_tokens
        if backend is not None and (storage != DEFAULT_STORAGE or key != DEFAULT_KEY):
            raise ConfigError("storage", "give storage=/key= or backend=, not both")
        self.storage = storage
        self.key = key
        self.limiter = RateLimiter(backend or self._open_storage(clock), max_wait=capacity_refresh_time)

    def _open_storage(self, clock: Clock) -> LimitBackend:
        if self.storage == DEFAULT_STORAGE:
            return MemoryBackend(self.limit_requests, self.limit_tokens, self.interval, clock)
        return backend_from_url(
            self.storage,
            key=self.key,
            limit_requests=self.limit_requests,
            limit_tokens=self.limit_tokens,
            interval=self.interval,
        )

    @property
    def available_request(self) -> int | None:
        """Requests available now (whole), or None without a request limit."""
        level = self.limiter.backend.levels()[0]
        return None if level is None else math.floor(level + 1e-9)

    @property
    def available_token(self) -> int | None:
        """Tokens available now (whole), or None without a token limit."""
        level = self.limiter.backend.levels()[1]
        return None if level is None else math.floor(level + 1e-9)

    @property
    def _rate_limit_replenisher_task(self) -> threading.Thread | None:
        """The thread admitting calls as capacity comes due (None when stopped).

        There is no periodic replenisher: buckets refill continuously and the
        dispatcher sleeps exactly until capacity is due. The seed design's
        name is kept for what replaced it.
        """
        return self._dispatcher

    def request_permission(self, event: Any) -> bool:
        """Take capacity for ``event`` now if there is enough. Never blocks.

        Raises:
            CapacityError: The event needs more tokens than ``limit_tokens``.
        """
        return self.limiter.try_acquire(_tokens_of(event))

    def _admit(self, event: Any) -> int | None:
        tokens = _tokens_of(event)
        if self.limiter.acquire(tokens, cancelled=lambda: self._closing):
            return tokens
        return None

    def _wake_admission(self) -> None:
        self.limiter.wake()

    def _settle(self, event: Any, reserved: int) -> None:
        used = getattr(event, "used_tokens", None)
        if not isinstance(used, int) or isinstance(used, bool):
            used = None
        self.metrics.record_tokens(reserved, used)
        if used is not None:  # also when nothing was reserved: the limit still holds
            with _best_effort("usage correction"):
                self.limiter.adjust(reserved - used)

    def _observe_response(self, status_code: int, headers: Mapping[str, str]) -> None:
        super()._observe_response(status_code, headers)
        info = parse_rate_limit_headers(headers)
        if info.is_empty:
            return
        with _best_effort("rate-limit headers"):
            self.limiter.backend.sync(_server_limits(info))
        if status_code == 429 and info.retry_after:
            logger.info("server rate limit: pausing every call for %.3fs", info.retry_after)
            with _best_effort("server pause"):
                self.limiter.pause(info.retry_after)

    def _retry_gate(self) -> Callable[[], bool]:
        return self._admit_retry

    def _admit_retry(self) -> bool:
        """A retry takes a request from the bucket, like a first attempt."""
        return self.limiter.acquire(0, cancelled=lambda: self._closing)


@contextlib.contextmanager
def _best_effort(what: str) -> Iterator[None]:
    """Bookkeeping after a response must not lose the response.

    A storage that fails here is logged; the quota still holds, because no
    call is admitted without the storage.
    """
    try:
        yield
    except StorageError as exc:
        logger.warning("%s not recorded: %s", what, exc)


def _tokens_of(event: Any) -> int:
    tokens = getattr(event, "required_tokens", None)
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0


def _server_limits(info: RateLimitInfo) -> ServerLimits:
    """The plain limit view the backends take, from parsed headers."""
    return ServerLimits(
        limit_requests=info.limit_requests,
        remaining_requests=info.remaining_requests,
        reset_requests=info.reset_requests,
        limit_tokens=info.limit_tokens,
        remaining_tokens=info.remaining_tokens,
        reset_tokens=info.reset_tokens,
    )
