"""Views that call the LLM through the process-wide executor.

Every failure becomes an answer with a status that says whose fault it is
(400 the client's, 502 the API's, 503 busy or shutting down, 504 too slow);
a request thread never waits longer than the call's deadline.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from apiexec import APICalling
from apiexec.errors import (
    APIConnectionError,
    APIStatusError,
    CapacityError,
    DeadlineExceeded,
    ExecutorNotRunning,
    RateLimitError,
)
from llmapp import llm

logger = logging.getLogger(__name__)

MAX_TOKENS = 4096
MAX_PROMPTS = 20
GRACE = 5.0  # seconds a view waits beyond the call's deadline (the deadline itself ends the call)


class BadInput(ValueError):
    """The client's JSON is wrong; the message names the field."""


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"null")
    except ValueError:
        raise BadInput("body: must be JSON") from None
    if not isinstance(data, dict):
        raise BadInput("body: must be a JSON object")
    return data


def _chat_call(prompt: Any, max_tokens: Any) -> APICalling:
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput("prompt: must be a non-empty string")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise BadInput(f"max_tokens: must be an int from 1 to {MAX_TOKENS}")
    body = {"model": llm.setting("model"), "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}
    call = APICalling(llm.endpoint(), body, requires_tokens=True)
    call.timeout = llm.setting("deadline")  # queueing, rate-limit waits, retries and the answer
    return call


def _answer(call: APICalling, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "answer": result["choices"][0]["message"]["content"],
        "usage": result.get("usage"),
        "request_id": call.request_id,
        "pid": os.getpid(),
    }


def _failure(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, body) telling the client what went wrong, in one line."""
    if isinstance(exc, DeadlineExceeded):
        return 504, {"type": "deadline", "message": str(exc)}
    if isinstance(exc, ExecutorNotRunning | cf.CancelledError):
        return 503, {"type": "shutting_down", "message": "the service is shutting down"}
    if isinstance(exc, CapacityError):
        return 413, {"type": "too_large", "message": str(exc)}
    if isinstance(exc, RateLimitError):
        return 503, {"type": "upstream_busy", "message": "the API is rate limiting us"}
    if isinstance(exc, APIStatusError):
        return 502, {"type": "upstream_error", "message": str(exc), "upstream_status": exc.status_code}
    if isinstance(exc, APIConnectionError):
        return 502, {"type": "upstream_unreachable", "message": str(exc)}
    logger.error("chat call failed", exc_info=exc)
    return 500, {"type": "internal", "message": "internal error"}


def _error(status: int, body: dict[str, Any]) -> JsonResponse:
    response = JsonResponse({"error": body}, status=status)
    if status == 503:
        response["Retry-After"] = "1"
    return response


@csrf_exempt
@require_POST
def chat(request: HttpRequest) -> JsonResponse:
    """One prompt, one answer: ``{"prompt": str, "max_tokens": int = 256}``."""
    try:
        data = _json_body(request)
        call = _chat_call(data.get("prompt"), data.get("max_tokens", 256))
    except BadInput as exc:
        return _error(400, {"type": "bad_input", "message": str(exc)})
    try:
        result = llm.executor().submit(call).result(timeout=llm.setting("deadline") + GRACE)
    except cf.TimeoutError:  # only if the deadline itself failed: never hang a request thread
        return _error(504, {"type": "deadline", "message": "no answer in time"})
    except Exception as exc:  # every failure of the call becomes an answer (CancelledError included)
        return _error(*_failure(exc))
    return JsonResponse(_answer(call, result))


@csrf_exempt
@require_POST
def chats(request: HttpRequest) -> JsonResponse:
    """Several prompts at once; every outcome in order, one failure cancels nothing."""
    try:
        data = _json_body(request)
        prompts = data.get("prompts")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
            raise BadInput(f"prompts: must be a list of 1 to {MAX_PROMPTS} strings")
        calls = [_chat_call(prompt, data.get("max_tokens", 256)) for prompt in prompts]
    except BadInput as exc:
        return _error(400, {"type": "bad_input", "message": str(exc)})
    timeout = llm.setting("deadline") + GRACE
    try:
        outcomes = list(llm.executor().map(calls, timeout=timeout, return_exceptions=True))
    except ExecutorNotRunning as exc:
        return _error(*_failure(exc))
    results = []
    for call, outcome in zip(calls, outcomes):
        if isinstance(outcome, BaseException):
            status, body = _failure(outcome)
            results.append({"status": status, "error": body})
        else:
            results.append({"status": 200, **_answer(call, outcome)})
    return JsonResponse({"results": results})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The executor's state and figures; 503 once it no longer takes calls."""
    executor = llm.executor()
    state = executor.state.value
    return JsonResponse(
        {"state": state, "pid": os.getpid(), "metrics": executor.metrics.snapshot()},
        status=200 if state == "running" else 503,
    )
