"""``apiexec run --dry-run``: what a run would send, cost and take, sending nothing.

:func:`dry_run` reads the whole input exactly as a run would (same parser,
same checks: broken JSON, a missing body, duplicate ``custom_id``, an
invalid output limit, and under ``--max-cost`` a model with no price),
skips lines the output already answered (read only; the output is never
touched), and adds up per model:

* **prompt tokens**, expected (:func:`~apiexec.llm.prices.expected_prompt_tokens`,
  about what a provider bills) and reserved (the estimate the rate limiter
  and the budget reserve, which errs high);
* **output tokens**, at most (what each request allows, see
  :func:`~apiexec.llm.prices.max_output_tokens`) and expected (the allowed
  output, but no more than :data:`~apiexec.llm.tokens.DEFAULT_OUTPUT_TOKENS`
  per completion: the length of a typical chat answer);
* **cost**, worst case (reserved prompt + most output) and expected;
* **duration**: how long the configured limits (overall, and each model's
  own from ``--limits``) make the run take at their sustained rate (a first burst may go faster; latency and concurrency may
  make it slower).

Example:
    >>> plan = dry_run(options, prices=Prices.builtin())     # doctest: +SKIP
    >>> print(plan.render())                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiexec.batch.cost import unpriced_problem, usd
from apiexec.batch.journal import row_key
from apiexec.batch.lines import read_batch
from apiexec.batch.rows import fingerprint_of, is_success
from apiexec.errors import ConfigError
from apiexec.limits.keyed import KeyedLimits
from apiexec.llm.estimates import _completions_per_request
from apiexec.llm.prices import Prices, Usage, expected_prompt_tokens, max_output_tokens, usage_dollars
from apiexec.llm.tokens import DEFAULT_OUTPUT_TOKENS, estimate_prompt_tokens


@dataclass
class ModelPlan:
    """One model's share of a dry run."""

    lines: int = 0
    prompt_expected: int = 0
    prompt_reserved: int = 0
    output_max: int = 0
    output_expected: int = 0
    worst_cost: float | None = 0.0
    expected_cost: float | None = 0.0


