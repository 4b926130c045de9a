"""Batch runs: every line of a JSONL file sent inside rate limits, resumably.

See :func:`run_batch` (the engine of ``apiexec run``) and ``docs/batch.md``.

Example:
    >>> from apiexec.batch import BatchOptions, run_batch
    >>> summary = run_batch(BatchOptions(input="in.jsonl", output="out.jsonl",
    ...                                  endpoint=config))          # doctest: +SKIP
"""

from apiexec.batch.journal import NotAJournal
from apiexec.batch.lock import OutputLocked
from apiexec.batch.runner import BatchInterrupted, BatchOptions, BatchSummary, run_batch

__all__ = ["BatchInterrupted", "BatchOptions", "BatchSummary", "NotAJournal", "OutputLocked", "run_batch"]
