"""apiexec: many HTTP API calls from synchronous Python, inside rate limits.

Example:
    >>> from apiexec import APICalling, Endpoint, RateLimitedExecutor
    >>> endpoint = Endpoint.for_provider("openai", "chat")        # doctest: +SKIP
    >>> with endpoint, RateLimitedExecutor(limit_requests=500, limit_tokens=200_000,
    ...                                    concurrency_limit=16) as ex:   # doctest: +SKIP
    ...     calls = [APICalling(endpoint, body, requires_tokens=True) for body in bodies]
    ...     results = list(ex.map(calls))
"""

import logging

from apiexec.batch import BatchOptions, BatchSummary, run_batch
from apiexec.errors import (
    APIConnectionError,
    APIError,
    APIExecError,
    APIStatusError,
    APITimeoutError,
    CapacityError,
    ConfigError,
    EventFailed,
    ExecutorNotRunning,
    QueueStopped,
    RateLimitError,
    StorageError,
)
from apiexec.execution.event import Event, Execution, ExecutionStatus
from apiexec.execution.executor import Executor
from apiexec.execution.work_queue import Queue, QueueConfig
from apiexec.http.config import EndpointConfig
from apiexec.http.credentials import Secret
from apiexec.http.endpoint import Endpoint
from apiexec.llm.api_calling import APICalling
from apiexec.rate_limited import RateLimitedExecutor

__version__ = "0.1.0"

__all__ = [
    "APICalling",
    "APIConnectionError",
    "APIError",
    "APIExecError",
    "APIStatusError",
    "APITimeoutError",
    "BatchOptions",
    "BatchSummary",
    "CapacityError",
    "ConfigError",
    "Endpoint",
    "EndpointConfig",
    "Event",
    "EventFailed",
    "Execution",
    "ExecutionStatus",
    "Executor",
    "ExecutorNotRunning",
    "Queue",
    "QueueConfig",
    "QueueStopped",
    "RateLimitError",
    "RateLimitedExecutor",
    "Secret",
    "StorageError",
    "run_batch",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
