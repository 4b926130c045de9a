"""The ``apiexec mock-server`` command: its flags and how it starts.

Kept apart from :mod:`apiexec.mock.server` so that building the CLI's parser
imports nothing heavy: the server is imported only when the command runs.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> parser.parse_args(["--port", "9000"]).port
    9000
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` that must be >= 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mock server's flags to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency-ms", type=_number(float), default=0.0)
    parser.add_argument("--requests-per-minute", type=_number(float))
    parser.add_argument("--tokens-per-minute", type=_number(float))
    parser.add_argument("--fail-rate", type=_number(float), default=0.0)
    parser.add_argument("-v", "--verbose", action="count", default=0)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit status (0)."""
    from apiexec.mock.server import MockServerConfig, serve_forever

    config = MockServerConfig(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        requests_per_minute=args.requests_per_minute or None,
        tokens_per_minute=args.tokens_per_minute or None,
        fail_rate=args.fail_rate,
    )
    serve_forever(config, ready=lambda server: print(f"mock server listening on {server.url}/v1", flush=True))
    return 0
