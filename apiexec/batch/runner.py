"""The batch runner behind ``apiexec run``.

Reads the input as a stream, submits one :class:`~apiexec.APICalling` per
line to a :class:`~apiexec.RateLimitedExecutor` (its bounded queue gives
backpressure, so memory stays flat), writes each answer to the
:class:`~apiexec.batch.journal.Journal` the moment it arrives, and skips lines a
previous run already answered. Ctrl-C lets calls in flight finish and be
written; the rest are sent by the next run.

Example:
    >>> summary = run_batch(BatchOptions(input=Path("in.jsonl"),
    ...                                  output=Path("out.jsonl"),
    ...                                  endpoint=config))     # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import threading
import time
import urllib.parse
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from apiexec.batch.id_set import IdSet
from apiexec.batch.journal import Journal, count_lines, error_row, read_batch, success_row
from apiexec.errors import APIConnectionError, APIStatusError, APITimeoutError, CapacityError
from apiexec.http.config import EndpointConfig
from apiexec.http.endpoint import Endpoint
from apiexec.limits.bucket import LimitBackend
from apiexec.limits.storage import DEFAULT_KEY, DEFAULT_STORAGE
from apiexec.llm.api_calling import APICalling
from apiexec.rate_limited import RateLimitedExecutor

logger = logging.getLogger(__name__)

DEFAULT_BATCH_CONCURRENCY: Final = 16


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """What to run and how.

    Attributes:
        input: JSONL input file.
        output: JSONL output journal (appended to; resumed from).
        endpoint: Base configuration; each line's ``url`` picks the path.
        requests_per_minute: Request limit, or None.
        tokens_per_minute: Token limit, or None (then tokens are not estimated).
        concurrency: Calls in flight at once.
        progress: Show a progress bar.
        limit_storage: Where the buckets live: ``memory://``, ``sqlite:///path.db``
            or ``redis://host:port/db`` (shared by every run naming it).
        limit_key: Name of the shared quota inside ``limit_storage``.
        backend: A ready limit backend instead of ``limit_storage``.
    """

    input: Path
    output: Path
    endpoint: EndpointConfig
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    concurrency: int = DEFAULT_BATCH_CONCURRENCY
    progress: bool = False
    limit_storage: str = DEFAULT_STORAGE
    limit_key: str = DEFAULT_KEY
    backend: LimitBackend | None = None


@dataclass
class BatchSummary:
    """What a run did."""

    lines: int = 0
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0
    tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    wall_seconds: float = 0.0
    interrupted: bool = False
    compacted: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def all_succeeded(self) -> bool:
        """True when no line failed or was invalid, and the run finished."""
        return not (self.failed or self.invalid or self.interrupted)

    def render(self) -> str:
        """The human summary printed at the end of a run."""
        rate = self.submitted / self.wall_seconds if self.wall_seconds > 0 else 0.0
        status = "interrupted" if self.interrupted else "done"
        return (
            f"apiexec: {status}: {self.lines} lines, {self.succeeded} succeeded, {self.failed} failed, "
            f"{self.invalid} invalid, {self.skipped} already done\n"
            f"apiexec: {self.submitted} requests in {self.wall_seconds:.2f}s ({rate:.1f}/s), "
            f"{self.retries} retries, {self.rate_limited} rate-limited (429), {self.tokens} tokens"
        )


class _Endpoints:
    """One pooled endpoint per (method, path), created on first use."""

    def __init__(self, base: EndpointConfig, pool_size: int) -> None:
        self._base = base.with_changes(pool_maxsize=max(pool_size, base.pool_maxsize))
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], Endpoint] = {}

    def get(self, method: str, url: str | None) -> Endpoint:
        path = self._base.endpoint if url is None else _relative_path(self._base.base_url, url)
        key = (method, path)
        with self._lock:
            endpoint = self._by_key.get(key)
            if endpoint is None:
                endpoint = Endpoint(self._base.with_changes(endpoint=path, method=method))
                self._by_key[key] = endpoint
            return endpoint

    def close(self) -> None:
        with self._lock:
            endpoints, self._by_key = list(self._by_key.values()), {}
        for endpoint in endpoints:
            endpoint.close()


def _relative_path(base_url: str, url: str) -> str:
    """``/v1/chat/completions`` below ``https://host/v1`` is ``chat/completions``."""
    base_parts = [p for p in urllib.parse.urlsplit(base_url).path.split("/") if p]
    url_parts = [p for p in urllib.parse.urlsplit(url).path.split("/") if p]
    if base_parts and url_parts[: len(base_parts)] == base_parts:
        url_parts = url_parts[len(base_parts) :]
    return "/".join(url_parts)


