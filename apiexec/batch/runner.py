"""The batch runner behind ``apiexec run``: :func:`run_batch`.

Reads the input as a stream, submits one :class:`~apiexec.APICalling` per
line to a :class:`~apiexec.RateLimitedExecutor`, writes each answer to the
:class:`~apiexec.batch.journal.Journal` the moment it arrives, and skips lines a
previous run already answered *for the same request* (fingerprints match).

What stops a run, and what it leaves behind:

* **Ctrl-C / SIGTERM / SIGHUP** (the first): no new line is admitted, calls
  in flight finish and are written, the summary is printed. From Python a
  :class:`BatchInterrupted` (a ``KeyboardInterrupt``) is raised after that.
* **A second signal**: stop waiting; every answer already received is
  written, the calls still in flight are abandoned (counted and reported).
* **The circuit breaker** (:mod:`apiexec.batch.breaker`): refused account,
  storage down, a failing disk, the host gone: nothing more is admitted.

In every case the lines not sent are left for the next run of the same
command, which resumes.

Example:
    >>> summary = run_batch(BatchOptions(input=Path("in.jsonl"),
    ...                                  output=Path("out.jsonl"),
    ...                                  endpoint=config))     # doctest: +SKIP
    >>> summary.exit_code                                       # doctest: +SKIP
    0
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from apiexec._checks import check_at_most, check_int, check_positive_number
from apiexec.batch.breaker import DEFAULT_CONNECTION_FAILURES, refusal_reason
from apiexec.batch.cost import start_spending, with_cost
from apiexec.batch.fit import fit_executor, with_concurrency
from apiexec.batch.id_set import IdSet
from apiexec.batch.journal import Journal, done_marker, row_key
from apiexec.batch.lanes import Lanes, line_key
from apiexec.batch.lines import STDIN, BatchLine, read_batch
from apiexec.batch.lock import OutputLock
from apiexec.batch.progress import DEFAULT_PROGRESS_INTERVAL, Progress
from apiexec.batch.rows import Outcome, make_row
from apiexec.batch.signals import SignalWatcher
from apiexec.batch.state import Endpoints, Gated, RunState
from apiexec.batch.summary import BatchInterrupted, BatchSummary
from apiexec.errors import BudgetExceeded, ConfigError, StorageError
from apiexec.http.config import EndpointConfig
from apiexec.limits.bucket import LimitBackend
from apiexec.limits.keyed import KeyedLimits
from apiexec.limits.storage import DEFAULT_KEY, DEFAULT_STORAGE
from apiexec.llm.api_calling import APICalling
from apiexec.llm.prices import Prices
from apiexec.rate_limited import RateLimitedExecutor

__all__ = ["BatchInterrupted", "BatchOptions", "BatchSummary", "run_batch"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_CONCURRENCY: Final = 16
#: More threads than this is a typo, not a plan (and would exhaust the process).
MAX_BATCH_CONCURRENCY: Final = 1024
#: Calls not yet started allowed ahead of the workers.
_QUEUE_AHEAD: Final = 2


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """What to run and how.

    Attributes:
        input: JSONL input file (``.gz`` is read decompressed), or ``"-"`` for stdin.
        output: JSONL output journal (appended to; resumed from).
        endpoint: Base configuration; each line's ``url`` picks the path.
        errors_output: Write failed lines here instead of into ``output``
            (as OpenAI's batch error file), or None.
        requests_per_minute: Request limit, or None.
        tokens_per_minute: Token limit, or None (then tokens are not estimated).
        concurrency: Calls in flight at once (1 to 1024).
        force: Use an output file that is not an apiexec journal (its rows
            are moved to ``<output>.set-aside.jsonl``, never deleted).
        progress: Report progress on standard error (a bar on a terminal,
            else a plain line every ``progress_interval`` seconds).
        progress_interval: Seconds between plain progress lines.
        limit_storage: Where the buckets live: ``memory://``, ``sqlite:///path.db``
            or ``redis://host:port/db`` (shared by every run naming it).
        limit_key: Name of the shared quota inside ``limit_storage``.
        backend: A ready limit backend instead of ``limit_storage``.
        breaker_connection_failures: Connection failures in a row that stop the run.
        stop_signals: Signals that stop the run gracefully (first) or
            abandon the calls in flight (second); handled only when
            :func:`run_batch` runs on the main thread.
        max_cost: Spending cap in US dollars for the output's job, earlier
            runs included (see :mod:`apiexec.batch.cost`), or None.
        prices: Prices per model (default: the built-in list prices).
        limits: Limits per model (``--limits FILE``); models not listed
            learn theirs from the server (see :mod:`apiexec.batch.fit`).
        adaptive: Adapt the calls in flight to the server, up to
            ``concurrency`` (False: exactly ``concurrency``).

    Raises:
        ConfigError: A value is out of range (the message names the field).
    """

    input: Path | str
    output: Path
    endpoint: EndpointConfig
    errors_output: Path | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    concurrency: int = DEFAULT_BATCH_CONCURRENCY
    force: bool = False
    progress: bool = False
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    limit_storage: str = DEFAULT_STORAGE
    limit_key: str = DEFAULT_KEY
    backend: LimitBackend | None = None
    breaker_connection_failures: int = DEFAULT_CONNECTION_FAILURES
    stop_signals: tuple[int, ...] = (signal.SIGINT,)
    max_cost: float | None = None
    prices: Prices | None = None
    limits: KeyedLimits | None = None
    adaptive: bool = True

    def __post_init__(self) -> None:
        check_int("concurrency", self.concurrency, low=1)
        check_at_most("concurrency", self.concurrency, MAX_BATCH_CONCURRENCY)
        check_int("breaker_connection_failures", self.breaker_connection_failures, low=1)
        check_positive_number("progress_interval", self.progress_interval)
        for name in ("requests_per_minute", "tokens_per_minute", "max_cost"):
            if getattr(self, name) is not None:
                check_positive_number(name, getattr(self, name))
        if str(self.output) == STDIN:
            raise ConfigError("output", "must be a file (it is a journal that a later run resumes from), not '-'")
        object.__setattr__(self, "output", Path(self.output))
        if self.errors_output is not None:
            object.__setattr__(self, "errors_output", Path(self.errors_output))
            if _same_file(self.errors_output, self.output):
                raise ConfigError("errors_output", "must not be the output file")
        if str(self.input) != STDIN:
            object.__setattr__(self, "input", Path(self.input))
            for name in ("output", "errors_output"):
                target = getattr(self, name)
                if target is not None and _same_file(Path(self.input), target):
                    raise ConfigError(name, "must not be the input file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def run_batch(options: BatchOptions) -> BatchSummary:
    """Run every line of ``options.input``; answers go to ``options.output``.

    Returns:
        The summary (see :attr:`BatchSummary.exit_code`); ``stopped`` says
        why the circuit breaker ended the run early.

    Raises:
        BatchInterrupted: Ctrl-C (or a stop signal) ended the run; raised
            after every answer received was written. ``exc.summary`` holds
            the summary.
        OutputLocked: Another run is writing the same output.
        NotAJournal: The output exists and was not written by apiexec
            (pass ``force=True`` to use it).
        OSError: The input cannot be read or the output opened.
        ConfigError: The limits or the limit storage URL are invalid.
        StorageError: The limit storage cannot be reached.
    """
    summary = _execute(options)
    if summary.interrupted:
        raise BatchInterrupted(summary)
    return summary


def _execute(options: BatchOptions) -> BatchSummary:
    start = time.monotonic()
    # First: a bad or unreachable storage fails before any file is touched.
    executor = fit_executor(options, window=max(_QUEUE_AHEAD * options.concurrency, 16))
    meter = start_spending(options, executor)  # the budget shares the limits' storage
    with ExitStack() as stack:
        for path in filter(None, (options.output, options.errors_output)):
            stack.enter_context(OutputLock(path))
        journal = Journal(options.output, force=options.force)
        done = journal.open()
        stack.callback(done.close)
        stack.callback(journal.close)
        errors = None
        if options.errors_output is not None:
            errors = Journal(options.errors_output, force=options.force)
            errors.open().close()
            stack.callback(errors.close)
        run = RunState(options, journal, errors)
        run.summary.cost = meter
        meter.count_earlier(options.output, options.limit_storage)
        # Only the final compaction reads the input's keys, and a fresh output needs none:
        # then no set at all (no Bloom filter, no hash nor insert per line).
        current = IdSet() if _needs_compaction(run) else None
        if current is not None:
            stack.callback(current.close)
        endpoints = Endpoints(options.endpoint, options.concurrency)
        stack.callback(endpoints.close)
        complete = _drive(run, executor, endpoints, done, current, stack)
        run.finishing = complete
        run.closed = True
        journal.close()
        if complete:
            _compact(run, current)
    summary = run.summary
    summary.stopped = run.breaker.reason
    metrics = executor.metrics.snapshot()
    summary.retries = metrics.get("retries", 0)
    summary.rate_limited = metrics.get("rate_limited", 0)
    summary.wall_seconds = time.monotonic() - start
    return summary


def _drive(
    run: RunState,
    executor: RateLimitedExecutor,
    endpoints: Endpoints,
    done: IdSet,
    current: IdSet | None,
    stack: ExitStack,
) -> bool:
    """Submit every line, then wait for the calls; True if the input was all handled."""
    options = run.options
    watcher = SignalWatcher(options.stop_signals, run.on_signal)
    stack.callback(watcher.close)
    mode = "off" if not options.progress else "bar" if _interactive() else "lines"
    state = with_cost(with_concurrency(run.progress_state, executor), run.summary.cost)
    progress = Progress(mode, state, sys.stderr, options.progress_interval)
    executor.start()
    abandoned = False
    try:
        try:
            finished_input = _submit_all(run, executor, endpoints, done, current)
        except KeyboardInterrupt:  # SIGINT not among stop_signals: handle it all the same
            run.on_signal()
            finished_input = False
        finally:
            _drain(run, executor)
            abandoned = run.outstanding > 0
            if abandoned:
                run.summary.abandoned = run.outstanding
                run.closed = True  # late answers of abandoned calls are not written
    finally:
        executor.shutdown(wait=not abandoned)
        progress.close()
    return finished_input and not run.halted


def _interactive() -> bool:
    """A terminal, or a Jupyter kernel (where tqdm.auto draws a widget)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _drain(run: RunState, executor: RateLimitedExecutor) -> None:
    """Wait for the calls submitted; on a stop, cancel those not started first.

    Returns when every call has finished, or at a second interrupt.
    """
    stopped = False
    # After a stop, also when the executor itself has nothing left: a Ctrl-C
    # raised in the reader between a submit and its add_done_callback leaves
    # a call counted that no callback will ever uncount (then counted abandoned,
    # its line left for the next run) -- the run must not wait for it forever.
    idle = threading.Event()

    def settled() -> bool:
        return run.outstanding == 0 or run.interrupts > 1 or (run.halted and not stopped) or idle.is_set()

    while True:
        try:
            run.wait_until(settled)
        except KeyboardInterrupt:  # SIGINT not among stop_signals: a first, then a second stop
            run.on_signal()
            continue
        if run.halted and not stopped:
            # A stop (signal or breaker), also while only waiting for the last calls:
            # cancel what is queued or waiting for capacity; calls being answered go on.
            executor.shutdown(wait=False)
            stopped = True
            _wake_when_idle(executor, run, idle)
            continue
        return


def _wake_when_idle(executor: RateLimitedExecutor, run: RunState, idle: threading.Event) -> None:
    """Set ``idle`` and wake the run once every call the executor took has ended (a daemon thread)."""

    def watch() -> None:
        executor.join()  # blocks on the executor's condition: its callbacks have all run by then
        idle.set()
        run.wake.set()

    threading.Thread(target=watch, name="apiexec-drain", daemon=True).start()


def _submit_all(
    run: RunState, executor: RateLimitedExecutor, endpoints: Endpoints, done: IdSet, current: IdSet | None
) -> bool:
    """Admit lines while the run may; True when the input was read to its end."""
    options, summary = run.options, run.summary
    seen = IdSet()
    window = max(_QUEUE_AHEAD * options.concurrency, 16)  # never more than the queue holds: submit never blocks
    count_tokens = options.tokens_per_minute is not None
    base = options.endpoint
    lanes = Lanes(window, lambda ready: run.wait_until(lambda: ready() or run.halted), halted=lambda: run.halted)
    # The reader waits for room in the window; waking it for every finished
    # call (a context switch each) is wasted while the window is nearly full:
    # it is woken once a quarter of the window is free (still a window's
    # three quarters in the executor: at least the concurrency), and always
    # at the end, on a stop or when a lane may take another line.
    run.wake_at = window - max(1, window // 4)

    def send(line: BatchLine) -> bool:
        if run.halted or line.body is None:  # (invalid lines never reach a lane)
            return False
        call = APICalling(
            Gated(endpoints.get(line.method, line.path), run),  # type: ignore[arg-type]
            line.body,
            requires_tokens=count_tokens,
        )
        callback = functools.partial(finished, line_key(line.body, line.path), line, call)
        run.submitted()  # counted first: a Ctrl-C in between must not let the call's callback uncount it
        try:
            future = executor.submit(call)
        except (StorageError, BudgetExceeded) as exc:  # refused before it was queued
            run.unsubmitted()
            run.trip(refusal_reason(exc) or str(exc))
            return False
        except BaseException:
            run.unsubmitted()
            raise
        future.add_done_callback(callback)
        return True

    def finished(key: str, line: BatchLine, call: APICalling, future: Any) -> None:
        """One done-callback per call: its lane, its cost (before the row: progress), its row."""
        mixed = True  # unknown: wake the reader
        try:
            mixed = lanes.done(key)  # another lane's line may go now
            summary.cost.on_done(call, future)
        except Exception:  # the row is written whatever the bookkeeping did
            logger.exception("bookkeeping after %s failed", line.custom_id)
        finally:
            run.on_done(line, call, future, wake=mixed)

    try:
        for line in read_batch(options.input, base_url=base.base_url, default_endpoint=base.endpoint):
            if run.halted:
                return False
            summary.lines += 1
            key = row_key(line.custom_id, line.fingerprint)
            first = seen.add(line.custom_id)
            if current is not None:
                current.add(key)
            if key in done:
                summary.skipped += 1
                continue
            if first and line.error is None and done_marker(line.custom_id) in done:
                summary.changed += 1
            problem = line.error or (None if first else f"line {line.line_no}: duplicate custom_id {line.custom_id!r}")
            problem = problem or summary.cost.refusal(line)  # no known price under --max-cost
            if problem is not None or line.body is None:
                _write_invalid(run, line, problem or "no body")
                continue
            if not lanes.offer(line_key(line.body, line.path), line, send):  # a slow model's lines wait in their lane
                return False
        return lanes.drain(send)
    finally:
        seen.close()


def _write_invalid(run: RunState, line: BatchLine, problem: str) -> None:
    run.summary.invalid += 1
    if len(run.summary.failures) < 5:  # the first few are shown; every one has its error row
        run.summary.failures.append(problem)
        logger.warning("%s", problem)
    else:
        logger.info("%s", problem)
    outcome = Outcome(code="invalid_request", message=problem)
    target = run.journal if run.errors is None else run.errors
    run.write(target, make_row(line.layout, line.custom_id, line.fingerprint, outcome))


def _needs_compaction(run: RunState) -> bool:
    """False for a fresh output: it holds one row per line already, nothing to merge or set aside."""
    return bool(run.journal.rows_before or (run.errors is not None and run.errors.rows_before))


def _compact(run: RunState, current: IdSet | None) -> None:
    """At the end of a complete run: one row per input line; set strays aside."""
    summary = run.summary
    if current is None or not _needs_compaction(run):
        return
    result = run.journal.compact(current)
    summary.compacted, summary.set_aside = result.dropped, result.set_aside
    summary.set_aside_path = result.aside_path
    if run.errors is not None:
        succeeded = run.journal.successful_keys()
        try:
            extra = run.errors.compact(current, superseded=succeeded)
        finally:
            succeeded.close()
        summary.compacted += extra.dropped
        summary.set_aside += extra.set_aside
        summary.set_aside_path = summary.set_aside_path or extra.aside_path
