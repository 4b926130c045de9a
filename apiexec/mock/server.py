"""A local mock of the OpenAI and Anthropic HTTP APIs, with limits and faults.

The mock server lets ``apiexec run ... --mock`` and ``apiexec mock-server`` run a
batch end to end with no API key and no network, and it is the fault-injection
server of the test suite: real HTTP/1.1 over loopback sockets, keep-alive,
latency, a server-side rate limiter and scripted or random failures. Its
answers are shaped as the providers document them (the test suite validates
them with the official SDKs' types); ``docs/mock-server.md`` is the full guide.

The package, by concept (like urllib3's ``dummyserver``):

====================  ========================================================
``config``            :class:`MockServerConfig`, defaults
``stats``             :class:`MockServerStats`, what the server saw
``oracle``            its own request/token buckets (independent of apiexec.limits)
``faults``            scripted, per-request and random faults
``answers``           what each model endpoint answers (chat, completions,
                      embeddings, responses, anthropic; JSON-schema examples)
``files``             the OpenAI Files API
``batches``           the OpenAI Batch API
``message_batches``   Anthropic Message Batches
``wire``              JSON/SSE framing, error bodies, rate-limit headers
``api``               one request to one reply: route, auth, fault, answer, limiter
``handler``           HTTP/1.1 connections and the socket server
``server``            lifecycle: :class:`MockServer`, :func:`serve_forever`
====================  ========================================================

Model endpoints (faults and rate limits apply; ``stream: true`` gives SSE):

=======  ===============================  ====================================
POST     ``/v1/chat/completions``         OpenAI chat completion or chunks
POST     ``/v1/completions``              OpenAI legacy text completion
POST     ``/v1/embeddings``               OpenAI embeddings (float or base64)
POST     ``/v1/responses``                OpenAI Responses API or its events
POST     ``/v1/messages``                 Anthropic message or its events
=======  ===============================  ====================================

Other endpoints (API key checked; no faults, no rate limit): ``GET /v1/models``
and ``/v1/models/{id}`` (OpenAI-shaped, or Anthropic-shaped when the request
carries ``anthropic-version``), ``POST /v1/messages/count_tokens``, the Files API
(``/v1/files``), the Batch API (``/v1/batches``), Message Batches
(``/v1/messages/batches``) and ``GET /health`` (no key needed).

Fault syntax (``script()``, ``MockServerConfig.faults`` and the ``x-mock-fault``
header): ``"500"``, ``"503"`` or any status from 400 to 599; ``"429"``
(``retry-after-ms: 1000``); ``"429:1500"``; ``"drop"`` (close the socket without
an answer); ``"slow:MS"`` (MS more milliseconds, then a normal answer); ``"cut:N"``
(a 200 cut off after N stream events, or half its body, then the socket closes).

Headers on every answer: ``x-request-id``; when limits are configured,
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset in Go duration
format: ``"12ms"``, ``"1.5s"``, ``"6m0s"``); in the Anthropic dialect also
``request-id`` and ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``
(reset as an RFC 3339 UTC time). A ``429`` carries ``retry-after-ms`` and
``retry-after`` (whole seconds, rounded up, at least 1). Error bodies are
OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``) or
Anthropic-shaped (``{"type": "error", "error": {"type", "message"}, "request_id"}``).

Example::

    import requests
    from apiexec.mock.server import MockServer, MockServerConfig

    config = MockServerConfig(requests_per_minute=600, request_burst=2)
    with MockServer(config) as server:
        server.script(["503", "drop"])
        url = f"{server.url}/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert requests.post(url, json=body).status_code == 503
        print(server.stats.by_status)
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

from apiexec.mock.api import MockAPI
from apiexec.mock.config import DEFAULT_HOST, MockServerConfig
from apiexec.mock.handler import HTTPServer
from apiexec.mock.stats import MockServerStats, StatsRecorder

__all__ = ["MockServer", "MockServerConfig", "MockServerStats", "serve_forever"]

logger = logging.getLogger(__name__)

_POLL_INTERVAL_S: Final = 0.05  # bounds how long stop() waits for the accept loop

class _State(enum.Enum):
    UNSTARTED = "unstarted"
    RUNNING = "running"
    CLOSED = "closed"


class MockServer:
    """The mock API server, run in a background thread.

    Args:
        config: Behaviour; defaults to ``MockServerConfig()``.
        clock: Monotonic clock of the rate limiter (tests may pass a fake one).

    Raises:
        RuntimeError: From ``start()`` when already started or stopped, and from
            ``port``/``url`` before ``start()``.
        OSError: From ``start()`` when the address cannot be bound.

    Example::

        with MockServer(MockServerConfig(latency_ms=20)) as server:
            requests.get(f"{server.url}/health").json()  # {"status": "ok"}
    """

    def __init__(self, config: MockServerConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config if config is not None else MockServerConfig()
        self._stats = StatsRecorder(self.config.record_bodies)
        self._api = MockAPI(self.config, clock=clock)
        self._faults = self._api.faults
        self._lock = threading.Lock()
        self._state = _State.UNSTARTED
        self._stopping = threading.Event()  # wakes requests sleeping in latency
        self._closed = threading.Event()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        where = f"{self.config.host}:{self._port}" if self._port is not None else self.config.host
        return f"MockServer({where}, state={self._state.value})"

    def __enter__(self) -> MockServer:
        return self if self._state is _State.RUNNING else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (known once started)."""
        if self._port is None:
            raise RuntimeError("mock server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``"http://127.0.0.1:54321"`` (append ``/v1/...``)."""
        host = self.config.host
        if host in ("0.0.0.0", ""):
            host = DEFAULT_HOST
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def stats(self) -> MockServerStats:
        """A consistent snapshot of the counters."""
        return self._stats.snapshot()

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet applied."""
        return self._faults.pending()

    def reset_stats(self) -> None:
        """Zero the counters (``in_flight`` keeps counting live requests)."""
        self._stats.reset()

    def script(self, faults: Iterable[str]) -> None:
        """Queue faults for the next model requests, one per request, in order.

        Args:
            faults: Fault specs such as ``"500"``, ``"429:1500"``, ``"drop"``, ``"slow:200"``.

        Raises:
            ValueError: A spec is invalid; then none of them is queued.
        """
        self._faults.script(faults)

    def start(self) -> MockServer:
        """Bind, listen and serve in a daemon thread; returns self."""
        with self._lock:
            if self._state is not _State.UNSTARTED:
                raise RuntimeError(f"mock server cannot start: it is {self._state.value}")
            httpd = HTTPServer(
                (self.config.host, self.config.port), api=self._api, stats=self._stats, stopping=self._stopping
            )
            self._port = int(httpd.server_address[1])
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"apiexec-mock-server-{self._port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread, self._state = httpd, thread, _State.RUNNING
        logger.info("mock server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections, join.

        Requests sleeping in latency are cut short and dropped. Safe to call
        twice and from several threads; every call returns once stopped.
        """
        with self._lock:
            state, self._state = self._state, _State.CLOSED
            httpd, self._httpd = self._httpd, None
            thread, self._thread = self._thread, None
        if state is _State.CLOSED:
            self._closed.wait()
            return
        try:
            if httpd is not None and thread is not None:
                self._shutdown(httpd, thread)
        finally:
            self._closed.set()

    def _shutdown(self, httpd: HTTPServer, thread: threading.Thread) -> None:
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        thread.join()
        logger.info("mock server on port %s stopped", self._port)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server is stopped; returns False on timeout."""
        return self._closed.wait(timeout)


def serve_forever(config: MockServerConfig, *, ready: Callable[[MockServer], None] | None = None) -> None:
    """Run a mock server until Ctrl-C (or until someone calls its ``stop()``).

    Args:
        config: Behaviour of the server.
        ready: Called with the running server, e.g. to print its URL.

    Raises:
        OSError: The address cannot be bound.
    """
    server = MockServer(config).start()
    try:
        if ready is not None:
            ready(server)
        server.wait()
    except KeyboardInterrupt:
        logger.info("mock server interrupted")
    finally:
        server.stop()
