"""The ``apiexec`` command line: ``run`` a batch, or start the ``mock-server``.

Exit status of ``apiexec run``:

* **0** every line succeeded;
* **1** a usage or configuration error (one line, no traceback, no usage dump);
* **2** some lines failed or were invalid (their rows say why);
* **3** stopped early by the circuit breaker (account refused, ``--max-cost``
  reached, storage or disk failing, host down): the unsent lines are left for
  the next run;
* **130** interrupted by Ctrl-C, SIGTERM or SIGHUP (run it again to resume).

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
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import apiexec.mock.command as mock_command
from apiexec.batch.breaker import DEFAULT_CONNECTION_FAILURES
from apiexec.batch.dry_run import dry_run
from apiexec.batch.progress import DEFAULT_PROGRESS_INTERVAL
from apiexec.batch.report import build_report, write_report
from apiexec.batch.runner import (
    DEFAULT_BATCH_CONCURRENCY,
    MAX_BATCH_CONCURRENCY,
    BatchInterrupted,
    BatchOptions,
    BatchSummary,
    run_batch,
)
from apiexec.errors import APIExecError, ConfigError
from apiexec.http.config import EndpointConfig
from apiexec.http.presets import PRESETS, preset_config
from apiexec.limits.keyed import KeyedLimits
from apiexec.limits.storage import DEFAULT_KEY, DEFAULT_STORAGE
from apiexec.llm.prices import PRICES_AS_OF, Prices

EXIT_OK: Final = 0
EXIT_USAGE: Final = 1
EXIT_SOME_FAILED: Final = 2
EXIT_STOPPED: Final = 3
EXIT_INTERRUPTED: Final = 130

#: The built-in mock server's pace for ``--mock`` runs.
MOCK_REQUESTS_PER_MINUTE: Final = 6000.0
MOCK_LATENCY_MS: Final = 30.0
#: Retries after the first attempt, by default.
DEFAULT_MAX_RETRIES: Final = 3
MAX_RETRIES_LIMIT: Final = 100

#: An HTTP header name (RFC 9110 token).
_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


_EXIT_STATUS: Final = """exit status:
  0    every line succeeded
  1    usage or configuration error
  2    some lines failed or were invalid (their rows say why)
  3    stopped early (account refused, --max-cost reached, storage or disk
       failing, host down); the unsent lines are left for the next run
  130  interrupted (Ctrl-C, SIGTERM, SIGHUP); run the same command to resume"""


class UsageError(Exception):
    """A command-line usage error (printed as one line, exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 1."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (``none`` when there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings or action.required:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._CountAction, argparse._HelpAction)):
            return text
        if isinstance(action, argparse._VersionAction):
            return text
        default = "none" if action.default in (None, []) else "%(default)s"
        return f"{text} (default: {default})".strip()


def _number(kind: Callable[[str], Any], *, low: float, high: float, strict_low: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` within [low, high] (or (low, high])."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (strict_low and value == low):
            raise argparse.ArgumentTypeError(f"must be > {low:g}, got {text}" if strict_low else f"must be >= {low:g}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    return parse


def _header(text: str) -> tuple[str, str]:
    """``NAME:VALUE`` -> (name, value); the value is never echoed (it may be a secret)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _HEADER_NAME.match(name):
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE with a valid header name, got name {name!r}")
    if any(c in value for c in "\r\n\x00"):
        raise argparse.ArgumentTypeError(f"the value of header {name!r} contains a line break")
    return name, value


def _version() -> str:
    from apiexec import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``apiexec`` command."""
    parser = _Parser(prog="apiexec", description="Run many API calls inside rate limits.", formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"apiexec {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run", help="send every line of a JSONL file, resumably", formatter_class=_Help,
        description="Send every line of a JSONL file inside rate limits; resumable.", epilog=_EXIT_STATUS,
    )
    run.add_argument("input", help="OpenAI Batch or Anthropic Message Batches JSONL, or one request body per line; "
                     "'-' reads stdin, *.gz is decompressed")
    run.add_argument("-o", "--output", type=Path, required=True, help="results JSONL (appended to, resumed from)")
    run.add_argument("--errors-output", type=Path, metavar="PATH", help="write failed lines here, as OpenAI's error file")
    run.add_argument("--provider", default="openai-compatible", choices=sorted(PRESETS),
                     help="preset: base URL, auth and key variable of a known provider")
    run.add_argument("--base-url", help="API root including its version, e.g. http://localhost:8000/v1 "
                     "(default: the provider's)")
    run.add_argument("--endpoint", help="path for lines without a url (default: the provider's)")
    run.add_argument("--api-key-env", help="environment variable holding the API key (default: the provider's)")
    run.add_argument("--header", action="append", type=_header, default=[], metavar="NAME:VALUE",
                     help="extra header on every request (repeatable)")
    run.add_argument("--requests-per-minute", type=_number(float, low=0.0, high=1e12, strict_low=True),
                     help="request limit (default: none, or the mock server's with --mock)")
    run.add_argument("--tokens-per-minute", type=_number(float, low=0.0, high=1e15, strict_low=True),
                     help="token limit; tokens are estimated per line when set")
    run.add_argument("--concurrency", type=_number(int, low=1, high=MAX_BATCH_CONCURRENCY),
                     default=DEFAULT_BATCH_CONCURRENCY,
                     help="most calls in flight at once; below it the number adapts to the server")
    run.add_argument("--no-adaptive", action="store_true",
                     help="keep exactly --concurrency calls in flight instead of adapting to the server")
    run.add_argument("--limits", type=Path, metavar="FILE",
                     help='limits per model, JSON or TOML: {"gpt-4o": {"requests_per_minute": 500, '
                     '"tokens_per_minute": 30000}, "*": {...}}; models not listed learn theirs from the server')
    run.add_argument("--limit-storage", metavar="URL", default=DEFAULT_STORAGE,
                     help="where the limits live, shared by every process naming it: memory:// , "
                     "sqlite:///limits.db (one host) or redis://host:6379/0 (many hosts)")
    run.add_argument("--limit-key", metavar="NAME", default=DEFAULT_KEY, help="name of the shared quota in --limit-storage")
    run.add_argument("--max-retries", type=_number(int, low=0, high=MAX_RETRIES_LIMIT), default=DEFAULT_MAX_RETRIES,
                     help="retries per call after the first attempt (429, 5xx, connection errors)")
    run.add_argument("--timeout", type=_number(float, low=0.0, high=86_400, strict_low=True),
                     help="seconds for a whole call: every attempt, backoff and the body (default: the endpoint's)")
    run.add_argument("--stop-after-connection-failures", type=_number(int, low=1, high=1_000_000),
                     default=DEFAULT_CONNECTION_FAILURES, metavar="N",
                     help="stop the run (exit 3) after N calls in a row found no host")
    run.add_argument("--force", action="store_true",
                     help="use an output file apiexec did not write (its rows are set aside, never deleted)")
    run.add_argument("--mock", action="store_true", help="run against the built-in mock server (no key, no network)")
    run.add_argument("--max-cost", type=_number(float, low=0.0, high=1e9, strict_low=True), metavar="USD",
                     help="spending cap in US dollars for this output, earlier runs included: no call starts that "
                     "could cross it; the run stops early (exit 3) and leaves the rest for the next run")
    run.add_argument("--prices", type=Path, metavar="FILE",
                     help='prices per model, JSON: {"model": {"input": USD_PER_1M, "output": USD_PER_1M, '
                     f'"cached_input": USD_PER_1M}}}} (default: the built-in list prices as of {PRICES_AS_OF})')
    run.add_argument("--report", type=Path, metavar="FILE.json",
                     help="write a machine-readable run report (counts, tokens, cost, timings, 429s, retries)")
    run.add_argument("--dry-run", action="store_true",
                     help="read and check every line; print the tokens, cost and duration a run would take; send nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    run.add_argument("--progress-interval", type=_number(float, low=0.0, high=86_400, strict_low=True),
                     default=DEFAULT_PROGRESS_INTERVAL, metavar="SECONDS",
                     help="without a terminal, print one progress line every SECONDS")
    run.add_argument("-q", "--quiet", action="store_true", help="print only errors (no progress, no summary)")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")

    mock = commands.add_parser("mock-server", help="serve the built-in OpenAI-shaped mock API", formatter_class=_Help)
    mock_command.add_arguments(mock)
    for action in mock._actions:  # argparse prints no line (so no default) for an option without help
        if action.help is None and action.option_strings:
            action.help = action.dest.replace("_", " ")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``apiexec`` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"apiexec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose)
    # Before a run takes over the signals (and after it), SIGTERM and SIGHUP stop
    # the command like Ctrl-C does, never with a traceback.
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if args.command == "mock-server":
            return mock_command.run(args)
        return _run(args)
    except (APIExecError, OSError) as exc:
        print(f"apiexec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("apiexec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run(args: argparse.Namespace) -> int:
    if args.input != "-" and not Path(args.input).exists():  # a pipe such as <(zcat x.gz) is fine
        raise ConfigError("input", f"no such file: {args.input}")
    if args.input != "-" and Path(args.input).is_dir():
        raise ConfigError("input", f"is a directory: {args.input}")
    if str(args.output) == "-":
        raise ConfigError("output", "must be a file (it is a journal that a later run resumes from), not '-'")
    for name in ("output", "errors_output"):
        target = getattr(args, name)
        if target is not None and not target.parent.is_dir():
            raise ConfigError(name, f"directory {target.parent} does not exist")
    prices = Prices.from_file(args.prices) if args.prices is not None else None
    if args.report is not None and not (args.report.parent or Path(".")).is_dir():
        raise ConfigError("report", f"directory {args.report.parent} does not exist")
    if args.dry_run:
        return _dry_run(args, prices or Prices.builtin())
    with _target(args) as (config, mock_rpm):
        options = BatchOptions(
            input=args.input,
            output=args.output,
            errors_output=args.errors_output,
            endpoint=config,
            requests_per_minute=args.requests_per_minute or mock_rpm,
            tokens_per_minute=args.tokens_per_minute,
            concurrency=args.concurrency,
            adaptive=not args.no_adaptive,
            limits=None if args.limits is None else KeyedLimits.load(args.limits),
            force=args.force,
            progress=not (args.no_progress or args.quiet),
            progress_interval=args.progress_interval,
            limit_storage=args.limit_storage,
            limit_key=args.limit_key,
            breaker_connection_failures=args.stop_after_connection_failures,
            stop_signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
            max_cost=args.max_cost,
            prices=prices,
        )
        try:
            summary = run_batch(options)
        except BatchInterrupted as exc:
            summary = exc.summary
        if args.report is not None:
            write_report(args.report, build_report(summary))
        # Inside the block: after abandoned calls, _report leaves at once, without
        # waiting for the --mock server to finish answering them.
        return _report(summary, quiet=args.quiet)


def _dry_run(args: argparse.Namespace, prices: Prices) -> int:
    """``--dry-run``: print the plan on standard output (and ``--report``); nothing is sent or written."""
    base_url = args.base_url or ("http://mock.invalid/v1" if args.mock else None)
    overrides: dict[str, object] = {"api_key": "dry-run"}  # no key is needed to send nothing
    if base_url:
        overrides["base_url"] = base_url
    config = preset_config("openai-compatible" if args.mock else args.provider, args.endpoint, **overrides)
    plan = dry_run(
        args.input, base_url=config.base_url, default_endpoint=config.endpoint, prices=prices, output=args.output,
        max_cost=args.max_cost, requests_per_minute=args.requests_per_minute or (MOCK_REQUESTS_PER_MINUTE if args.mock
                                                                                 else None),
        tokens_per_minute=args.tokens_per_minute,
        limits=None if args.limits is None else KeyedLimits.load(args.limits),
    )
    print(plan.render())  # the plan is the command's output
    if args.report is not None:
        write_report(args.report, {"format": "apiexec-dry-run/1", **plan.as_dict()})
    return EXIT_SOME_FAILED if plan.invalid else EXIT_OK


def _report(summary: BatchSummary, *, quiet: bool) -> int:
    if not quiet:
        print(summary.render(), file=sys.stderr)
        for failure in summary.failures:
            print(f"apiexec: failed: {failure}", file=sys.stderr)
    if summary.stopped:
        print(f"apiexec: stopped early: {summary.stopped}; the unsent lines are left for the next run",
              file=sys.stderr)
    if summary.interrupted:
        print("apiexec: interrupted; run the same command again to resume", file=sys.stderr)
    if summary.abandoned:
        # Threads of abandoned calls are still blocked in the network: do not wait for them.
        # Every answer received is written and the journal closed; flush and leave now.
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(summary.exit_code)
    return summary.exit_code


@contextlib.contextmanager
def _target(args: argparse.Namespace) -> Iterator[tuple[EndpointConfig, float | None]]:
    """The endpoint configuration, with a mock server running if asked."""
    overrides: dict[str, object] = {"max_retries": args.max_retries}
    if args.timeout:
        overrides["total_timeout"] = args.timeout
    if args.api_key_env:
        overrides["api_key_env"] = args.api_key_env
    if not args.mock:
        if args.base_url:
            overrides["base_url"] = args.base_url
        yield _with_headers(preset_config(args.provider, args.endpoint, **overrides), args.header), None
        return
    from apiexec.mock.server import MockServer, MockServerConfig

    mock_config = MockServerConfig(
        latency_ms=MOCK_LATENCY_MS, latency_jitter_ms=MOCK_LATENCY_MS / 2, requests_per_minute=MOCK_REQUESTS_PER_MINUTE
    )
    with MockServer(mock_config) as server:
        overrides.pop("api_key_env", None)
        config = preset_config("openai-compatible", args.endpoint, base_url=f"{server.url}/v1", **overrides)
        if not args.quiet:
            print(f"apiexec: using the built-in mock server at {server.url}/v1", file=sys.stderr)
        yield _with_headers(config, args.header), MOCK_REQUESTS_PER_MINUTE


def _with_headers(config: EndpointConfig, headers: list[tuple[str, str]]) -> EndpointConfig:
    if not headers:
        return config
    return config.with_changes(default_headers={**dict(config.default_headers), **dict(headers)})
