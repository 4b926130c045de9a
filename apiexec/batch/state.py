"""The state of one batch run, shared by the main thread and the workers.

:class:`RunState` counts what happened, writes each finished call's row the
moment its answer arrives (on the worker that finished it), trips the
circuit breaker, and wakes the main thread (one :class:`threading.Event`)
whenever something it may be waiting for changes: a call finished, a stop
signal arrived, the breaker tripped. Calls reach the endpoint through
:class:`Gated`, which refuses to start one once the run stopped admitting.

Example:
    >>> state = RunState(options, journal, None)              # doctest: +SKIP
    >>> state.wait_until(lambda: state.outstanding == 0)       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from apiexec.batch.breaker import Breaker
from apiexec.batch.journal import Journal
from apiexec.batch.lines import BatchLine, count_lines
from apiexec.batch.outcomes import NotSent, classify
from apiexec.batch.progress import ProgressState
from apiexec.batch.rows import make_row
from apiexec.batch.summary import BatchSummary
from apiexec.http.config import EndpointConfig
from apiexec.http.endpoint import Endpoint
from apiexec.llm.api_calling import APICalling

if TYPE_CHECKING:
    from apiexec.batch.runner import BatchOptions

logger = logging.getLogger(__name__)


class Endpoints:
    """One pooled endpoint per (method, path), created on first use."""

    def __init__(self, base: EndpointConfig, pool_size: int) -> None:
        self._base = base.with_changes(pool_maxsize=max(pool_size, base.pool_maxsize))
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], Endpoint] = {}

    def get(self, method: str, path: str) -> Endpoint:
        with self._lock:
            endpoint = self._by_key.get((method, path))
            if endpoint is None:
                endpoint = Endpoint(self._base.with_changes(endpoint=path, method=method))
                self._by_key[(method, path)] = endpoint
            return endpoint

    def close(self) -> None:
        with self._lock:
            endpoints, self._by_key = list(self._by_key.values()), {}
        for endpoint in endpoints:
            endpoint.close()


class Gated:
    """An endpoint that refuses to start a call once the run stopped admitting.

    Calls queued before the stop reach a worker afterwards; they end here
    with :class:`NotSent` instead of reaching the server.
    """

    def __init__(self, endpoint: Endpoint, run: RunState) -> None:
        self._endpoint = endpoint
        self._run = run

    def call(self, request: Any, cache_control: bool = False, **kwargs: Any) -> Any:
        self._run.start_sending()
        try:
            return self._endpoint.call(request, cache_control, **kwargs)
        finally:
            self._run.end_sending()

    def stream(self, request: Any, **kwargs: Any) -> Any:
        self._run.start_sending()
        try:
            return self._endpoint.stream(request, **kwargs)
        finally:
            self._run.end_sending()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._endpoint, name)


class RunState:
    """State of one run shared by the main thread and the workers' callbacks."""

    def __init__(self, options: BatchOptions, journal: Journal, errors: Journal | None) -> None:
        self.options = options
        self.journal = journal
        self.errors = errors
        self.summary = BatchSummary()
        self.breaker = Breaker(options.breaker_connection_failures)
        self.wake = threading.Event()  # set by anything the main thread waits for
        #: A finished call wakes the main thread once at most this many are outstanding.
        self.wake_at: int | None = None
        self.interrupts = 0
        self.closed = False
        self.finishing = False
        self.total = count_lines(options.input) if options.progress else None
        self._lock = threading.Lock()
        self._outstanding = 0
        self._in_flight = 0
        self._waiting_since: float | None = None
        self._first_send: float | None = None

    # -- stopping --------------------------------------------------------------------

    @property
    def halted(self) -> bool:
        """No more lines may be admitted (an interrupt or the breaker)."""
        return self.interrupts > 0 or self.breaker.reason is not None  # (read by every line, often)

    def on_signal(self) -> None:
        """A stop signal arrived (called on the signal watcher's thread)."""
        if self.finishing:
            # Every line is answered and written; only the (atomic) compaction is left.
            logger.warning("every line is done; finishing the output file")
            return
        self.interrupts += 1
        self.summary.interrupted = True
        self.wake.set()
        if self.interrupts == 1:
            logger.warning(
                "interrupted: no new calls; finishing the %d in flight (signal again to abandon them)", self._in_flight
            )
        elif self.interrupts == 2:
            logger.warning("interrupted again: abandoning the calls in flight")

    def trip(self, reason: str) -> None:
        if self.breaker.trip(reason):
            logger.warning("stopping: %s", reason)
            self.wake.set()

    def wait_until(self, done: Callable[[], bool]) -> None:
        """Block until ``done()`` (re-checked whenever something happens)."""
        while True:
            self.wake.clear()
            if done():
                return
            self.wake.wait()

    # -- calls ------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def start_sending(self) -> None:
        """Before one call's sending: refuse it once halted; count it in flight.

        Each call that returns is matched by one :meth:`end_sending` (a
        ``try``/``finally`` in :class:`Gated`: a generator-based context
        manager here cost more per line than the rest of this bookkeeping).

        Raises:
            NotSent: The run stopped admitting calls.
        """
        with self._lock:
            if self.halted:
                raise NotSent("the run stopped admitting calls")
            self._in_flight += 1
            if self._first_send is None:
                self._first_send = time.monotonic()

    def end_sending(self) -> None:
        """After one call's sending (see :meth:`start_sending`)."""
        with self._lock:
            self._in_flight -= 1

    def submitted(self) -> None:
        with self._lock:
            self._outstanding += 1
            self.summary.submitted += 1

    def unsubmitted(self) -> None:
        """Take back :meth:`submitted`: the executor refused the call."""
        with self._lock:
            self._outstanding -= 1
            self.summary.submitted -= 1

    def on_done(self, line: BatchLine, call: APICalling, future: Any, *, wake: bool = False) -> None:
        """Write a finished call's row (the future's done-callback, on a worker).

        The main thread is woken when ``wake``, when the run halted, or once
        no more than :attr:`wake_at` calls are outstanding.
        """
        try:
            self._record(line, call, future)
        except Exception:  # a callback must never die silently: the row is counted unwritten
            logger.exception("could not record the answer to %s", line.custom_id)
            with self._lock:
                self.summary.unwritten += 1
        finally:
            with self._lock:
                self._outstanding -= 1
                outstanding = self._outstanding
            if wake or self.wake_at is None or outstanding <= self.wake_at or self.halted:
                self.wake.set()

    def _record(self, line: BatchLine, call: APICalling, future: Any) -> None:
        result = classify(call, future)
        if result.trip:
            self.trip(result.trip)
        if result.connection_failure and (reason := self.breaker.note_connection_failure()):
            self.trip(reason)
        elif result.outcome is not None and result.outcome.status_code is not None:
            self.breaker.note_answer()
        outcome = result.outcome
        if outcome is None:
            with self._lock:
                self.summary.not_sent += 1
            return
        row = make_row(line.layout, line.custom_id, line.fingerprint, outcome)
        target = self.journal if outcome.ok or self.errors is None else self.errors
        if not self.write(target, row):
            return
        with self._lock:
            if outcome.ok:
                self.summary.succeeded += 1
                self.summary.tokens += call.used_tokens or 0
            else:
                self.summary.failed += 1
                if len(self.summary.failures) < 5:
                    self.summary.failures.append(f"{line.custom_id}: {outcome.message or outcome.status_code}")

    def write(self, journal: Journal, row: dict[str, Any]) -> bool:
        """Write a row; on failure trip the breaker and count it unwritten."""
        if self.closed:
            with self._lock:
                self.summary.unwritten += 1
            return False
        try:
            journal.write(row)
            return True
        except (OSError, RuntimeError) as exc:
            with self._lock:
                self.summary.unwritten += 1
            self.trip(f"cannot write {journal.path}: {exc}")
            return False

    # -- progress ---------------------------------------------------------------------

    def progress_state(self) -> ProgressState:
        s = self.summary
        with self._lock:
            queued = self._outstanding - self._in_flight
            now = time.monotonic()
            if queued > 0 and self._in_flight < self.options.concurrency and not self.halted:
                self._waiting_since = self._waiting_since or now
            else:
                self._waiting_since = None
            waiting = None if self._waiting_since is None else now - self._waiting_since
            elapsed = 0.0 if self._first_send is None else now - self._first_send
            skipped = s.skipped + s.invalid
            total = None if self.total is None else max(self.total - skipped, 0)
            return ProgressState(
                total=total, done=s.succeeded + s.failed, failed=s.failed, skipped=skipped,
                tokens=s.tokens, elapsed=elapsed, waiting=waiting if waiting and waiting >= 1.0 else None,
            )
