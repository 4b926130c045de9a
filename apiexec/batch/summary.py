"""What a batch run did: :class:`BatchSummary`, and :class:`BatchInterrupted`.

Example:
    >>> summary = BatchSummary(lines=3, submitted=3, succeeded=2, failed=1)
    >>> summary.all_succeeded, summary.exit_code
    (False, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BatchSummary:
    """What a run did.

    Attributes:
        lines: Input lines read.
        submitted: Lines sent (or queued to be sent) in this run.
        succeeded: Of those, answered with success.
        failed: Of those, failed (their rows say why).
        invalid: Lines that could not be sent (each has an error row).
        skipped: Lines a previous run already answered (same request).
        changed: Lines whose request changed since their earlier answer (sent again).
        not_sent: Lines admitted but never sent (stopped first): the next run sends them.
        abandoned: Calls in flight given up by a second interrupt.
        unwritten: Answers received that could not be written (disk failing).
        tokens: Tokens the answers report.
        retries: Retries made.
        rate_limited: 429 answers seen.
        wall_seconds: Duration of the run.
        interrupted: Stopped by Ctrl-C, SIGTERM or SIGHUP.
        stopped: Why the circuit breaker stopped the run early, or None.
        compacted: Superseded rows removed from the output at the end.
        set_aside: Rows moved to ``set_aside_path`` at the end.
        set_aside_path: Where they went.
        failures: The first few failure messages.
        cost: The run's :class:`~apiexec.batch.cost.CostMeter` (cost per model), or None.
    """

    lines: int = 0
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0
    changed: int = 0
    not_sent: int = 0
    abandoned: int = 0
    unwritten: int = 0
    tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    wall_seconds: float = 0.0
    interrupted: bool = False
    stopped: str | None = None
    compacted: int = 0
    set_aside: int = 0
    set_aside_path: Path | None = None
    failures: list[str] = field(default_factory=list)
    cost: Any = None

    @property
    def all_succeeded(self) -> bool:
        """True when every line succeeded and the run finished."""
        return not (self.failed or self.invalid or self.interrupted or self.stopped or self.unwritten)

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 0 all succeeded, 2 some failed, 3 stopped early, 130 interrupted."""
        if self.interrupted:
            return 130
        if self.stopped:
            return 3
        return 0 if self.all_succeeded else 2

    def render(self) -> str:
        """The human summary printed at the end of a run."""
        sent = self.succeeded + self.failed
        rate = sent / self.wall_seconds if self.wall_seconds > 0 else 0.0
        status = "interrupted" if self.interrupted else "stopped early" if self.stopped else "done"
        lines = [
            f"apiexec: {status}: {self.lines} lines, {self.succeeded} succeeded, {self.failed} failed, "
            f"{self.invalid} invalid, {self.skipped} already done",
            f"apiexec: {sent} requests in {self.wall_seconds:.2f}s ({rate:.1f}/s), "
            f"{self.retries} retries, {self.rate_limited} rate-limited (429), {self.tokens} tokens",
        ]
        if self.cost is not None:
            lines.extend(self.cost.render_lines())
        if self.changed:
            lines.append(f"apiexec: {self.changed} lines changed since their earlier answer and were sent again")
        if self.not_sent:
            lines.append(f"apiexec: {self.not_sent} lines admitted but not sent; the next run sends them")
        if self.abandoned:
            lines.append(
                f"apiexec: {self.abandoned} calls in flight were abandoned (their answers are lost; "
                "the next run sends them again)"
            )
        if self.unwritten:
            lines.append(f"apiexec: {self.unwritten} answers could not be written; the next run sends them again")
        if self.set_aside:
            lines.append(
                f"apiexec: {self.set_aside} rows moved to {self.set_aside_path}: their custom_id is not in "
                "this input, or their request changed"
            )
        return "\n".join(lines)


class BatchInterrupted(KeyboardInterrupt):
    """Raised by :func:`run_batch` after an interrupt, once the journal is safe.

    Attributes:
        summary: What the run did before it stopped.
    """

    def __init__(self, summary: BatchSummary) -> None:
        super().__init__("batch run interrupted; run it again to resume")
        self.summary = summary


