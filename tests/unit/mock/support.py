"""Helpers of the mock server's socket tests (fixtures are in conftest.py)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from apiexec.mock.server import MockServer

CHAT = "/v1/chat/completions"
TIMEOUT = 10.0
_DURATION_TERM = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def chat_body(text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": text}], **extra}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration such as '1m30.5s' or '12ms'."""
    assert re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+", text), text
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION_TERM.findall(text))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        threading.Event().wait(0.005)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def post(server: MockServer, path: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=TIMEOUT, **kwargs)


def sse_events(response: requests.Response) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    for raw in response.iter_lines():
        line = raw.decode("utf-8")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, line[len("data: "):]))
            name = None
    return events


