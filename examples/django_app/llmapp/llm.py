"""The process-wide executor and endpoint: created once, shared by every view.

An executor per request would pay for thread start-up each time and, worse,
give each request its own limits: the account's limits hold only if every
call of the process goes through one executor (and, with several worker
processes, through one shared storage: ``LLM_STORAGE``).

:func:`start` runs from ``LLMAppConfig.ready()``. It starts no thread:
apiexec's workers start with the first call, so management commands
(``migrate``, ``check``) and gunicorn's master process (``--preload``) pay
nothing. In a process forked from a started executor (gunicorn ``--preload``)
the executor restarts by itself on its first call. :func:`shutdown` runs at
interpreter exit, which is how gunicorn's workers end on SIGTERM: calls in
flight finish, calls not started are cancelled, the connection pool closes.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from apiexec import Endpoint, EndpointConfig, RateLimitedExecutor

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_executor: RateLimitedExecutor | None = None
_endpoint: Endpoint | None = None
_settings: dict[str, Any] = {}


def start(settings: dict[str, Any]) -> None:
    """Create the endpoint and the executor (idempotent: ``ready()`` may run twice)."""
    global _executor, _endpoint, _settings
    with _lock:
        if _executor is not None:
            return
        _settings = dict(settings)
        _endpoint = Endpoint(
            EndpointConfig(
                provider="openai",
                base_url=settings["base_url"],
                endpoint="chat/completions",
                api_key_env=settings["api_key_env"],
                auth_type="bearer" if settings["api_key_env"] else "none",
                max_retries=2,
                pool_maxsize=settings["concurrency_limit"],
            )
        )
        _executor = RateLimitedExecutor(
            limit_requests=settings["limit_requests"],
            limit_tokens=settings["limit_tokens"],
            interval=settings["interval"],
            burst=settings["burst"],
            concurrency_limit=settings["concurrency_limit"],
            storage=settings["storage"],
            key=settings["key"],
        )
        _executor.start()
    atexit.register(shutdown)


def executor() -> RateLimitedExecutor:
    """The process's executor (``start()`` must have run: Django's ``ready()``)."""
    if _executor is None:
        raise RuntimeError("llmapp.llm.start() has not run: is llmapp in INSTALLED_APPS?")
    return _executor


def endpoint() -> Endpoint:
    """The process's endpoint: one pooled HTTP session."""
    if _endpoint is None:
        raise RuntimeError("llmapp.llm.start() has not run: is llmapp in INSTALLED_APPS?")
    return _endpoint


def setting(name: str) -> Any:
    """One of the APIEXEC settings ``start()`` was given."""
    return _settings[name]


def shutdown() -> None:
    """Finish the calls in flight, cancel the rest, close the pool. Safe twice."""
    global _executor, _endpoint
    with _lock:
        executor_, endpoint_ = _executor, _endpoint
        _executor, _endpoint = None, None
    if executor_ is not None:
        executor_.shutdown(wait=True)
    if endpoint_ is not None:
        endpoint_.close()
    logger.info("llm executor shut down")
