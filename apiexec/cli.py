"""The ``apiexec`` command line: ``run`` a batch, or start the ``mock-server``.

Exit status of ``apiexec run``: 0 every line succeeded, 2 some failed or were
invalid, 130 interrupted by Ctrl-C (run it again to resume), 1 a usage or
configuration error (a one-line message, no traceback).

Example::

    apiexec run examples/chat.jsonl -o results.jsonl --mock
    apiexec run requests.jsonl -o results.jsonl --provider openai \\
        --requests-per-minute 500 --tokens-per-minute 200000
    apiexec run part-1.jsonl -o out-1.jsonl --provider openai --requests-per-minute 500 \\
        --limit-storage redis://limits.internal:6379/0 --limit-key openai-prod
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

from apiexec.batch.runner import DEFAULT_BATCH_CONCURRENCY, BatchOptions, run_batch
from apiexec.errors import ConfigError, StorageError
from apiexec.http.config import EndpointConfig
from apiexec.http.presets import PRESETS, preset_config
from apiexec.limits.storage import DEFAULT_KEY, DEFAULT_STORAGE
from apiexec.mock import command as mock_command

EXIT_OK: Final = 0
EXIT_USAGE: Final = 1
EXIT_SOME_FAILED: Final = 2
EXIT_INTERRUPTED: Final = 130

#: The built-in mock server's pace for ``--mock`` runs.
MOCK_REQUESTS_PER_MINUTE: Final = 6000.0
MOCK_LATENCY_MS: Final = 30.0


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, which must be > 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``apiexec`` command."""
    parser = argparse.ArgumentParser(prog="apiexec", description="Run many API calls inside rate limits.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="send every line of a JSONL file, resumably")
    run.add_argument("input", type=Path, help="OpenAI Batch JSONL, or one request body per line")
    run.add_argument("-o", "--output", type=Path, required=True, help="results JSONL (appended to, resumed from)")
    run.add_argument("--provider", default="openai-compatible", choices=sorted(PRESETS))
    run.add_argument("--base-url", help="API root, e.g. http://localhost:8000/v1")
    run.add_argument("--endpoint", help="path for lines without a url (default: the provider's)")
    run.add_argument("--api-key-env", help="environment variable holding the API key")
    run.add_argument("--requests-per-minute", type=_positive(float))
    run.add_argument("--tokens-per-minute", type=_positive(float))
    run.add_argument("--concurrency", type=_positive(int), default=DEFAULT_BATCH_CONCURRENCY)
    run.add_argument(
        "--limit-storage",
        metavar="URL",
        default=DEFAULT_STORAGE,
        help="where the limits live, shared by every process naming it: memory:// (default), "
        "sqlite:///limits.db (one host) or redis://host:6379/0 (many hosts)",
    )
    run.add_argument(
        "--limit-key", metavar="NAME", default=DEFAULT_KEY, help="name of the shared quota in --limit-storage"
    )
    run.add_argument("--max-retries", type=int, default=3)
    run.add_argument("--timeout", type=_positive(float), help="seconds per attempt")
    run.add_argument("--mock", action="store_true", help="run against the built-in mock server (no key, no network)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("-v", "--verbose", action="count", default=0)

    mock = commands.add_parser("mock-server", help="serve the built-in OpenAI-shaped mock API")
    mock_command.add_arguments(mock)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``apiexec`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "mock-server":
            return mock_command.run(args)
        return _run(args)
    except (ConfigError, StorageError, OSError) as exc:
        print(f"apiexec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run(args: argparse.Namespace) -> int:
    if not args.input.is_file():
        raise ConfigError("input", f"no such file: {args.input}")
    if args.output.exists() and args.output.samefile(args.input):
        raise ConfigError("output", "must not be the input file")
    with _target(args) as (config, mock_rpm):
        options = BatchOptions(
            input=args.input,
            output=args.output,
            endpoint=config,
            requests_per_minute=args.requests_per_minute or mock_rpm,
            tokens_per_minute=args.tokens_per_minute,
            concurrency=args.concurrency,
            limit_storage=args.limit_storage,
            limit_key=args.limit_key,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        summary = run_batch(options)
    print(summary.render(), file=sys.stderr)
    for failure in summary.failures:
        print(f"apiexec: failed: {failure}", file=sys.stderr)
    if summary.interrupted:
        print("apiexec: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.all_succeeded else EXIT_SOME_FAILED


@contextlib.contextmanager
def _target(args: argparse.Namespace) -> Iterator[tuple[EndpointConfig, float | None]]:
    """The endpoint configuration, with a mock server running if asked."""
    overrides: dict[str, object] = {"max_retries": args.max_retries}
    if args.timeout:
        overrides["timeout"] = args.timeout
    if args.api_key_env:
        overrides["api_key_env"] = args.api_key_env
    if not args.mock:
        if args.base_url:
            overrides["base_url"] = args.base_url
        yield preset_config(args.provider, args.endpoint, **overrides), None
        return
    from apiexec.mock.server import MockServer, MockServerConfig

    mock_config = MockServerConfig(
        latency_ms=MOCK_LATENCY_MS, latency_jitter_ms=MOCK_LATENCY_MS / 2, requests_per_minute=MOCK_REQUESTS_PER_MINUTE
    )
    with MockServer(mock_config) as server:
        overrides.pop("api_key_env", None)
        config = preset_config("openai-compatible", args.endpoint, base_url=f"{server.url}/v1", **overrides)
        print(f"apiexec: using the built-in mock server at {server.url}/v1", file=sys.stderr)
        yield config, MOCK_REQUESTS_PER_MINUTE