class _Progress:
    """A tqdm bar (auto: notebook or terminal), or nothing."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="req", dynamic_ncols=True, smoothing=0.1)

    def update(self, done: int, **postfix: int) -> None:
        if self._bar is not None:
            self._bar.update(done)
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Run:
    """State of one run: the journal, counters and the done-callback."""

    def __init__(self, options: BatchOptions, journal: Journal, executor: RateLimitedExecutor) -> None:
        self.options = options
        self.journal = journal
        self.executor = executor
        self.summary = BatchSummary()
        self.write_error: BaseException | None = None
        self._lock = threading.Lock()
        total = count_lines(options.input) if options.progress else None
        self.progress = _Progress(options.progress, total)

    def record(self, row: dict[str, Any], *, ok: bool, tokens: int = 0, message: str | None = None) -> None:
        self.journal.write(row)
        with self._lock:
            summary = self.summary
            if ok:
                summary.succeeded += 1
                summary.tokens += tokens
            else:
                summary.failed += 1
                if message and len(summary.failures) < 5:
                    summary.failures.append(message)
            metrics = self.executor.metrics
            self.progress.update(1, failed=summary.failed, retries=metrics.retries, **{"429s": metrics.rate_limited})

    def on_done(self, custom_id: str, call: APICalling, future: cf.Future[Any]) -> None:
        """Write a finished call's row (runs as the future's done-callback).

        A row that cannot be written is remembered and re-raised by the run:
        a future's callback would otherwise only log it.
        """
        self.executor.pop(call.id)
        if future.cancelled():
            return  # not started: the next run sends it
        try:
            self._write_outcome(custom_id, call, future)
        except Exception as exc:
            with self._lock:
                self.summary.failed += 1
                self.write_error = self.write_error or exc

    def _write_outcome(self, custom_id: str, call: APICalling, future: cf.Future[Any]) -> None:
        error = future.exception()
        status = call.response_status or 200
        if error is None:
            row = success_row(custom_id, status, call.request_id, future.result())
            self.record(row, ok=True, tokens=call.used_tokens or 0)
            return
        code, status_code = _error_code(error)
        message = str(error)
        row = error_row(custom_id, code, message, status_code=status_code, request_id=call.request_id)
        self.record(row, ok=False, message=f"{custom_id}: {message}")


def _error_code(error: BaseException) -> tuple[str, int | None]:
    if isinstance(error, APIStatusError):
        return f"http_{error.status_code}", error.status_code
    if isinstance(error, APITimeoutError):
        return "timeout", None
    if isinstance(error, APIConnectionError):
        return "connection_error", None
    if isinstance(error, CapacityError):
        return "exceeds_token_limit", None
    return type(error).__name__, None


def run_batch(options: BatchOptions) -> BatchSummary:
    """Run every line of ``options.input``; answers go to ``options.output``.

    Returns:
        The summary; ``interrupted`` is set when Ctrl-C stopped the run.

    Raises:
        OSError: The input cannot be read or the output written.
        ConfigError: The limits or the limit storage URL are invalid.
        StorageError: The limit storage cannot be reached.
    """
    start = time.monotonic()
    executor = RateLimitedExecutor(  # first: a bad or unreachable storage fails before any file is touched
        queue_capacity=max(2 * options.concurrency, 16),
        interval=60.0,
        limit_requests=options.requests_per_minute,
        limit_tokens=options.tokens_per_minute,
        concurrency_limit=options.concurrency,
        storage=options.limit_storage,
        key=options.limit_key,
        backend=options.backend,
    )
    journal = Journal(options.output)
    done, seen = journal.open(), IdSet()
    endpoints = _Endpoints(options.endpoint, options.concurrency)
    run = _Run(options, journal, executor)
    try:
        with ExitStack() as stack:
            stack.callback(done.close)
            stack.callback(seen.close)
            stack.callback(journal.close)
            stack.callback(endpoints.close)
            stack.callback(run.progress.close)
            stack.enter_context(executor)
            _submit_all(run, endpoints, done, seen)
            executor.join()
        if run.write_error is not None:
            raise run.write_error
        # One row per custom_id already, unless an earlier run left rows or a
        # duplicate line added an error row for an id that also has an answer.
        if journal.rows_before or run.summary.invalid:
            run.summary.compacted = journal.compact()
    except KeyboardInterrupt:
        run.summary.interrupted = True
    metrics = executor.metrics.snapshot()
    run.summary.retries = metrics["retries"]
    run.summary.rate_limited = metrics["rate_limited"]
    run.summary.wall_seconds = time.monotonic() - start
    return run.summary


def _submit_all(run: _Run, endpoints: _Endpoints, done: IdSet, seen: IdSet) -> None:
    summary = run.summary
    count_tokens = run.options.tokens_per_minute is not None
    for line in read_batch(run.options.input):
        summary.lines += 1
        if line.custom_id in done:
            summary.skipped += 1
            run.progress.update(1)
            continue
        first = seen.add(line.custom_id)
        problem = line.error or (None if first else f"line {line.line_no}: duplicate custom_id {line.custom_id!r}")
        if problem is not None or line.body is None:
            summary.invalid += 1
            run.journal.write(error_row(line.custom_id, "invalid_request", problem or "no body"))
            logger.warning("%s", problem)
            continue
        call = APICalling(endpoints.get(line.method, line.url), line.body, requires_tokens=count_tokens)
        future = run.executor.submit(call)
        summary.submitted += 1
        future.add_done_callback(functools.partial(run.on_done, line.custom_id, call))
