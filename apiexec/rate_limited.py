"""RateLimitedExecutor: an Executor whose admission policy is a rate limiter.

This is the one module that joins the execution layer, the limits layer and
the HTTP layer's header parsing. :class:`RateLimitAdmission` is the policy:
before a call runs it takes one request and the call's ``required_tokens``
together from the limiter (:mod:`apiexec.limits`), waiting in order exactly
until capacity is due; after the call it corrects the token bucket by the
usage the response reports; every response's rate-limit headers bring the
buckets into line with the server, and a 429's ``retry-after`` pauses every
call. :class:`RateLimitedExecutor` is an :class:`Executor` built with that
policy; it overrides nothing.

With ``storage=`` (SQLite or Redis) and ``key=``, the buckets and the pause
are shared by every process naming the same storage and key: one quota for a
fleet (see :mod:`apiexec.limits.storage`). A call that cannot reach the
storage fails with :class:`~apiexec.errors.StorageError` before it is sent.

Example:
    >>> ex = RateLimitedExecutor(limit_requests=500, limit_tokens=200_000,
    ...                          interval=60.0, concurrency_limit=16)
    >>> with ex:
    ...     ex.submit(pow, 2, 10).result()
    1024
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from apiexec._checks import check_positive_number
from apiexec.call_context import check_deadline, time_left
from apiexec.errors import ConfigError, DeadlineExceeded, StorageError
from apiexec.execution.admission import Admission, Chain
from apiexec.execution.event import Event
from apiexec.execution.executor import DEFAULT_CONCURRENCY, Executor
from apiexec.execution.runtime import Runtime
from apiexec.execution.work_queue import DEFAULT_CAPACITY_REFRESH_TIME, DEFAULT_QUEUE_CAPACITY, QueueConfig
from apiexec.http.rate_limit_headers import RateLimitInfo, parse_rate_limit_headers
from apiexec.limits.bucket import Clock, LimitBackend, MemoryBackend, ServerLimits
from apiexec.limits.limiter import RateLimiter
from apiexec.limits.rate_limits import DEFAULT_INTERVAL, DEFAULT_KEY, DEFAULT_STORAGE, RateLimits

if TYPE_CHECKING:  # loaded when used: limits per key, adaptive limits and spending caps are opt-in
    from apiexec.limits.adaptive import AIMD
    from apiexec.limits.adaptive_gate import AdaptiveAdmission
    from apiexec.limits.keyed import KeyedLimiter, KeyedLimits
    from apiexec.llm.prices import Prices
    from apiexec.spending import BudgetAdmission

logger = logging.getLogger(__name__)

#: The key of calls that name no model (the same as ``limits.keyed``'s).
DEFAULT_LIMIT_KEY: Final = "*"


class RateLimitAdmission:
    """The admission policy of :class:`RateLimitedExecutor`.

    Args:
        limiter: Where calls take their request and tokens.

    Example:
        >>> policy = RateLimitAdmission(RateLimiter(MemoryBackend(2, None, 60.0)))
        >>> policy.admit(Event(abs, args=(1,)), stop=threading.Event(), deadline=None)
        0
    """

    blocking = True

    def __init__(
        self, limiter: RateLimiter, *, max_wait: float = DEFAULT_CAPACITY_REFRESH_TIME, learn: bool = True
    ) -> None:
        self.limiter = limiter
        self._max_wait = max_wait
        # With limits per model, the server's headers and 429s are each model's
        # business: this overall limit then neither learns nor pauses, and it
        # must not hold the head of the queue while one model waits.
        self.learn = learn
        self.blocking = learn

    def admit(self, event: Any, *, stop: threading.Event, deadline: float | None) -> int | None:
        """Take one request and the event's tokens, waiting in order.

        Raises:
            CapacityError: The event needs more tokens than the limit.
            DeadlineExceeded: The event's deadline passed while it waited.
            StorageError: The shared storage failed.
        """
        tokens = tokens_of(event)
        if self.limiter.acquire(tokens, cancelled=stop.is_set, deadline=deadline):
            return tokens
        if stop.is_set():
            return None
        raise DeadlineExceeded("admission", getattr(event, "timeout", None) or 0.0)

    def admit_retry(self, stop: threading.Event) -> bool:
        """A retry takes a request from the bucket, like a first attempt.

        It waits no longer than the call's deadline (read from the running
        call's context).

        Raises:
            DeadlineExceeded: The deadline passed while the retry waited.
        """
        left = time_left()
        deadline = None if left is None else time.monotonic() + left
        if self.limiter.acquire(0, cancelled=stop.is_set, deadline=deadline):
            return True
        if not stop.is_set():
            check_deadline("retry")
        return False

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Bring the buckets into line with a response's rate-limit headers."""
        if not self.learn:
            return
        info = parse_rate_limit_headers(headers)  # cheap for the usual response without any
        if info.is_empty:
            return
        _best_effort("rate-limit headers", self.limiter.backend.sync, _server_limits(info))
        if status_code == 429 and info.retry_after:
            logger.info("server rate limit: pausing every call for %.3fs", info.retry_after)
            _best_effort("server pause", self.limiter.pause, info.retry_after)

    def settle(self, event: Any, reserved: int) -> None:
        """Correct the token bucket by the usage the response reported."""
        used = getattr(event, "used_tokens", None)
        if not isinstance(used, int) or isinstance(used, bool):
            used = None
        if used is not None:  # also when nothing was reserved: the limit still holds
            _best_effort("usage correction", self.limiter.adjust, reserved - used)

    def release(self, event: Any, reserved: int) -> None:
        """A call admitted but not run gives its tokens back."""
        if reserved:
            _best_effort("token refund", self.limiter.adjust, reserved)

    def wake(self) -> None:
        """Wake every waiter (shutdown)."""
        self.limiter.wake()

    def after_fork(self) -> None:
        """A fresh limiter over the same storage in a forked child."""
        backend = self.limiter.backend
        reset = getattr(backend, "after_fork", None)
        if callable(reset):
            reset()
        self.limiter = RateLimiter(backend, max_wait=self._max_wait)