@dataclass
class DryRun:
    """What a run would do.

    Attributes:
        lines: Input lines read.
        to_send: Lines a run would send.
        already_done: Lines the output already answered (same request).
        invalid: Lines a run would refuse, with the first few reasons.
        models: Per-model figures.
        requests_per_minute: The request limit, or None.
        tokens_per_minute: The token limit, or None.
        max_cost: The cap, or None.
        prices_as_of: Date of the prices.
    """

    lines: int = 0
    to_send: int = 0
    already_done: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)
    models: dict[str, ModelPlan] = field(default_factory=dict)
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_cost: float | None = None
    prices_as_of: str = ""
    limits: KeyedLimits | None = None

    def total(self, name: str) -> int:
        """The sum of a token figure over the models."""
        return sum(getattr(plan, name) for plan in self.models.values())

    def cost(self, name: str) -> float | None:
        """Worst (``worst_cost``) or expected cost; None if a model has no price."""
        values = [getattr(plan, name) for plan in self.models.values()]
        return None if any(v is None for v in values) else sum(values)

    @property
    def minutes(self) -> float | None:
        """Minutes the limits make the run take at their sustained rate (None: no limit).

        The slowest of the overall limits and each model's own (``--limits``).
        """
        tokens = self.total("prompt_expected") + self.total("output_expected")
        spans = _spans(self.to_send, tokens, self.requests_per_minute, self.tokens_per_minute)
        for name, plan in self.models.items():
            limits = self.limits.for_key(name) if self.limits is not None else None
            if limits is not None:
                per_minute = 60.0 / limits.interval
                spans += _spans(plan.lines, plan.prompt_expected + plan.output_expected,
                                limits.requests and limits.requests * per_minute,
                                limits.tokens and limits.tokens * per_minute)
        return max(spans) if spans else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data."""
        worst, expected = self.cost("worst_cost"), self.cost("expected_cost")
        return {
            "lines": self.lines, "to_send": self.to_send, "already_done": self.already_done,
            "invalid": self.invalid, "problems": self.problems,
            "prompt_tokens": {"expected": self.total("prompt_expected"), "reserved": self.total("prompt_reserved")},
            "output_tokens": {"expected": self.total("output_expected"), "max": self.total("output_max")},
            "cost_usd": {"worst_case": worst, "expected": expected, "prices_as_of": self.prices_as_of,
                         "max_cost": self.max_cost},
            "minutes": self.minutes,
            "by_model": {name: dict(vars(plan)) for name, plan in sorted(self.models.items())},
        }

    def render(self) -> str:
        """The human report."""
        worst, expected = self.cost("worst_cost"), self.cost("expected_cost")
        out = [
            f"apiexec: dry run: {self.lines} lines: {self.to_send} to send, {self.already_done} already done, "
            f"{self.invalid} invalid; nothing was sent",
            f"apiexec: prompt tokens ~{self.total('prompt_expected')} expected ({self.total('prompt_reserved')} "
            f"reserved); output tokens ~{self.total('output_expected')} expected, at most {self.total('output_max')}",
            f"apiexec: cost {_usd(expected)} expected, {_usd(worst)} worst case (list prices as of {self.prices_as_of})",
        ]
        for name, plan in sorted(self.models.items()):
            out.append(f"apiexec:   {name}: {plan.lines} lines, {_usd(plan.expected_cost)} expected, "
                       f"{_usd(plan.worst_cost)} worst case")
        if self.max_cost is not None and worst is not None:
            verdict = "fits under" if worst <= self.max_cost else "may cross"
            out.append(f"apiexec: the worst case {verdict} --max-cost ${self.max_cost:g} "
                       f"(the run stops before crossing it; the rest is left for the next run)")
        minutes = self.minutes
        if minutes is None:
            out.append("apiexec: no rate limit set: the duration depends on --concurrency and the server's latency")
        else:
            out.append(f"apiexec: the limits make it take about {_duration(minutes * 60)} at their sustained rate")
        out.extend(f"apiexec: invalid: {problem}" for problem in self.problems)
        return "\n".join(out)


def dry_run(
    source: Path | str,
    *,
    base_url: str,
    default_endpoint: str,
    prices: Prices,
    output: Path | None = None,
    max_cost: float | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    limits: KeyedLimits | None = None,
) -> DryRun:
    """Plan a run of ``source`` (see the module docstring); sends nothing, writes nothing.

    Raises:
        OSError: The input cannot be read.
    """
    plan = DryRun(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                  max_cost=max_cost, prices_as_of=prices.as_of, limits=limits)
    done = _answered(output)
    seen: set[str] = set()
    for line in read_batch(source, base_url=base_url, default_endpoint=default_endpoint):
        plan.lines += 1
        first = line.custom_id not in seen
        seen.add(line.custom_id)
        if row_key(line.custom_id, line.fingerprint) in done:
            plan.already_done += 1
            continue
        problem = line.error or (None if first else f"line {line.line_no}: duplicate custom_id {line.custom_id!r}")
        if problem is None and line.body is None:
            problem = f"line {line.line_no}: no body"
        if problem is None and max_cost is not None:
            refusal = unpriced_problem(line.body, prices)
            problem = refusal and f"line {line.line_no}: {refusal}"
        if problem is None:
            assert line.body is not None
            try:
                _add(plan, line.body, prices)
            except ConfigError as exc:
                problem = f"line {line.line_no}: {exc}"
        if problem is not None:
            plan.invalid += 1
            if len(plan.problems) < 5:
                plan.problems.append(problem)
            continue
        plan.to_send += 1
    return plan


def _add(plan: DryRun, body: Mapping[str, Any], prices: Prices) -> None:
    model = body.get("model")
    name = model if isinstance(model, str) and model else "(no model)"
    price = prices.lookup(model)
    most = max_output_tokens(body, price)
    expected_out = min(most, DEFAULT_OUTPUT_TOKENS * _completions_per_request(body))
    prompt, reserved = expected_prompt_tokens(body), estimate_prompt_tokens(body)
    entry = plan.models.setdefault(name, ModelPlan())
    entry.lines += 1
    entry.prompt_expected += prompt
    entry.prompt_reserved += reserved
    entry.output_max += most
    entry.output_expected += expected_out
    if price is None:
        entry.worst_cost = entry.expected_cost = None
        return
    if entry.worst_cost is not None and entry.expected_cost is not None:
        entry.worst_cost += usage_dollars(price, Usage(input=reserved, output=most))
        entry.expected_cost += usage_dollars(price, Usage(input=prompt, output=expected_out))


def _answered(output: Path | None) -> set[str]:
    """Keys of the successful rows already in ``output`` (read only)."""
    keys: set[str] = set()
    if output is None or not Path(output).is_file():
        return keys
    with Path(output).open("rb") as handle:
        for raw in handle:
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            custom_id, fp = (row.get("custom_id"), fingerprint_of(row)) if isinstance(row, dict) else (None, None)
            if isinstance(custom_id, str) and isinstance(fp, str) and is_success(row):
                keys.add(row_key(custom_id, fp))
    return keys


def _spans(lines: int, tokens: int, requests_per_minute: float | None, tokens_per_minute: float | None) -> list[float]:
    spans = []
    if requests_per_minute:
        spans.append(lines / requests_per_minute)
    if tokens_per_minute:
        spans.append(tokens / tokens_per_minute)
    return spans


def _usd(value: float | None) -> str:
    return "unknown (a model has no price)" if value is None else usd(value)


def _duration(seconds: float) -> str:
    seconds = max(int(math.ceil(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


__all__ = ["DryRun", "ModelPlan", "dry_run"]
