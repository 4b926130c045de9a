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

if TYPE_CHECKING:
    from apiexec.batch import BatchOptions, BatchSummary, run_batch
    from apiexec.execution import Event, Execution, ExecutionStatus, Executor, Queue, QueueConfig
    from apiexec.http import Endpoint, EndpointConfig, Secret
    from apiexec.llm import APICalling
    from apiexec.llm.prices import Prices
    from apiexec.rate_limited import RateLimitedExecutor
    from apiexec.spending import BudgetAdmission

#: Every public class is loaded on first use (PEP 562): ``import apiexec``
#: costs the errors module only, ``from apiexec import Endpoint`` loads the
#: HTTP layer and requests but not the executor, ``RateLimitedExecutor`` the
#: executor and limits but not requests, and the batch runner (journal,
#: SQLite, progress bars) or spending caps (price table, SDK adapter) only
#: when used. Each name resolves once; later lookups are plain attributes.
_LAZY = {
    "Event": "apiexec.execution",
    "Execution": "apiexec.execution",
    "ExecutionStatus": "apiexec.execution",
    "Executor": "apiexec.execution",
    "Queue": "apiexec.execution",
    "QueueConfig": "apiexec.execution",
    "Endpoint": "apiexec.http",
    "EndpointConfig": "apiexec.http",
    "Secret": "apiexec.http",
    "APICalling": "apiexec.llm",
    "RateLimitedExecutor": "apiexec.rate_limited",
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


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