def limit_key_of(event: Any) -> str:
    """The key whose limits a call takes: who the server limits it as.

    An explicit ``limit_key`` attribute wins; else the request's ``model``
    (providers limit each model separately); else the endpoint's path;
    else the default key ``"*"``.

    Example:
        >>> limit_key_of(Event(abs, args=(1,)))
        '*'
    """
    key = getattr(event, "limit_key", None)
    if isinstance(key, str) and key:
        return key
    request = getattr(event, "request", None)
    model = request.get("model") if isinstance(request, Mapping) else None
    if isinstance(model, str) and model:
        return model
    path = getattr(getattr(getattr(event, "endpoint", None), "config", None), "endpoint", None)
    return path if isinstance(path, str) and path else DEFAULT_LIMIT_KEY


class KeyedRateLimitAdmission:
    """Limits per key (model): each call waits only for its own key's buckets.

    The headers and 429s of a response go to the key of the call that got
    it (the worker thread remembers the key it admitted): a 429 for one
    model pauses that model only.

    Args:
        keyed: One limiter per key.
        key_of: The key of a call (default :func:`limit_key_of`).
        max_wait: Longest single wait before re-checking shutdown.
    """

    blocking = False  # a call waiting for its model must not hold up other models

    def __init__(
        self,
        keyed: KeyedLimiter,
        *,
        key_of: Callable[[Any], str] = limit_key_of,
        max_wait: float = DEFAULT_CAPACITY_REFRESH_TIME,
    ) -> None:
        self.keyed = keyed
        self._key_of = key_of
        self._max_wait = max_wait
        self._policies: dict[str, RateLimitAdmission] = {}
        self._current = threading.local()  # the key of the call this worker runs

    def __repr__(self) -> str:
        return f"KeyedRateLimitAdmission({self.keyed!r})"

    def policy(self, key: str) -> RateLimitAdmission:
        """The rate-limit policy of ``key`` (created on first use)."""
        found = self._policies.get(key)
        if found is None:
            found = self._policies.setdefault(key, RateLimitAdmission(self.keyed.limiter(key), max_wait=self._max_wait))
        return found

    def admit(self, event: Any, *, stop: threading.Event, deadline: float | None) -> int | None:
        """Take one request and the event's tokens from its key's buckets."""
        key = self._key_of(event)
        self._current.key = key
        return self.policy(key).admit(event, stop=stop, deadline=deadline)

    def _now(self) -> RateLimitAdmission | None:
        key = getattr(self._current, "key", None)
        return None if key is None else self.policy(key)

    def admit_retry(self, stop: threading.Event) -> bool:
        """A retry takes a request from its own key's bucket."""
        policy = self._now()
        return policy.admit_retry(stop) if policy is not None else not stop.is_set()

    def observe(self, status_code: int, headers: Mapping[str, str]) -> None:
        """The response's limits and pause go to its call's key."""
        policy = self._now()
        if policy is not None:
            policy.observe(status_code, headers)

    def settle(self, event: Any, reserved: int) -> None:
        """Correct the key's token bucket by the reported usage."""
        self._current.key = None
        self.policy(self._key_of(event)).settle(event, reserved)

    def release(self, event: Any, reserved: int) -> None:
        """A call admitted but not run gives its tokens back to its key."""
        self._current.key = None
        self.policy(self._key_of(event)).release(event, reserved)

    def wake(self) -> None:
        """Wake every key's waiters."""
        self.keyed.wake()

    def after_fork(self) -> None:
        """Fresh limiters in a forked child."""
        self.keyed.after_fork()
        self._policies = {}
        self._current = threading.local()


