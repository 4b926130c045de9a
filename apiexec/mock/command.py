"""The ``apiexec mock-server`` command: a flag for every :class:`MockServerConfig` field.

Kept apart from :mod:`apiexec.mock.server` so that building the CLI's parser
imports nothing heavy: the server is imported only when the command runs.
API keys may come from ``--api-key`` (repeatable) or, to keep them out of the
process list, from the ``APIEXEC_MOCK_API_KEY`` environment variable.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--port", "9000", "--fault", "500,drop", "--fault", "429:1500"])
    >>> args.port, config_from_args(args, environ={}).faults
    (9000, ('500', 'drop', '429:1500'))
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apiexec.mock.config import MockServerConfig

API_KEY_ENV = "APIEXEC_MOCK_API_KEY"


def _number(kind: Callable[[str], float], *, low: float = 0.0, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` within ``low..high``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (high is not None and value > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mock server's flags to ``parser``."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    add("--port", type=int, default=8000, help="TCP port; 0 picks a free one (default 8000)")
    add("--latency-ms", type=_number(float), default=0.0, help="delay before every answer")
    add("--latency-jitter-ms", type=_number(float), default=0.0, help="uniform +/- jitter around --latency-ms")
    add("--requests-per-minute", type=_number(float, low=1e-9), help="request bucket refill rate (default: no limit)")
    add("--request-burst", type=_number(float, low=1), help="request bucket capacity (default: a minute's worth)")
    add("--tokens-per-minute", type=_number(float, low=1e-9), help="token bucket refill rate (default: no limit)")
    add("--token-burst", type=_number(float, low=1), help="token bucket capacity (default: a minute's worth)")
    add("--limits-per-key", action="store_true", help="each API key gets its own request and token buckets")
    add("--fail-rate", type=_number(float, high=1), default=0.0, help="probability of a random 500 or 503")
    add("--drop-rate", type=_number(float, high=1), default=0.0, help="probability of closing the socket unanswered")
    add("--fault", action="append", default=[], metavar="SPEC[,SPEC...]",
        help="scripted faults for the first model requests, in order: 500, 429, 429:MS, drop, slow:MS, cut:N (repeatable)")
    add("--seed", type=int, help="seed of random faults and jitter, for reproducible runs")
    add("--api-key", action="append", default=[], metavar="KEY",
        help=f"require this API key on /v1 requests (repeatable; or set {API_KEY_ENV})")
    add("--batch-time-scale", type=_number(float), default=0.0, metavar="SECONDS",
        help="seconds per step of a batch's life (validate, each request, finalize); 0 ends batches at once")
    add("--record-bodies", action="store_true", help="keep every request body in the server's stats")
    add("-v", "--verbose", action="count", default=0)


def config_from_args(args: argparse.Namespace, *, environ: Mapping[str, str] | None = None) -> MockServerConfig:
    """The :class:`MockServerConfig` the flags describe.

    Raises:
        ConfigError: A value is invalid (the message names the field).
    """
    from apiexec.mock.config import MockServerConfig

    env = os.environ if environ is None else environ
    keys = list(args.api_key) or ([env[API_KEY_ENV]] if env.get(API_KEY_ENV) else [])
    faults = tuple(spec.strip() for group in args.fault for spec in group.split(",") if spec.strip())
    return MockServerConfig(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        requests_per_minute=args.requests_per_minute,
        request_burst=args.request_burst,
        tokens_per_minute=args.tokens_per_minute,
        token_burst=args.token_burst,
        limits_per_key=args.limits_per_key,
        fail_rate=args.fail_rate,
        drop_rate=args.drop_rate,
        faults=faults,
        seed=args.seed,
        api_key=keys[0] if keys else None,
        api_keys=tuple(keys[1:]),
        batch_time_scale=args.batch_time_scale,
        record_bodies=args.record_bodies,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C, SIGTERM or SIGHUP; returns the exit status (0, or 1 for a bad setting or port)."""
    from apiexec.errors import ConfigError
    from apiexec.mock.server import MockServer, serve_forever

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"apiexec: error: {exc}", file=sys.stderr)
        return 1
    def ready(server: MockServer) -> None:
        # SIGTERM (docker stop, systemd) and SIGHUP stop the server as Ctrl-C does: exit 0.
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name) and threading.current_thread() is threading.main_thread():
                signal.signal(getattr(signal, name), lambda signum, frame: server.stop())
        print(f"mock server listening on {server.url}/v1", flush=True)

    try:
        serve_forever(config, ready=ready)
    except OSError as exc:
        print(f"apiexec: error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0
