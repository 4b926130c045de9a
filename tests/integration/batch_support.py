"""Support for the batch CLI tests (no tests here): a loopback API server we control
fully, and helpers to run the real `apiexec` command in a subprocess.

The server answers like OpenAI's chat completions API by default; a test swaps in
its own `respond(path, body)` to refuse, fail or stall.
"""

import collections
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "apiexec-test-credential-7d21e0"


def chat_answer(body, path="/v1/chat/completions"):
    content = body.get("messages", [{}])[-1].get("content", "") if isinstance(body, dict) else ""
    if path.endswith("/messages"):
        return 200, {"id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model", "m"),
                     "content": [{"type": "text", "text": f"echo: {content}"}], "stop_reason": "end_turn",
                     "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 3}}
    return 200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body.get("model", "m"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {content}"},
                              "finish_reason": "stop", "logprobs": None}],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


class LoopbackAPI:
    """A threaded HTTP server on 127.0.0.1. `respond(path, body) -> (status, json)`.

    `hold` (a threading.Event) stalls every answer until set: calls stay in flight.
    """

    def __init__(self, respond=None, *, delay=0.0, hold=None, tls=None):
        self.tls = tls  # an ssl.SSLContext (server side): the API speaks HTTPS
        self.respond = respond or (lambda path, body: chat_answer(body, path))
        self.delay = delay
        self.hold = hold
        self.lock = threading.Lock()
        self.requests = []  # (path, body, headers)
        self.in_flight = 0
        self.arrived = threading.Condition(self.lock)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with api.lock:
                    api.requests.append((self.path, body, dict(self.headers)))
                    api.in_flight += 1
                    api.arrived.notify_all()
                try:
                    if api.hold is not None:
                        api.hold.wait(30)
                    if api.delay:
                        time.sleep(api.delay)
                    status, answer = api.respond(self.path, body)
                    data = json.dumps(answer).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("x-request-id", f"req_{len(api.requests)}")
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up on this call (abandoned, killed): not our failure
                    self.close_connection = True
                finally:
                    with api.lock:
                        api.in_flight -= 1

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def wait_for_requests(self, n, timeout=30):
        with self.lock:
            return self.arrived.wait_for(lambda: len(self.requests) >= n, timeout)

    def paths(self):
        with self.lock:
            return collections.Counter(path for path, _, _ in self.requests)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def openai_line(i, *, custom_id=None, url="/v1/chat/completions", method="POST", content=None):
    body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": content or f"question {i}"}]}
    return json.dumps({"custom_id": custom_id or f"q{i}", "method": method, "url": url, "body": body})


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def write_input(path, n):
    write_lines(path, [openai_line(i) for i in range(n)])


def command(*args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("OPENAI_API_KEY", None)
    return [sys.executable, "-m", "apiexec", *args], env


def run_cli(*args, env=None, input=None, timeout=60):
    cmd, full_env = command(*args)
    full_env.update(env or {})
    return subprocess.run(cmd, env=full_env, capture_output=True, timeout=timeout, input=input,
                          text=not isinstance(input, bytes))


def start_cli(*args, env=None):
    cmd, full_env = command(*args)
    full_env.update(env or {})
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
