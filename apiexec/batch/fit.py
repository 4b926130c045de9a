"""How a batch run fits the server: limits per model and adaptive concurrency.

:func:`fit_executor` builds the run's :class:`~apiexec.RateLimitedExecutor`:

* **Limits per model, always.** Each model gets buckets of its own — the
  ones ``--limits FILE`` gives it (or its ``"*"`` entry), else empty ones
  that learn the model's limits from its responses' headers — so a 429 for
  one model pauses that model's lines only. ``--requests-per-minute`` and
  ``--tokens-per-minute`` stay limits on the whole run.
* **Adaptive concurrency, on by default** (``--no-adaptive`` turns it off):
  the calls in flight follow the server (AIMD, see
  :mod:`apiexec.limits.adaptive`), never above ``--concurrency``.

A line waiting for its model's bucket must not keep a worker from the other
models' lines, so the executor gets a worker for every line it may hold
(the run's window) and a gate (adaptive, or fixed at ``--concurrency``
with ``--no-adaptive``) bounds the calls actually in flight.

Example:
    >>> from pathlib import Path
    >>> from apiexec.batch.runner import BatchOptions
    >>> from apiexec.http.presets import preset_config
    >>> options = BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"),
    ...                        endpoint=preset_config("openai-compatible", base_url="http://x/v1"))
    >>> executor = fit_executor(options, window=32)
    >>> executor.max_workers, executor.adaptive_admission.gate.rules.max_limit
    (32, 16)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from apiexec.batch.progress import ProgressState
from apiexec.errors import StorageError
from apiexec.limits.adaptive import AIMD
from apiexec.limits.adaptive_gate import AdaptiveAdmission
from apiexec.limits.adaptive_store import MemoryAdaptiveStore
from apiexec.limits.keyed import KeyedLimits
from apiexec.rate_limited import RateLimitedExecutor

if TYPE_CHECKING:
    from apiexec.batch.runner import BatchOptions


def fit_executor(options: BatchOptions, *, window: int) -> RateLimitedExecutor:
    """The executor of a run: per-model limits, a gate on calls in flight.

    Args:
        options: The run's options (``limits``, ``adaptive``, ``concurrency``...).
        window: Most lines the run holds at once (queued or running): the
            executor gets that many workers and queue places.

    Raises:
        ConfigError: A limit or the storage URL is invalid.
        StorageError: The storage cannot be reached.
    """
    concurrency = options.concurrency
    workers = max(window, concurrency)
    rules = AIMD(max_limit=concurrency)
    policies: list[AdaptiveAdmission] = []
    if not options.adaptive:  # a fixed gate: exactly --concurrency in flight, as without adaptation
        fixed = AIMD(max_limit=concurrency, min_limit=concurrency, initial=concurrency)
        policies.append(AdaptiveAdmission(MemoryAdaptiveStore(fixed), fixed))
    return RateLimitedExecutor(
        queue_capacity=workers,
        interval=60.0,
        limit_requests=options.requests_per_minute,
        limit_tokens=options.tokens_per_minute,
        concurrency_limit=workers,
        storage=options.limit_storage,
        key=options.limit_key,
        backend=options.backend,
        limits=options.limits if options.limits is not None else KeyedLimits(),
        adaptive=rules if options.adaptive else False,
        policies=policies,
        fit_threads=True,
    )


def with_concurrency(state: Callable[[], ProgressState], executor: RateLimitedExecutor) -> Callable[[], ProgressState]:
    """``state`` with the executor's adaptive limit added (for the progress line)."""
    policy = executor.adaptive_admission
    if policy is None:
        return state

    def read() -> ProgressState:
        current = state()
        try:
            limit = policy.limit  # the last known one while the storage fails
            in_flight = policy.in_flight
        except StorageError:  # the progress line must not fail with the storage
            return dataclasses.replace(current, concurrency=limit)
        # Calls held back by the adaptive limit are not waiting on a rate limit.
        waiting = None if in_flight >= math.floor(limit) else current.waiting
        return dataclasses.replace(current, concurrency=limit, waiting=waiting)

    return read


__all__ = ["fit_executor", "with_concurrency"]
