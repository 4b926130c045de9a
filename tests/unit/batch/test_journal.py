"""Batch input parsing and the output journal: resume, torn tails, compaction."""

import json

import pytest

from apiexec.batch.journal import Journal, count_lines, error_row, is_success, parse_line, read_batch, success_row
from apiexec.batch.runner import _relative_path


def test_parse_batch_line():
    line = parse_line(3, json.dumps({"custom_id": "a", "method": "post", "url": "/v1/chat/completions", "body": {"x": 1}}))
    assert (line.custom_id, line.method, line.url, line.body, line.error) == ("a", "POST", "/v1/chat/completions", {"x": 1}, None)


def test_bare_body_gets_line_number_as_id():
    line = parse_line(7, '{"model": "m", "messages": []}')
    assert line.custom_id == "7"
    assert line.body == {"model": "m", "messages": []}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"custom_id": "a"}', "missing or non-object body"),
        ('{"custom_id": "", "body": {}}', "custom_id must be"),
        ('{"custom_id": "a", "body": {}, "url": 5}', "must be strings"),
    ],
)
def test_bad_lines_explain_themselves(text, fragment):
    line = parse_line(2, text)
    assert line.body is None or line.error
    assert fragment in line.error
    assert line.error.startswith("line 2:")


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": 2}')
    lines = list(read_batch(path))
    assert [line.custom_id for line in lines] == ["1", "4"]
    assert count_lines(path) == 4


def test_relative_path_joins_without_doubling():
    assert _relative_path("https://api.openai.com/v1", "/v1/chat/completions") == "chat/completions"
    assert _relative_path("http://127.0.0.1:9/v1/", "/v1/embeddings") == "embeddings"
    assert _relative_path("http://host", "/v1/chat/completions") == "v1/chat/completions"


def test_success_detection():
    assert is_success(success_row("a", 200, "r", {}))
    assert not is_success(error_row("a", "http_500", "boom", status_code=500))
    assert not is_success({"custom_id": "a", "response": {"status_code": 404}, "error": None})
    assert not is_success("garbage")


def test_journal_resume_skips_only_successes(tmp_path):
    path = tmp_path / "out.jsonl"
    journal = Journal(path)
    assert len(journal.open()) == 0
    journal.write(success_row("a", 200, None, {"ok": 1}))
    journal.write(error_row("b", "timeout", "slow"))
    journal.close()
    again = Journal(path)
    done = again.open()
    assert "a" in done and "b" not in done and len(done) == 1
    assert again.rows_before == 2
    again.close()


def test_torn_last_line_is_cut(tmp_path):
    path = tmp_path / "out.jsonl"
    good = json.dumps(success_row("a", 200, None, {})) + "\n"
    path.write_text(good + '{"id": "x", "custom_id": "b", "respo')
    journal = Journal(path)
    done = journal.open()
    assert "a" in done and len(done) == 1
    journal.write(success_row("b", 200, None, {}))
    journal.close()
    rows = [json.loads(row) for row in path.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["a", "b"]


def test_torn_only_line_empties_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "x", "cus')
    journal = Journal(path)
    assert len(journal.open()) == 0
    journal.close()
    assert path.read_text() == ""


def test_compact_keeps_first_success_else_last_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    journal = Journal(path)
    journal.open()
    journal.write(error_row("a", "http_500", "first"))
    journal.write(success_row("a", 200, None, {"n": 1}))
    journal.write(error_row("a", "invalid_request", "duplicate"))
    journal.write(error_row("b", "timeout", "old"))
    journal.write(error_row("b", "timeout", "new"))
    journal.write(success_row("c", 200, None, {"n": 3}))
    journal.close()
    assert journal.compact() == 3
    rows = {r["custom_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"]["response"]["body"] == {"n": 1}
    assert rows["b"]["error"]["message"] == "new"
    assert journal.compact() == 0


def test_write_after_close_raises(tmp_path):
    journal = Journal(tmp_path / "o.jsonl")
    journal.open()
    journal.close()
    journal.close()
    with pytest.raises(RuntimeError):
        journal.write({"custom_id": "a"})


def test_a_lone_surrogate_in_an_answer_is_written_and_read_back(tmp_path):
    path = tmp_path / "out.jsonl"
    journal = Journal(path)
    journal.open()
    journal.write(success_row("a", 200, None, {"text": "half an emoji: \ud83d"}))
    journal.close()
    assert "a" in Journal(path).open()
    assert json.loads(path.read_text())["response"]["body"]["text"].endswith("\ud83d")


def test_id_set_is_a_set_on_disk():
    from apiexec.batch.id_set import IdSet

    ids = IdSet()
    assert ids.add("x") is True and ids.add("x") is False
    ids.update(["y", "z", "x"])
    assert len(ids) == 3 and "y" in ids and "w" not in ids and 5 not in ids
    ids.close()


def test_compaction_at_scale_keeps_one_row_per_id(tmp_path):
    path = tmp_path / "out.jsonl"
    journal = Journal(path)
    journal.open()
    for i in range(3000):
        journal.write(error_row(f"id{i}", "http_500", "first try"))
    for i in range(0, 3000, 2):
        journal.write(success_row(f"id{i}", 200, None, {"i": i}))
    journal.close()
    assert journal.compact() == 1500
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3000 and len({r["custom_id"] for r in rows}) == 3000
    assert sum(is_success(r) for r in rows) == 1500
