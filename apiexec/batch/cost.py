"""What a batch run costs: a meter per model, and what earlier runs spent.

:class:`CostMeter` adds up, per model, the calls answered, their billable
tokens and their cost at the run's :class:`~apiexec.llm.prices.Prices`
(one done-callback per call, on the worker that finished it). Answers of
models with no price are counted apart, never as free. :func:`journal_cost`
reads what the answers already in an output file cost, so that
``--max-cost`` caps a job across its resumed runs, not each run alone.

Example:
    >>> from apiexec.llm.prices import Prices
    >>> meter = CostMeter(Prices({"m": {"input": 1.0, "output": 2.0}}))
    >>> meter.add({"model": "m", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}})
    >>> meter.total, meter.render_lines()
    (0.002, ['apiexec: cost $0.002000 (list prices as of 2026-11-26): m $0.002000 (1 calls, 1000 in, 500 out)'])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apiexec.batch.outcomes import NotSent
from apiexec.batch.progress import ProgressState
from apiexec.execution.admission import Chain
from apiexec.limits.budget import to_nanos
from apiexec.limits.storage import DEFAULT_STORAGE
from apiexec.llm.prices import Prices, read_usage
from apiexec.spending import BudgetAdmission

if TYPE_CHECKING:
    from apiexec.batch.lines import BatchLine
    from apiexec.batch.runner import BatchOptions
    from apiexec.rate_limited import RateLimitedExecutor

logger = logging.getLogger(__name__)


@dataclass
class ModelCost:
    """One model's share of a run.

    Attributes:
        calls: Answers received.
        input_tokens: Billable input tokens (cache hits and writes included).
        output_tokens: Output tokens.
        cached_tokens: Of the input, tokens read from cache.
        cost: Dollars, or None when the model has no price.
    """

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: float | None = 0.0


@dataclass
class CostMeter:
    """Cost of a run so far, per model; thread-safe.

    Attributes:
        prices: The prices used.
        earlier: Dollars the answers already in the output cost (earlier runs).
        max_cost: The cap, if any (shown beside the total).
    """

    prices: Prices
    earlier: float = 0.0
    max_cost: float | None = None
    budget: BudgetAdmission | None = None
    models: dict[str, ModelCost] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refusal(self, line: BatchLine) -> str | None:
        """Why ``line`` cannot run under the cap (its model has no price), or None."""
        if self.budget is None or line.body is None:
            return None
        problem = unpriced_problem(line.body, self.prices)
        return problem and f"line {line.line_no}: {problem}"

    def count_earlier(self, output: Path, storage: str) -> None:
        """Charge the budget with what the answers already in ``output`` cost.

        So ``--max-cost`` caps the job across its resumed runs. A shared
        storage (SQLite, Redis) keeps its own total across runs instead.
        """
        if self.budget is None:
            return
        self.earlier = journal_cost(output, self.prices)
        if self.earlier and storage == DEFAULT_STORAGE:
            self.budget.store.settle(0, to_nanos(self.earlier))

    def on_done(self, call: Any, future: Any) -> None:
        """A call's done-callback: count its answer (if it has one)."""
        try:
            response = future.result(timeout=0)  # (a done-callback: the future is done)
        except BaseException:  # cancelled or failed: no answer to count
            return
        request = getattr(call, "request", None)
        model = request.get("model") if isinstance(request, Mapping) else None
        self.add(response, model if isinstance(model, str) else None)

    def add(self, response: Any, model: str | None = None) -> None:
        """Count one answer (its ``usage`` at its model's price)."""
        usage = read_usage(response)
        if usage is None:
            return
        named = response.get("model") if isinstance(response, Mapping) else None
        name = named if isinstance(named, str) and named else model or "(no model)"
        cost = self.prices.usage_cost(response, model, usage=usage)
        with self._lock:
            entry = self.models.setdefault(name, ModelCost())
            entry.calls += 1
            entry.input_tokens += usage.input + usage.cached + usage.cache_write + usage.cache_write_1h
            entry.output_tokens += usage.output
            entry.cached_tokens += usage.cached
            entry.cost = None if cost is None or entry.cost is None else entry.cost + cost

    @property
    def total(self) -> float:
        """Dollars this run spent on priced models."""
        with self._lock:
            return sum(entry.cost or 0.0 for entry in self.models.values())

    @property
    def unpriced(self) -> list[str]:
        """Models answered that have no price."""
        with self._lock:
            return sorted(name for name, entry in self.models.items() if entry.cost is None)

    def snapshot(self) -> dict[str, ModelCost]:
        """A copy of the per-model figures."""
        with self._lock:
            return {name: ModelCost(**vars(entry)) for name, entry in sorted(self.models.items())}

    def render_lines(self) -> list[str]:
        """The summary's cost lines."""
        parts = []
        for name, entry in self.snapshot().items():
            cost = "no price" if entry.cost is None else usd(entry.cost)
            parts.append(f"{name} {cost} ({entry.calls} calls, {entry.input_tokens} in, {entry.output_tokens} out)")
        models = self.snapshot()
        priced = not models or any(entry.cost is not None for entry in models.values())
        head = f"apiexec: cost {usd(self.total) if priced else 'unknown'}"
        if self.earlier:
            head += f" this run, {usd(self.earlier + self.total)} with earlier runs"
        if self.max_cost is not None:
            head += f", cap ${self.max_cost:g}"
        head += f" (list prices as of {self.prices.as_of})"
        lines = [head + (": " + "; ".join(parts) if parts else "")]
        if self.unpriced:
            lines.append(f"apiexec: no price for {', '.join(self.unpriced)}: their cost is not in the total "
                         "(give prices with --prices FILE)")
        return lines


