"""A real nginx on loopback for the benchmarks: started and stopped like a fixture.

nginx answers ``POST /v1/chat/completions`` with a small, fixed,
chat-completion-shaped JSON body (with ``usage``) in microseconds, so a
benchmark against it measures the *client*, not the server. With ``rate=``
the same path goes through ``limit_req`` (ngx_http_limit_req_module) and a
refused request gets ``429``, as an API provider answers a rate-limited call.

Everything lives in a temporary directory: config, pid file, error log and
access log (one line per request: ``$msec $status``), so the server's own
count of 429s and its achieved rate can be read after a run. The server
stops when the ``with`` block ends, when the benchmark process exits, and
(Linux) when the benchmark process dies: nginx is started with a parent-death
signal, so no run leaves a server behind.

Example:
    >>> with Nginx(rate=200, burst=20) as server:          # doctest: +SKIP
    ...     requests.post(server.chat_url, json={}).status_code
    200
    >>> server.statuses().count(429)                        # doctest: +SKIP
    0

Usage from the shell (starts one, prints its URL, serves until Ctrl-C)::

    python bench/nginx.py --rate 200 --burst 20
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

#: The body every chat call gets: the shape of an OpenAI chat completion.
CHAT_BODY: Final = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}'
)

#: What a refused call gets (OpenAI's error shape), with the status nginx sets.
LIMITED_BODY: Final = (
    '{"error":{"message":"Rate limit reached (bench nginx limit_req)","type":"requests",'
    '"param":null,"code":"rate_limit_exceeded"}}'
)

START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 10.0

# ``return`` runs in nginx's rewrite phase, *before* limit_req (preaccess):
# a limited location therefore reaches its answer through try_files (precontent
# phase, after limit_req) and a named location that returns the body.
_CONFIG: Final = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$msec $status';
    access_log {dir}/access.log bench{log_buffer};
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/json;
    root {dir}/www;
    {limit_zone}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            {limit}
            try_files /__never__ @chat;
        }}
        location @chat {{ return 200 '{chat}'; }}
        location @limited {{ return 429 '{limited}'; }}
        location = /health {{ return 200 'ok'; }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now.

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_nginx() -> str | None:
    """Path of the nginx executable, or None when it is not installed."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin")


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when we die (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


class Nginx:
    """One nginx master + one worker on a free loopback port.

    Args:
        rate: Requests per second ``limit_req`` lets through on the chat path;
            None for no limit.
        burst: ``limit_req ... burst=N nodelay`` (the requests above the rate
            nginx still answers at once); 0 for none. Only with ``rate``.
        buffered_log: Buffer the access log (cheaper for throughput runs;
            the log is complete once the server has stopped).

    Raises:
        FileNotFoundError: nginx is not installed.
        RuntimeError: nginx did not start (its error output is in the message).
    """

    def __init__(self, rate: float | None = None, burst: int = 0, *, buffered_log: bool = False) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst < 0:
            raise ValueError(f"burst must be >= 0, got {burst!r}")
        executable = find_nginx()
        if executable is None:
            raise FileNotFoundError("nginx is not installed (apt-get install nginx-light)")
        self.executable = executable
        self.rate = rate
        self.burst = burst
        self.buffered_log = buffered_log
        self.port = 0
        self.url = ""
        self.dir: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def chat_url(self) -> str:
        """The full URL of the chat path."""
        return f"{self.url}/v1/chat/completions"

    def _config(self) -> str:
        assert self.dir is not None
        limit_zone = limit = ""
        if self.rate is not None:
            # nginx takes r/s or r/m, whole numbers only.
            rate = f"{round(self.rate)}r/s" if self.rate >= 1 else f"{round(self.rate * 60)}r/m"
            limit_zone = f"limit_req_zone $server_port zone=bench:1m rate={rate}; limit_req_status 429;"
            burst = f" burst={self.burst} nodelay" if self.burst else ""
            limit = f"limit_req zone=bench{burst}; error_page 429 = @limited;"
        return _CONFIG.format(
            dir=self.dir,
            port=self.port,
            log_buffer=" buffer=256k flush=1s" if self.buffered_log else "",
            limit_zone=limit_zone,
            limit=limit,
            chat=CHAT_BODY,
            limited=LIMITED_BODY,
        )

    def start(self) -> Nginx:
        """Writes the config, starts nginx and waits until it accepts connections."""
        self._tmp = tempfile.TemporaryDirectory(prefix="apiexec-bench-nginx-")
        self.dir = Path(self._tmp.name)
        # nginx's worker runs as an unprivileged user when we are root: it must
        # be able to look for (and not find) the try_files target.
        os.chmod(self.dir, 0o755)
        (self.dir / "www").mkdir(mode=0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "nginx.conf").write_text(self._config())
        self._proc = subprocess.Popen(
            [self.executable, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent(),  # only prctl: safe between fork and exec
        )  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # bounded: START_TIMEOUT
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    errors = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"nginx did not start: {errors[-1000:]}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        """Stops nginx (graceful: the access log is flushed) and removes its directory; safe twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, buffered logs are written
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if self.dir is not None and self._tmp is not None:
            self._log_copy = self._read_log()
            self._tmp.cleanup()
            self._tmp = None

    def _read_log(self) -> list[tuple[float, int]]:
        assert self.dir is not None
        path = self.dir / "access.log"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            msec, _, status = line.partition(" ")
            rows.append((float(msec), int(status)))
        return rows

    def log(self) -> list[tuple[float, int]]:
        """``(unix time, status)`` of every request the server answered, in order.

        While nginx runs, an unbuffered log is read as it stands; once it has
        stopped, the complete log kept at stop.
        """
        if self._tmp is None:
            return list(getattr(self, "_log_copy", []))
        return self._read_log()

    def statuses(self) -> list[int]:
        """The status of every request the server answered."""
        return [status for _, status in self.log()]

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the benchmark's nginx until Ctrl-C.")
    parser.add_argument("--rate", type=float, default=None, help="limit_req rate, requests/s (default: none)")
    parser.add_argument("--burst", type=int, default=0, help="limit_req burst (nodelay)")
    args = parser.parse_args()
    with Nginx(args.rate, args.burst) as server:
        print(f"nginx serving {server.chat_url} (Ctrl-C stops it)", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    print("stopped")


if __name__ == "__main__":
    main()
