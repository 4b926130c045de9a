"""A plain script: many chat calls inside rate limits, every outcome kept, stoppable.

Run it against the built-in mock server (no key, no network)::

    python examples/plain_script.py --count 200 --output answers.jsonl

or against a real API::

    python examples/plain_script.py --provider openai --count 20   # key from $OPENAI_API_KEY

What it shows:

* one endpoint (one pooled session) and one executor for the whole run;
* ``map(..., return_exceptions=True)``: a call that fails is written with its
  error, the others go on;
* results written as they arrive, in input order, so a stopped run keeps
  everything already answered;
* Ctrl-C or SIGTERM: the calls in flight finish (and are written), the calls
  not started are cancelled, the summary says how many of each, exit 130; a
  second SIGTERM kills at once.

Exit status: 0 every call succeeded, 1 a configuration error (a missing key:
one line, no traceback), 2 some failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from apiexec import APICalling, APIExecError, Endpoint, ExecutionStatus, RateLimitedExecutor
from apiexec.mock import MockServer, MockServerConfig

EXIT_OK, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="prompts to send (default 100)")
    parser.add_argument("--output", type=Path, default=Path("answers.jsonl"), help="one JSON line per prompt")
    parser.add_argument("--provider", help="a real provider preset (openai, anthropic...); default: the mock server")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--requests-per-minute", type=float, default=6000)
    parser.add_argument("--tokens-per-minute", type=float, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mock-latency-ms", type=float, default=0, help="the mock server's latency per answer")
    parser.add_argument("--fail-every", type=int, default=0, help="make every Nth request invalid (shows failures)")
    return parser.parse_args(argv)


class Stopped(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so every ``with`` block cleans up.

    A BaseException, as KeyboardInterrupt is: ``except Exception`` blocks
    (``map(return_exceptions=True)`` among them) must not take it for the
    failure of a call.
    """


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM while the calls in flight finish kills at once, as usual.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Stopped(f"signal {signum}")


@contextmanager
def endpoint_for(args: argparse.Namespace) -> Iterator[Endpoint]:
    """The real provider's endpoint, or one on a mock server started here."""
    if args.provider:
        with Endpoint.for_provider(args.provider, "chat") as endpoint:
            yield endpoint
        return
    config = MockServerConfig(latency_ms=args.mock_latency_ms)
    with MockServer(config) as mock:
        print(f"using the built-in mock server at {mock.url}/v1", file=sys.stderr, flush=True)
        with Endpoint.for_provider("openai", "chat", base_url=f"{mock.url}/v1", api_key="sk-mock") as endpoint:
            yield endpoint


def request_body(args: argparse.Namespace, n: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Give one fact about the number {n}."}]
    if args.fail_every and n % args.fail_every == args.fail_every - 1:
        messages = []  # the API refuses this request with a 400
    return {"model": args.model, "max_tokens": 60, "messages": messages}


def row(n: int, call: APICalling, outcome: Any) -> dict[str, Any]:
    """What the output file keeps of one call: its answer or its error."""
    if isinstance(outcome, BaseException):
        return {"n": n, "status": call.execution.status.value, "error": call.execution.error or repr(outcome)}
    return {
        "n": n,
        "status": "completed",
        "answer": outcome["choices"][0]["message"]["content"],
        "tokens": outcome.get("usage", {}).get("total_tokens"),
        "attempts": call.execution.attempts,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except APIExecError as exc:  # a missing key, a bad limit: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    interrupted = False
    calls: list[APICalling] = []
    written = 0
    try:
        with ExitStack() as stack, args.output.open("w", encoding="utf-8") as out:
            endpoint = stack.enter_context(endpoint_for(args))
            executor = RateLimitedExecutor(
                limit_requests=args.requests_per_minute,
                limit_tokens=args.tokens_per_minute,
                concurrency_limit=args.concurrency,
            )
            stack.enter_context(executor)
            calls = [APICalling(endpoint, request_body(args, n), requires_tokens=True) for n in range(args.count)]
            try:
                for call, outcome in zip(calls, executor.map(calls, return_exceptions=True)):
                    out.write(json.dumps(row(written, call, outcome)) + "\n")
                    out.flush()  # a stopped run keeps every answer already written
                    written += 1
            except (KeyboardInterrupt, Stopped):
                # Leaving the with block below finishes the calls in flight and
                # cancels the rest; write the ones that finish meanwhile.
                interrupted = True
                executor.shutdown(wait=True)
                for n, call in enumerate(calls[written:], start=written):
                    if call.execution.status is ExecutionStatus.COMPLETED:
                        out.write(json.dumps(row(n, call, call.execution.result)) + "\n")
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = collections.Counter(call.execution.status.value for call in calls)
    print(f"{'interrupted' if interrupted else 'done'}: {dict(sorted(counts.items()))}", file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if counts.get("failed") else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
