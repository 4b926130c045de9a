"""Loopback servers that limit like real ones (support for test_fit_* and bench; no tests here).

* :class:`CappedServer` takes ``capacity`` requests in flight and answers 503
  beyond (a vLLM/TGI behind a queue-less proxy), recording in-flight over time.
* :class:`PerModelServer` limits one model to ``rate`` requests per second
  (429 with OpenAI's rate-limit headers beyond) and leaves the others alone.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fit",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class _Base:
    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, headers, payload = owner.answer(body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class CappedServer(_Base):
    """Accepts ``capacity`` requests in flight (each takes ``latency`` s); 503 beyond."""

    def __init__(self, capacity: int = 8, latency: float = 0.1) -> None:
        super().__init__()
        self.capacity = capacity
        self.latency = latency
        self.in_flight = 0
        self.accepted = 0
        self.rejected = 0
        self.first: float | None = None
        self.last: float | None = None
        self.timeline: list[tuple[float, int, bool]] = []  # (time, in flight after, rejected)

    def answer(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            now = time.monotonic()
            self.first = self.first if self.first is not None else now
            if self.in_flight >= self.capacity:
                self.rejected += 1
                self.timeline.append((now, self.in_flight, True))
                return 503, {}, b'{"error": {"message": "overloaded", "type": "server_error"}}'
            self.in_flight += 1
            self.timeline.append((now, self.in_flight, False))
        time.sleep(self.latency)
        with self.lock:
            self.in_flight -= 1
            self.accepted += 1
            self.last = time.monotonic()
        return 200, {}, completion(body.get("model", "m"))

    @property
    def span(self) -> float:
        return (self.last or 0.0) - (self.first or 0.0)


class PerModelServer(_Base):
    """``slow_model`` takes ``rate`` requests per second (bucket of ``burst``); 429 beyond."""

    def __init__(self, slow_model: str = "slow", rate: float = 2.0, burst: float = 2.0, latency: float = 0.02) -> None:
        super().__init__()
        self.slow_model = slow_model
        self.rate = rate
        self.burst = burst
        self.latency = latency
        self.level = burst
        self.stamp = time.monotonic()
        self.first: float | None = None
        self.done: dict[str, list[float]] = {}  # model -> times of successful answers
        self.rejected: dict[str, int] = {}

    def _headers(self) -> dict[str, str]:
        missing = max(0.0, self.burst - self.level)
        return {
            "x-ratelimit-limit-requests": str(int(self.rate * 60)),
            "x-ratelimit-remaining-requests": str(int(math.floor(self.level))),
            "x-ratelimit-reset-requests": f"{missing / self.rate:.3f}s",
        }

    def answer(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        model = str(body.get("model"))
        headers: dict[str, str] = {}
        with self.lock:
            now = time.monotonic()
            self.first = self.first if self.first is not None else now
            if model == self.slow_model:
                self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level < 1:
                    self.rejected[model] = self.rejected.get(model, 0) + 1
                    headers = self._headers()
                    headers["retry-after-ms"] = str(int((1 - self.level) / self.rate * 1000) + 1)
                    return 429, headers, b'{"error": {"message": "rate limit", "type": "requests", "code": "rate_limit_exceeded"}}'
                self.level -= 1
                headers = self._headers()
        time.sleep(self.latency)
        with self.lock:
            self.done.setdefault(model, []).append(time.monotonic() - (self.first or 0.0))
        return 200, headers, completion(model)
