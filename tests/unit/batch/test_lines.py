"""Input lines: three formats, each bad line its own error, BOM, invalid UTF-8, stdin and gzip."""

import gzip
import io
import json
import sys

import pytest

from apiexec.batch.lines import count_lines, fingerprint, parse_line, read_batch

BASE = "https://api.groq.com/openai/v1"


def parse(text, line_no=2):
    raw = text.encode() if isinstance(text, str) else text
    return parse_line(line_no, raw, base_url=BASE, default_endpoint="chat/completions")


def test_openai_batch_line():
    line = parse(json.dumps({"custom_id": "a", "method": "post", "url": "/v1/chat/completions", "body": {"x": 1}}))
    assert (line.custom_id, line.method, line.path, line.body, line.error, line.layout) == (
        "a", "POST", "chat/completions", {"x": 1}, None, "openai")
    assert line.fingerprint == fingerprint("POST", "chat/completions", {"x": 1})


def test_anthropic_message_batches_line():
    params = {"model": "claude-3-5-haiku-latest", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    line = parse(json.dumps({"custom_id": "req-1", "params": params}))
    assert (line.layout, line.custom_id, line.path, line.body, line.error) == ("anthropic", "req-1", "messages", params, None)
    bad = parse(json.dumps({"custom_id": "req-2", "params": "nope"}))
    assert bad.layout == "anthropic" and "params must be an object" in bad.error


def test_bare_body_gets_line_number_as_id():
    line = parse_line(7, b'{"model": "m", "messages": []}', base_url=BASE, default_endpoint="embeddings")
    assert (line.custom_id, line.path, line.body) == ("7", "embeddings", {"model": "m", "messages": []})


def test_fingerprint_changes_with_the_request_only():
    a = parse(json.dumps({"custom_id": "a", "body": {"x": 1, "y": 2}}))
    b = parse(json.dumps({"body": {"y": 2, "x": 1}, "custom_id": "a"}))
    c = parse(json.dumps({"custom_id": "a", "body": {"x": 1, "y": 3}}))
    d = parse(json.dumps({"custom_id": "a", "url": "/v1/embeddings", "body": {"x": 1, "y": 2}}))
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"custom_id": "a"}', "missing or non-object body"),
    ('{"custom_id": "", "body": {}}', "custom_id must be"),
    ('{"custom_id": "a", "body": {}, "url": 5}', "must be strings"),
    ('{"custom_id": "a", "method": "BREW", "url": "/v1/chat/completions", "body": {}}', "method 'BREW'"),
    ('{"custom_id": "a", "url": "/", "body": {}}', "names no endpoint"),
    ('{"custom_id": "a", "url": "/v1/../../admin", "body": {}}', "climbs above"),
    ('{"custom_id": "a", "url": "http://evil/v1/chat/completions", "body": {}}', "not a full URL"),
    (b'{"custom_id": "a", "body": {"text": "caf\xe9"}}', "not valid UTF-8"),
])
def test_bad_lines_explain_themselves(text, fragment):
    line = parse(text)
    assert line.body is None and fragment in line.error
    assert line.error.startswith("line 2:")
    assert line.fingerprint.startswith("raw-")


def test_invalid_utf8_keeps_its_line_number_as_id():
    assert parse(b'{"custom_id": "a", "body": {"t": "\xff"}}', line_no=9).custom_id == "9"


def test_bom_on_the_first_line_is_accepted():
    line = parse_line(1, b'\xef\xbb\xbf{"custom_id": "a", "body": {}}\n', base_url=BASE, default_endpoint="chat/completions")
    assert line.error is None and line.custom_id == "a"


def test_blank_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": 2}')
    lines = list(read_batch(path, base_url=BASE, default_endpoint="chat/completions"))
    assert [line.custom_id for line in lines] == ["1", "4"]
    assert count_lines(path) == 4


def test_gzip_input_is_read_decompressed(tmp_path):
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"custom_id": "g", "body": {"x": 1}}\n')
    assert [line.custom_id for line in read_batch(path, base_url=BASE, default_endpoint="e")] == ["g"]
    assert count_lines(path) is None


def test_stdin_is_read_as_bytes(monkeypatch):
    fake = io.TextIOWrapper(io.BytesIO(b'\xef\xbb\xbf{"custom_id": "s", "body": {}}\n{"custom_id": "t", "body": {"t": "\xff"}}\n'))
    monkeypatch.setattr(sys, "stdin", fake)
    lines = list(read_batch("-", base_url=BASE, default_endpoint="e"))
    assert [(line.custom_id, line.error is None) for line in lines] == [("s", True), ("2", False)]
    assert count_lines("-") is None


def test_a_truncated_gzip_is_an_oserror_naming_the_input(tmp_path):
    path = tmp_path / "in.jsonl.gz"
    data = gzip.compress(b"".join(b'{"custom_id": "c%d", "body": {}}\n' % i for i in range(1000)))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="in.jsonl.gz: cannot read the input"):
        list(read_batch(path, base_url=BASE, default_endpoint="e"))
