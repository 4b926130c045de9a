"""The floor: the least a threaded client on apiexec's ``Endpoint`` does per line.

``bench/vs_cookbook.py`` runs this beside ``apiexec run`` and the cookbook
script, so that one table shows how much of ``apiexec run``'s CPU per line is
the threaded ``requests`` road itself (this script) and how much is the run's
own work on top: limits per model, the adaptive gate, the journal that makes
a run resumable, retries, cost and progress. It has none of that. A reader
thread parses each line and puts it on a bounded queue; ``--workers`` threads
estimate its prompt tokens (as both other clients do), send it through one
pooled :class:`~apiexec.http.endpoint.Endpoint` and write one JSON row
``[request, response, {"line": n, "tokens": t}]`` with one ``os.write``
(the cookbook's row shape, so the same counter reads it).

It is a measuring stick, not a client: an error ends the script.

    python bench/floor_client.py requests.jsonl out.jsonl http://127.0.0.1:8080/v1 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
from collections.abc import Sequence
from typing import Any

from apiexec.http.endpoint import Endpoint
from apiexec.http.presets import preset_config
from apiexec.llm.estimates import estimate_prompt_tokens


def _work(endpoint: Endpoint, lines: queue.Queue[tuple[int, dict[str, Any]] | None], fd: int) -> None:
    try:
        while (item := lines.get()) is not None:
            number, request = item
            tokens = estimate_prompt_tokens(request)
            response = endpoint.call(request)
            os.write(fd, (json.dumps([request, response, {"line": number, "tokens": tokens}]) + "\n").encode())
    except BaseException as exc:  # the reader would wait for room forever: end the process
        print(f"floor client: {exc!r}", file=sys.stderr, flush=True)
        os._exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    config = preset_config("openai-compatible", base_url=args.base_url)
    config = config.with_changes(endpoint="chat/completions", pool_maxsize=args.workers)
    lines: queue.Queue[tuple[int, dict[str, Any]] | None] = queue.Queue(maxsize=4 * args.workers)
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        with Endpoint(config) as endpoint:
            workers = [threading.Thread(target=_work, args=(endpoint, lines, fd)) for _ in range(args.workers)]
            for worker in workers:
                worker.start()
            with open(args.input, encoding="utf-8") as f:
                for number, line in enumerate(f):
                    lines.put((number, json.loads(line)))
            for _ in workers:
                lines.put(None)
            for worker in workers:
                worker.join()
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
