"""The machine-readable run report of ``apiexec run --report FILE.json``.

One JSON object, written atomically (a temporary file renamed over the
target) at the end of a run, also one that stopped early or was
interrupted::

    {"format": "apiexec-run-report/1", "status": "done", "exit_code": 0,
     "counts": {"lines": 50, "succeeded": 50, ...},
     "tokens": {"total": 1939, "input": 1339, "output": 600, "cached": 0},
     "cost": {"total_usd": 0.0006, "prices_as_of": "2026-11-26", "by_model": {...}},
     "timings": {"wall_seconds": 1.2, "requests_per_second": 41.6},
     "rate_limited_429": 0, "retries": 0}

Example:
    >>> from apiexec.batch.summary import BatchSummary
    >>> build_report(BatchSummary(lines=2, submitted=2, succeeded=2))["counts"]["succeeded"]
    2
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Final

from apiexec.batch.summary import BatchSummary

#: Names the layout of the report; bumped when a field changes meaning.
REPORT_FORMAT: Final = "apiexec-run-report/1"

_COUNTS: Final = ("lines", "submitted", "succeeded", "failed", "invalid", "skipped", "changed", "not_sent",
                  "abandoned", "unwritten")


def build_report(summary: BatchSummary) -> dict[str, Any]:
    """The report of a finished (or stopped) run, as a JSON-ready dict."""
    status = "interrupted" if summary.interrupted else "stopped" if summary.stopped else "done"
    sent = summary.succeeded + summary.failed
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "status": status,
        "exit_code": summary.exit_code,
        "stopped": summary.stopped,
        "counts": {name: getattr(summary, name) for name in _COUNTS},
        "tokens": {"total": summary.tokens},
        "timings": {
            "wall_seconds": round(summary.wall_seconds, 3),
            "requests_per_second": round(sent / summary.wall_seconds, 3) if summary.wall_seconds > 0 else 0.0,
        },
        "rate_limited_429": summary.rate_limited,
        "retries": summary.retries,
        "failures": list(summary.failures),
    }
    meter = getattr(summary, "cost", None)
    if meter is not None:
        models = meter.snapshot()
        report["tokens"].update(
            input=sum(m.input_tokens for m in models.values()),
            output=sum(m.output_tokens for m in models.values()),
            cached=sum(m.cached_tokens for m in models.values()),
        )
        report["cost"] = {
            "total_usd": round(meter.total, 9),
            "earlier_runs_usd": round(meter.earlier, 9),
            "max_cost_usd": meter.max_cost,
            "prices_as_of": meter.prices.as_of,
            "unpriced_models": meter.unpriced,
            "by_model": {
                name: {
                    "calls": m.calls,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cached_tokens": m.cached_tokens,
                    "cost_usd": None if m.cost is None else round(m.cost, 9),
                }
                for name, m in models.items()
            },
        }
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (never a half-written file).

    Raises:
        OSError: The directory is missing or not writable.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = ["REPORT_FORMAT", "build_report", "write_report"]
