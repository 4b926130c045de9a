"""The tokenizer is chosen once per process and model: later estimates touch neither files nor the environment.

Every download here goes to a loopback server or a closed loopback port: never the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiexec.llm import tokenizer
from apiexec.llm.tokens import estimate_prompt_tokens, estimate_tokens, heuristic_count, tokenizer_name
from tests.helpers import FakeEncoding

tiktoken = pytest.importorskip("tiktoken")
BLOB = b"fake bpe ranks for the tokenizer choice"
TEXT = "one two three four five"


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """An empty tiktoken cache, no choice made yet; yields the encodings tiktoken loads."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("APIEXEC_TOKENIZER", raising=False)
    monkeypatch.delenv("APIEXEC_TIKTOKEN_DOWNLOAD", raising=False)
    names: list[str] = []

    def get_encoding(name: str) -> FakeEncoding:
        names.append(name)
        return FakeEncoding(name)

    monkeypatch.setattr(tiktoken, "get_encoding", get_encoding)
    tokenizer._forget_choices()
    yield names
    tokenizer._forget_choices()


def cache_as_cl100k(monkeypatch: pytest.MonkeyPatch, url: str, body: bytes = BLOB) -> Path:
    """Makes ``url`` cl100k_base's BPE file (with ``body``'s hash); returns where tiktoken caches it."""
    monkeypatch.setitem(tokenizer._TIKTOKEN_BLOBS, "cl100k_base", (url, hashlib.sha256(body).hexdigest()))
    path = tokenizer._cached_blob_path("cl100k_base")
    assert path is not None
    return Path(path)


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Counts the calls of a tokenizer module function."""
    calls: list[int] = []
    original = getattr(tokenizer, name)

    def counted(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(tokenizer, name, counted)
    return calls


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_cached_file_is_checked_and_loaded_once(loaded: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cache_as_cl100k(monkeypatch, "https://example.invalid/cl100k_base.tiktoken").write_bytes(BLOB)
    checks = count_calls(monkeypatch, "_blob_is_valid")
    paths = count_calls(monkeypatch, "_cached_blob_path")
    request = {"model": "gpt-4", "input": TEXT}
    assert [estimate_prompt_tokens(request) for _ in range(50)] == [5] * 50
    assert tokenizer_name(model="gpt-4") == "tiktoken:cl100k_base"
    assert (len(checks), len(paths), loaded) == (1, 1, ["cl100k_base"])


def test_offline_the_cache_is_not_looked_at_again(loaded: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cache_as_cl100k(monkeypatch, f"http://127.0.0.1:{closed_port()}/cl100k_base.tiktoken")
    checks = count_calls(monkeypatch, "_blob_is_valid")
    request = {"model": "gpt-4", "max_tokens": 8, "input": TEXT}
    assert {estimate_tokens(request) for _ in range(50)} == {heuristic_count(TEXT) + 8}
    assert len(checks) == 2  # before and after the one failed download
    assert loaded == []


def test_the_environment_is_read_at_the_first_estimate(loaded: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cache_as_cl100k(monkeypatch, "https://example.invalid/cl100k_base.tiktoken").write_bytes(BLOB)
    monkeypatch.setenv("APIEXEC_TOKENIZER", "heuristic")
    assert tokenizer_name(model="gpt-4") == "heuristic"
    monkeypatch.delenv("APIEXEC_TOKENIZER")
    assert tokenizer_name(model="gpt-4") == "heuristic"  # chosen once per process
    assert tokenizer_name(model="gpt-3.5-turbo") == "heuristic"  # same encoding, same choice
    tokenizer._forget_choices()
    assert tokenizer_name(model="gpt-4") == "tiktoken:cl100k_base"


def test_a_download_still_running_is_used_once_it_lands(loaded: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", str(len(BLOB)))
            self.end_headers()
            self.wfile.write(BLOB)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        path = cache_as_cl100k(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}/cl100k_base.tiktoken")
        monkeypatch.setattr(tokenizer, "FETCH_WAIT", 0.05)
        request = {"model": "gpt-4", "input": TEXT}
        assert estimate_prompt_tokens(request) == heuristic_count(TEXT)  # the wait ended first
        assert "gpt-4" not in tokenizer._model_choices  # not final: asked again next time
        release.set()
        assert tokenizer._downloads[str(path)].done.wait(10)
        assert estimate_prompt_tokens(request) == 5
        assert loaded == ["cl100k_base"]
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_threads_choosing_at_once_load_the_encoding_once(
    loaded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_as_cl100k(monkeypatch, "https://example.invalid/cl100k_base.tiktoken").write_bytes(BLOB)
    start = threading.Barrier(8)
    counters: list[Any] = []

    def first_estimate() -> None:
        start.wait(10)
        counters.append(tokenizer.counter_for("gpt-4"))

    threads = [threading.Thread(target=first_estimate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert loaded == ["cl100k_base"]
    assert len({id(counter) for counter in counters}) == 1
    assert counters[0](TEXT) == 5


def test_the_model_memo_is_bounded(loaded: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIEXEC_TOKENIZER", "heuristic")
    monkeypatch.setattr(tokenizer, "MAX_REMEMBERED_MODELS", 3)
    models = [f"model-{i}" for i in range(10)]
    assert {tokenizer_name(model=m) for m in models} == {"heuristic"}
    assert len(tokenizer._model_choices) <= 3
    assert set(tokenizer._choices) == {"cl100k_base"}