def _names_rate_limit(headers: Mapping[str, str]) -> bool:
    """Whether a 429's headers state a rate limit (else it is an overload)."""
    info = parse_rate_limit_headers(headers)
    stated = (
        info.limit_requests,
        info.remaining_requests,
        info.limit_tokens,
        info.remaining_tokens,
        info.limit_input_tokens,
        info.remaining_input_tokens,
        info.limit_output_tokens,
        info.remaining_output_tokens,
    )
    return any(value is not None for value in stated)


class RateLimitedExecutor(Executor):
    """An executor whose calls stay inside request and token limits.

    Args:
        queue_capacity: Bound of the queue (backpressure beyond it).
        capacity_refresh_time: Longest single wait before re-checking shutdown.
        interval: Seconds over which each limit refills completely.
        limit_requests: Requests per ``interval``; None for no request limit.
        limit_tokens: Tokens per ``interval``; None for no token limit.
        concurrency_limit: Calls running at once (worker threads).
        event_type: Events accepted (default any :class:`Event`, API calls
            included; plain callables given to ``submit`` always are).
        storage: Where the buckets live: ``memory://`` (this process),
            ``sqlite:///path.db`` (the processes of one host) or
            ``redis://host:port/db`` (many hosts).
        key: Name of the shared quota inside ``storage`` (e.g. ``"openai-prod"``).
        backend: A ready :class:`~apiexec.limits.bucket.LimitBackend` instead
            of ``storage`` (e.g. a Redis Cluster one).
        clock: Monotonic clock for the ``memory://`` backend (tests inject one).
        policies: More admission policies asked after the rate limit (e.g. a
            spending cap, a concurrency limit), chained with
            :class:`~apiexec.execution.admission.Chain`.
        limits: Limits per key (model): ``{"gpt-4o": RateLimits.per_minute(...),
            "*": ...}`` or a :class:`~apiexec.limits.keyed.KeyedLimits`. Each
            call then also waits for its own key's buckets (see
            :func:`limit_key_of`), which learn from that key's responses; a
            429 pauses only its key. ``limit_requests``/``limit_tokens``
            stay an overall limit across keys. With ``storage``, each key's
            buckets live under ``{key}:{model}``.
        adaptive: Adapt the calls in flight to the server (AIMD, see
            :mod:`apiexec.limits.adaptive`), up to ``concurrency_limit``:
            True, or an :class:`~apiexec.limits.adaptive.AIMD` for other
            rules. Off by default in the library (the command line turns it
            on). Shared through ``storage`` under ``{key}:adaptive``; the
            limit is the ``concurrency_limit`` gauge of ``metrics``.
        burst: Most requests sent at once (the request bucket's capacity);
            None for the default rule: about one second's worth for large
            per-minute limits, the whole limit for small ones (see
            :mod:`apiexec.limits.rate_limits`).
        token_burst: Most tokens taken at once; None for the default rule.
        max_cost: A spending cap in US dollars: no API call starts that
            could take spending past it (a
            :class:`~apiexec.spending.BudgetAdmission`, shared through
            ``storage``/``key`` like the limits; see ``docs/cost.md``).
        prices: Prices per model for ``max_cost`` (default: the built-in
            list prices, :meth:`~apiexec.llm.prices.Prices.builtin`).
        fit_threads: Only as many workers take calls as keep the pace (see
            :mod:`apiexec.execution.thread_fit`); ``apiexec run`` turns it on.

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
        event_type: type | str = Event,
        storage: str = DEFAULT_STORAGE,
        key: str = DEFAULT_KEY,
        backend: LimitBackend | None = None,
        clock: Clock = time.monotonic,
        policies: Sequence[Admission] = (),
        limits: KeyedLimits | Mapping[str, RateLimits] | None = None,
        adaptive: bool | AIMD = False,
        burst: float | None = None,
        token_burst: float | None = None,
        max_cost: float | None = None,
        prices: Prices | None = None,
        fit_threads: bool = False,
    ) -> None:
        check_positive_number("interval", interval)
        for field, limit in (("limit_requests", limit_requests), ("limit_tokens", limit_tokens)):
            if limit is not None:
                check_positive_number(field, limit)
        if backend is not None and (storage != DEFAULT_STORAGE or key != DEFAULT_KEY):
            raise ConfigError("storage", "give storage=/key= or backend=, not both")
        queue_config = QueueConfig(queue_capacity, capacity_refresh_time, concurrency_limit)
        self.interval = float(interval)
        self.limit_requests = limit_requests
        self.limit_tokens = limit_tokens
        #: The overall limits, one value from these arguments down to the backend.
        self.rate_limits = RateLimits(
            requests=limit_requests, tokens=limit_tokens, interval=interval, burst=burst, token_burst=token_burst
        )
        self.storage = storage
        self.key = key
        keyed = None
        if limits is not None:  # the keyed machinery loads only when limits per key are asked for
            from apiexec.limits.keyed import KeyedLimiter, KeyedLimits, memory_backends, storage_backends

            keyed = KeyedLimits.of(limits)
        limiter = RateLimiter(backend or self._open_storage(clock), max_wait=capacity_refresh_time)
        self.rate_admission = RateLimitAdmission(limiter, max_wait=capacity_refresh_time, learn=keyed is None)
        chain: list[Admission] = [self.rate_admission]
        self.keyed_admission: KeyedRateLimitAdmission | None = None
        if keyed is not None:  # each model's wait first: the overall bucket is not held while one model waits
            opener = memory_backends(clock) if self.storage == DEFAULT_STORAGE else storage_backends(self.storage, key)
            keyed_limiter = KeyedLimiter(keyed, open_backend=opener, max_wait=capacity_refresh_time)
            self.keyed_admission = KeyedRateLimitAdmission(keyed_limiter, max_wait=capacity_refresh_time)
            chain.insert(0, self.keyed_admission)
        self.adaptive_admission: AdaptiveAdmission | None = None
        if adaptive:
            workers = queue_config.concurrency_limit or DEFAULT_CONCURRENCY
            from apiexec.limits.adaptive import AIMD
            from apiexec.limits.adaptive_gate import AdaptiveAdmission
            from apiexec.limits.adaptive_store import adaptive_store_from_url

            rules = adaptive if isinstance(adaptive, AIMD) else AIMD(max_limit=workers)
            store = adaptive_store_from_url(self.storage, key=f"{key}:adaptive", rules=rules, clock=clock)
            self.adaptive_admission = AdaptiveAdmission(
                store, rules, max_wait=capacity_refresh_time, names_rate_limit=_names_rate_limit
            )
            chain.append(self.adaptive_admission)
        #: The spending cap (``max_cost=``), or None.
        self.budget: BudgetAdmission | None = None
        if max_cost is not None:
            from apiexec.spending import BudgetAdmission

            self.budget = BudgetAdmission(max_cost, prices, storage=self.storage, key=key)
        if self.budget is not None:
            chain.append(self.budget)
        chain.extend(policies)
        admission: Admission = chain[0] if len(chain) == 1 else Chain(*chain)
        super().__init__(event_type, queue_config, admission=admission, fit_threads=fit_threads)
        if self.adaptive_admission is not None:
            gate = self.adaptive_admission  # the gauge holds the policy, not the executor
            self.metrics.gauge("concurrency_limit", lambda: gate.limit)

    def _open_storage(self, clock: Clock) -> LimitBackend:
        if self.storage == DEFAULT_STORAGE:
            return MemoryBackend(limits=self.rate_limits, clock=clock)
        from apiexec.limits.storage import backend_from_url  # SQLite/Redis only when asked for

        return backend_from_url(self.storage, key=self.key, limits=self.rate_limits)

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter every call is admitted through."""
        return self.rate_admission.limiter

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
    def _rate_limit_replenisher_task(self) -> Runtime | None:
        """What admits calls as capacity comes due (None when stopped).

        There is no periodic replenisher: buckets refill continuously and the
        worker at the head of the queue waits exactly until capacity is due.
        The seed design's name is kept for the runtime that replaced it.
        """
        return self._runtime

    def request_permission(self, event: Any) -> bool:
        """Take capacity for ``event`` now if there is enough. Never blocks.

        Raises:
            CapacityError: The event needs more tokens than ``limit_tokens``.
        """
        return self.limiter.try_acquire(tokens_of(event))


def _best_effort(what: str, change: Callable[[Any], None], argument: Any) -> None:
    """``change(argument)``: bookkeeping after a response must not lose the response.

    A storage that fails here is logged; the quota still holds, because no
    call is admitted without the storage. (A plain call: a generator-based
    context manager cost more than the bucket update it guarded.)
    """
    try:
        change(argument)
    except StorageError as exc:
        logger.warning("%s not recorded: %s", what, exc)


def tokens_of(event: Any) -> int:
    """The tokens an event asks to reserve (0 when it says nothing usable)."""
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
