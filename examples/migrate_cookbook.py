"""Move a job from the OpenAI cookbook's api_request_parallel_processor.py to ``apiexec run``.

The cookbook script reads one request body per line with an optional
``metadata`` field (which it strips before sending) and writes
``[request, response]`` or ``[request, response, metadata]`` arrays, in
completion order. ``apiexec run`` reads OpenAI Batch lines and writes OpenAI's
batch output rows, one per line, resumably. This converts both ways, so the
code downstream of the cookbook's results file keeps working::

    python examples/migrate_cookbook.py to-batch requests.jsonl batch.jsonl --endpoint /v1/embeddings
    apiexec run batch.jsonl -o results.jsonl --requests-per-minute 1500 --tokens-per-minute 6250000
    python examples/migrate_cookbook.py from-results batch.jsonl results.jsonl cookbook_results.jsonl

``custom_id`` is the line number; the metadata travels in a side file
(``batch.jsonl.metadata.jsonl``) rather than in the request, where the API
would refuse an unknown ``metadata`` field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if line.strip():
                yield number, json.loads(line)


def metadata_path(batch: Path) -> Path:
    """Where ``to_batch`` keeps each line's metadata."""
    return batch.with_name(batch.name + ".metadata.jsonl")


def to_batch(requests: Path, batch: Path, endpoint: str) -> int:
    """Cookbook request lines → OpenAI Batch lines (+ a metadata side file). Returns the count."""
    count = 0
    with batch.open("w", encoding="utf-8") as out, metadata_path(batch).open("w", encoding="utf-8") as meta:
        for number, body in _lines(requests):
            metadata = body.pop("metadata", None)
            custom_id = f"line-{number}"
            out.write(json.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}) + "\n")
            meta.write(json.dumps({"custom_id": custom_id, "metadata": metadata}) + "\n")
            count += 1
    return count


def from_results(batch: Path, results: Path, cookbook_results: Path) -> int:
    """apiexec's rows → the cookbook's ``[request, response(, metadata)]`` arrays. Returns the count.

    A failed request becomes ``[request, [error message], metadata]``, as the
    cookbook writes requests that failed all their attempts.
    """
    requests = {line["custom_id"]: line["body"] for _, line in _lines(batch)}
    metadata = {line["custom_id"]: line["metadata"] for _, line in _lines(metadata_path(batch))}
    count = 0
    with cookbook_results.open("w", encoding="utf-8") as out:
        for _, row in _lines(results):
            custom_id = row["custom_id"]
            response = row.get("response") or {}
            if response.get("status_code") == 200:
                answer: Any = response["body"]
            else:
                answer = [json.dumps(response.get("body") or row.get("error"))]
            entry = [requests[custom_id], answer]
            if metadata.get(custom_id) is not None:
                entry.append(metadata[custom_id])
            out.write(json.dumps(entry) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    forward = commands.add_parser("to-batch", help="cookbook requests file -> OpenAI Batch JSONL")
    forward.add_argument("requests", type=Path)
    forward.add_argument("batch", type=Path)
    forward.add_argument("--endpoint", default="/v1/chat/completions", help="e.g. /v1/embeddings")
    back = commands.add_parser("from-results", help="apiexec results -> the cookbook's results layout")
    back.add_argument("batch", type=Path)
    back.add_argument("results", type=Path)
    back.add_argument("cookbook_results", type=Path)
    args = parser.parse_args(argv)
    if args.command == "to-batch":
        print(f"{to_batch(args.requests, args.batch, args.endpoint)} lines written to {args.batch}")
    else:
        print(f"{from_results(args.batch, args.results, args.cookbook_results)} results written to {args.cookbook_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
