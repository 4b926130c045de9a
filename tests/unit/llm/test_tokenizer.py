"""The tokenizer fetches tiktoken's BPE file when it can, and falls back at once when it cannot.

Every download here goes to a loopback server or a closed loopback port: never the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from apiexec.llm import tokenizer
from apiexec.llm.tokens import estimate_prompt_tokens, heuristic_count, tokenizer_name
from tests.helpers import FakeEncoding

tiktoken = pytest.importorskip("tiktoken")
BLOB = b"fake bpe ranks for a loopback download"


class BlobServer:
    """Serves ``body`` at any path on a loopback port and counts the requests."""

    def __init__(self, body: bytes, delay: float = 0.0) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests += 1
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # a handler still sleeping must not hold the test
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cl100k_base.tiktoken"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty tiktoken cache; tiktoken itself never loads anything real."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("APIEXEC_TOKENIZER", raising=False)
    monkeypatch.delenv("APIEXEC_TIKTOKEN_DOWNLOAD", raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", FakeEncoding)
    tokenizer._forget_choices()
    yield tmp_path
    tokenizer._forget_choices()


def serve_as_cl100k(monkeypatch: pytest.MonkeyPatch, url: str, body: bytes = BLOB) -> None:
    monkeypatch.setitem(tokenizer._TIKTOKEN_BLOBS, "cl100k_base", (url, hashlib.sha256(body).hexdigest()))


def test_missing_bpe_file_is_downloaded_into_tiktokens_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = BlobServer(BLOB)
    try:
        serve_as_cl100k(monkeypatch, server.url)
        assert tokenizer_name(model="gpt-4") == "tiktoken:cl100k_base"
        path = tokenizer._cached_blob_path("cl100k_base")
        assert path is not None and Path(path).read_bytes() == BLOB
        assert estimate_prompt_tokens({"model": "gpt-4", "input": "one two three"}) == 3  # exact now
        tokenizer_name(model="gpt-4")
        assert server.requests == 1  # cached: downloaded once
        assert not [p for p in cache.iterdir() if p.name.startswith(".apiexec-")]  # no temp file left
    finally:
        server.close()


def test_offline_falls_back_at_once_and_does_not_retry(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port that refuses connections
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve_as_cl100k(monkeypatch, f"http://127.0.0.1:{port}/cl100k_base.tiktoken")
    attempts = []
    original = tokenizer._Download._fetch
    monkeypatch.setattr(tokenizer._Download, "_fetch", lambda self: attempts.append(1) or original(self))
    start = time.monotonic()
    assert tokenizer_name(model="gpt-4") == "heuristic"
    assert time.monotonic() - start < tokenizer.FETCH_WAIT + 0.5
    assert tokenizer_name(model="gpt-4") == "heuristic"
    assert attempts == [1]


def test_a_slow_download_never_holds_an_estimate_longer_than_the_wait(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = BlobServer(BLOB, delay=3.0)
    try:
        serve_as_cl100k(monkeypatch, server.url)
        monkeypatch.setattr(tokenizer, "FETCH_WAIT", 0.2)
        start = time.monotonic()
        assert estimate_prompt_tokens({"model": "gpt-4", "input": "one two three"}) == heuristic_count(
            "one two three"
        )
        assert time.monotonic() - start < 1.5
    finally:
        server.close()


def test_a_file_failing_its_hash_is_never_written(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = BlobServer(b"tampered")
    try:
        serve_as_cl100k(monkeypatch, server.url, body=BLOB)  # expects BLOB's hash
        assert tokenizer_name(model="gpt-4") == "heuristic"
        assert list(cache.iterdir()) == []
    finally:
        server.close()


@pytest.mark.parametrize("value", ["0", "false", "no"])
def test_download_can_be_forbidden(cache: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    server = BlobServer(BLOB)
    try:
        serve_as_cl100k(monkeypatch, server.url)
        monkeypatch.setenv("APIEXEC_TIKTOKEN_DOWNLOAD", value)
        assert tokenizer_name(model="gpt-4") == "heuristic"
        assert server.requests == 0
    finally:
        server.close()


def test_heuristic_errs_high_against_real_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the real BPE files are cached on this machine, compare with exact counts."""
    monkeypatch.setenv("APIEXEC_TIKTOKEN_DOWNLOAD", "0")
    texts = [
        "Hello!", "What is 2+2?", "Translate 'good morning' to Spanish.", "1 2 3 4 5 6 7 8 9 10",
        '{"a": 1, "b": [1, 2, 3]}', "ID: 7f3e9a2b-1c4d-4e5f-8a9b-0c1d2e3f4a5b", "MiXeD cAsE tExT",
        "Привет, как дела?", "你好，今天天气怎么样？", "🙂👍🎉 emoji test 🚀", "def f(a, b):\n    return a + b\n",
    ]
    try:
        encodings = [tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")]
    except Exception:
        pytest.skip("tiktoken's BPE files are not cached on this machine")
    for text in texts:
        exact = max(len(e.encode_ordinary(text)) for e in encodings)
        assert heuristic_count(text) >= exact, text
