"""The public names of apiexec are pinned: adding or removing one is a decision."""

import logging

import apiexec

EXPECTED = [
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


def test_all_is_pinned_and_sorted():
    assert apiexec.__all__ == EXPECTED
    assert sorted(apiexec.__all__) == apiexec.__all__


def test_every_public_name_exists():
    for name in apiexec.__all__:
        assert getattr(apiexec, name) is not None


def test_every_error_derives_from_the_base():
    errors = [getattr(apiexec, n) for n in EXPECTED if n.endswith("Error") or n in ("EventFailed", "ExecutorNotRunning", "QueueStopped")]
    assert all(issubclass(e, apiexec.APIExecError) for e in errors)
    assert issubclass(apiexec.ConfigError, ValueError)
    assert issubclass(apiexec.RateLimitError, apiexec.APIStatusError)
    assert issubclass(apiexec.APITimeoutError, apiexec.APIConnectionError)


def test_library_logs_through_a_null_handler():
    handlers = logging.getLogger("apiexec").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