def usd(dollars: float) -> str:
    """Dollars with the digits that matter: cents for large sums, more for small ones.

    Example:
        >>> usd(12.3456), usd(0.1234567), usd(0.0001011)
        ('$12.35', '$0.1235', '$0.000101')
    """
    if dollars >= 10:
        return f"${dollars:,.2f}"
    if dollars >= 0.01:
        return f"${dollars:.4f}"
    return f"${dollars:.6f}"


def start_spending(options: BatchOptions, executor: RateLimitedExecutor) -> CostMeter:
    """The run's meter; with ``options.max_cost``, its budget chained after the executor's limits.

    Call before the executor starts.

    Raises:
        ConfigError: The cap or the storage URL is invalid.
        StorageError: The storage cannot be reached.
    """
    prices = options.prices if options.prices is not None else Prices.builtin()
    meter = CostMeter(prices, max_cost=options.max_cost)
    if options.max_cost is not None:
        meter.budget = BudgetAdmission(
            options.max_cost, prices, storage=options.limit_storage, key=options.limit_key, unsent_errors=(NotSent,)
        )
        # Asked last: a call takes its budget only once the limits admitted it.
        executor.admission = Chain(executor.admission, meter.budget)
    return meter


def with_cost(state: Callable[[], ProgressState], meter: CostMeter) -> Callable[[], ProgressState]:
    """``state`` with the run's cost so far (for the progress line)."""

    def read() -> ProgressState:
        priced = meter.budget is not None or any(e.cost is not None for e in meter.snapshot().values())
        return dataclasses.replace(state(), cost=meter.total + meter.earlier if priced else None)

    return read


def unpriced_problem(body: Any, prices: Prices) -> str | None:
    """Why a line cannot run under a spending cap (its model has no price), or None."""
    model = body.get("model") if isinstance(body, Mapping) else None
    if prices.lookup(model) is not None:
        return None
    if not isinstance(model, str) or not model:
        return "the request names no model, so its cost cannot be capped (--max-cost)"
    return f"no known price for model {model!r}: under --max-cost every model needs one (give it with --prices FILE)"


def journal_cost(path: Path, prices: Prices) -> float:
    """Dollars the successful answers already in the output ``path`` cost (0 if none)."""
    total = 0.0
    if not path.is_file():
        return 0.0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                row = json.loads(raw)
            except ValueError:
                continue  # a torn last line: the journal repairs it
            cost = prices.usage_cost(_answer_of(row))
            total += cost or 0.0
    return total


def _answer_of(row: Any) -> Any:
    """The provider's answer inside an output row (OpenAI or Anthropic layout), or None."""
    if not isinstance(row, Mapping):
        return None
    response = row.get("response")
    status = response.get("status_code") if isinstance(response, Mapping) else None
    if isinstance(response, Mapping) and isinstance(status, int) and 200 <= status < 300:
        return response.get("body")
    result = row.get("result")
    if isinstance(result, Mapping) and result.get("type") == "succeeded":
        return result.get("message")
    return None


__all__ = ["CostMeter", "ModelCost", "journal_cost", "start_spending", "unpriced_problem", "usd", "with_cost"]
