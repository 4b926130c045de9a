"""A Flask service that calls an LLM API through one executor per process.

The executor, the endpoint (one pooled HTTP session) and the metrics live at
module level: every request thread of the process shares them, so the rate
limits hold for the whole process. Settings come from the environment:

=====================  ==================================================  =========================
``LLM_BASE_URL``       the API, up to its version prefix                   ``http://127.0.0.1:8000/v1``
``LLM_API_KEY``        the key (never logged, never in an error)           unset: no auth header
``LLM_MODEL``          model sent with every request                       ``gpt-4o-mini``
``LLM_RPM``/``LLM_TPM``  requests / tokens per minute of the account       500 / 200000
``LLM_CONCURRENCY``    calls in flight at once                             16
``LLM_QUEUE``          calls waiting at most; beyond, 503 at once          64
``LLM_DEADLINE``       seconds a call may take, queueing and retries in    30
=====================  ==================================================  =========================

Run it against the built-in mock server::

    apiexec mock-server --port 8000 &
    flask --app examples.flask_app.app run
    curl -s localhost:5000/chat -H 'content-type: application/json' -d '{"prompt": "Hi"}'

Under gunicorn, one executor per worker process (``--preload`` is fine: the
executor restarts its threads in each forked worker)::

    gunicorn -w 4 --threads 8 --preload 'examples.flask_app.app:app'

With several workers the limits above are per process; share one quota with
``RateLimitedExecutor(storage="sqlite:///...", key=...)`` (see docs/services.md).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import logging
import os
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor
from apiexec.errors import (
    APIConnectionError,
    APIStatusError,
    CapacityError,
    DeadlineExceeded,
    ExecutorNotRunning,
    RateLimitError,
)
from apiexec.execution.prometheus import register_metrics

logger = logging.getLogger(__name__)

BASE_URL = os.environ.get("LLM_BASE_URL", "http://127.0.0.1:8000/v1")
MODEL = os.environ.get("LLM_MODEL", "gpt-4o-mini")
DEADLINE = float(os.environ.get("LLM_DEADLINE", "30"))
QUEUE = int(os.environ.get("LLM_QUEUE", "64"))
MAX_TOKENS = 4096
MAX_PROMPTS = 20
#: Extra seconds a view waits beyond the call deadline (the deadline ends the call).
GRACE = 5.0

ENDPOINT = Endpoint(
    EndpointConfig(
        provider="openai",
        base_url=BASE_URL,
        endpoint="chat/completions",
        api_key_env="LLM_API_KEY" if os.environ.get("LLM_API_KEY") else None,
        auth_type="bearer" if os.environ.get("LLM_API_KEY") else "none",
        max_retries=2,
    )
)
EXECUTOR = RateLimitedExecutor(
    limit_requests=float(os.environ.get("LLM_RPM", "500")),
    limit_tokens=float(os.environ.get("LLM_TPM", "200000")),
    interval=60.0,
    concurrency_limit=int(os.environ.get("LLM_CONCURRENCY", "16")),
    queue_capacity=QUEUE,
)
EXECUTOR.start()
METRICS = CollectorRegistry()  # production: the global REGISTRY (leave registry=None)
register_metrics(EXECUTOR, name="llm", registry=METRICS)


@atexit.register
def shutdown() -> None:
    """Finish the calls in flight, cancel the waiting ones, close the pool. Safe twice."""
    EXECUTOR.shutdown(wait=True, cancel_futures=True)
    ENDPOINT.close()


app = Flask(__name__)


class BadInput(ValueError):
    """The client's JSON is wrong; the message names the field."""


def _chat_call(prompt: Any, max_tokens: Any) -> APICalling:
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput("prompt: must be a non-empty string")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise BadInput(f"max_tokens: must be an int from 1 to {MAX_TOKENS}")
    body = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}
    call = APICalling(ENDPOINT, body, requires_tokens=True)
    call.timeout = DEADLINE  # queueing, rate-limit waits, retries and the body
    return call


def _answer(call: APICalling, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "answer": result["choices"][0]["message"]["content"],
        "usage": result.get("usage"),
        "request_id": call.request_id,
    }


