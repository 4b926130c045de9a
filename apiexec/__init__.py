"""apiexec: many HTTP API calls from synchronous Python, inside rate limits.

Example:
    >>> from apiexec import APICalling, Endpoint, RateLimitedExecutor
    >>> endpoint = Endpoint.for_provider("openai", "chat")        # doctest: +SKIP
    >>> with endpoint, RateLimitedExecutor(limit_requests=500, limit_tokens=200_000,
    ...                                    concurrency_limit=16) as ex:   # doctest: +SKIP
    ...     calls = [APICalling(endpoint, body, requires_tokens=True) for body in bodies]
    ...     results = list(ex.map(calls))
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from apiexec.errors import (
    APIConnectionError,
    APIError,
    APIExecError,
    APIStatusError,
    APIStreamIncomplete,
    APITimeoutError,
    BudgetExceeded,
    CapacityError,
    ConfigError,
    DeadlineExceeded,
    EventFailed,
    ExecutorNotRunning,
    QueueStopped,
    RateLimitError,
    ServiceRefused,
    StorageError,
)
from apiexec.execution import Event, Execution, ExecutionStatus, Executor, Queue, QueueConfig
from apiexec.http import Endpoint, EndpointConfig, Secret
from apiexec.llm import APICalling
from apiexec.rate_limited import RateLimitedExecutor

if TYPE_CHECKING:
    from apiexec.batch import BatchOptions, BatchSummary, run_batch
    from apiexec.llm.prices import Prices
    from apiexec.spending import BudgetAdmission

#: Names loaded on first use: the batch runner pulls in the journal, SQLite
#: and progress bars, spending caps the price table and the SDK adapter,
#: which ``import apiexec`` should not pay for.
_LAZY = {
    "BatchOptions": "apiexec.batch",
    "BatchSummary": "apiexec.batch",
    "run_batch": "apiexec.batch",
    "BudgetAdmission": "apiexec.spending",
    "Prices": "apiexec.llm.prices",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "APICalling",
    "APIConnectionError",
    "APIError",
    "APIExecError",
    "APIStatusError",
    "APIStreamIncomplete",
    "APITimeoutError",
    "BatchOptions",
    "BatchSummary",
    "BudgetAdmission",
    "BudgetExceeded",
    "CapacityError",
    "ConfigError",
    "DeadlineExceeded",
    "Endpoint",
    "EndpointConfig",
    "Event",
    "EventFailed",
    "Execution",
    "ExecutionStatus",
    "Executor",
    "ExecutorNotRunning",
    "Prices",
    "Queue",
    "QueueConfig",
    "QueueStopped",
    "RateLimitError",
    "RateLimitedExecutor",
    "Secret",
    "ServiceRefused",
    "StorageError",
    "run_batch",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