def _failure(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) telling the client what went wrong, in one line."""
    headers: dict[str, str] = {}
    if isinstance(exc, DeadlineExceeded):
        return 504, {"error": {"type": "deadline", "message": str(exc)}}, headers
    if isinstance(exc, ExecutorNotRunning):
        return 503, {"error": {"type": "shutting_down", "message": "the service is shutting down"}}, {"Retry-After": "1"}
    if isinstance(exc, CapacityError):
        return 413, {"error": {"type": "too_large", "message": str(exc)}}, headers
    if isinstance(exc, RateLimitError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after or 1)))
        return 503, {"error": {"type": "upstream_busy", "message": "the API is rate limiting us"}}, headers
    if isinstance(exc, APIStatusError):
        body = {"type": "upstream_error", "message": str(exc), "upstream_status": exc.status_code}
        return 502, {"error": body}, headers
    if isinstance(exc, APIConnectionError):
        return 502, {"error": {"type": "upstream_unreachable", "message": str(exc)}}, headers
    if isinstance(exc, cf.CancelledError):
        return 503, {"error": {"type": "cancelled", "message": "the call was cancelled (shutdown)"}}, headers
    logger.error("chat call failed", exc_info=exc)
    return 500, {"error": {"type": "internal", "message": "internal error"}}, headers


def _reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _busy() -> bool:
    """Shed load instead of blocking a request thread on a full queue."""
    queue = EXECUTOR.task_queue
    return queue is not None and queue.qsize() >= QUEUE


@app.post("/chat")
def chat() -> Response:
    """One prompt, one answer: {"prompt": str, "max_tokens": int = 256}."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return _reply(400, {"error": {"type": "bad_input", "message": "body: must be a JSON object"}})
    try:
        call = _chat_call(data.get("prompt"), data.get("max_tokens", 256))
    except BadInput as exc:
        return _reply(400, {"error": {"type": "bad_input", "message": str(exc)}})
    if _busy():
        return _reply(503, {"error": {"type": "busy", "message": "too many calls waiting"}}, {"Retry-After": "1"})
    try:
        future = EXECUTOR.submit(call)
        result = future.result(timeout=DEADLINE + GRACE)
    except cf.TimeoutError:  # only if the deadline itself failed: never hang a thread
        future.cancel()
        return _reply(504, {"error": {"type": "deadline", "message": f"no answer within {DEADLINE:g}s"}})
    except Exception as exc:  # every failure of the call becomes an answer (CancelledError included)
        return _reply(*_failure(exc))
    return _reply(200, _answer(call, result))


@app.post("/chats")
def chats() -> Response:
    """Several prompts at once: every outcome in order, one failure cancels nothing."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        data = {}
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
        return _reply(400, {"error": {"type": "bad_input", "message": f"prompts: must be a list of 1 to {MAX_PROMPTS}"}})
    try:
        calls = [_chat_call(prompt, data.get("max_tokens", 256)) for prompt in prompts]
    except BadInput as exc:
        return _reply(400, {"error": {"type": "bad_input", "message": str(exc)}})
    try:
        outcomes = list(EXECUTOR.map(calls, timeout=DEADLINE + GRACE, return_exceptions=True))
    except ExecutorNotRunning as exc:
        return _reply(*_failure(exc))
    results = []
    for call, outcome in zip(calls, outcomes):
        if isinstance(outcome, BaseException):
            status, body, _ = _failure(outcome)
            results.append({"status": status, **body})
        else:
            results.append({"status": 200, **_answer(call, outcome)})
    return _reply(200, {"results": results})


@app.get("/metrics")
def metrics() -> Response:
    """Prometheus exposition of the executor's figures."""
    return Response(generate_latest(METRICS), mimetype=CONTENT_TYPE_LATEST)


@app.get("/healthz")
def healthz() -> Response:
    """The executor's state and figures; 503 once it no longer takes calls."""
    state = EXECUTOR.state.value
    return _reply(200 if state == "running" else 503, {"state": state, "metrics": EXECUTOR.metrics.snapshot()})
