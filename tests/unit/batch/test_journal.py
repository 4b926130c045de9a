"""The output journal: journal check, torn tails, resume by fingerprint, compaction, set-aside."""

import json
import os

import pytest

from apiexec.batch.id_set import IdSet
from apiexec.batch.journal import Journal, NotAJournal, done_marker, row_key
from apiexec.batch.rows import Outcome, anthropic_row, fingerprint_of, openai_row


def ok(cid, fp="fp", body=None):
    return openai_row(cid, fp, Outcome(status_code=200, request_id="r", body=body or {"ok": 1}))


def failed(cid, fp="fp", message="boom"):
    return openai_row(cid, fp, Outcome(code="timeout", message=message))


def write_rows(path, rows, *, tail="\n"):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]) + (json.dumps(rows[-1]) + tail if rows else ""))


def keys(*pairs):
    ids = IdSet()
    ids.update(row_key(c, f) for c, f in pairs)
    return ids


def test_resume_counts_only_successes_with_their_fingerprint(tmp_path):
    path = tmp_path / "out.jsonl"
    journal = Journal(path)
    assert len(journal.open()) == 0
    journal.write(ok("a", "fa"))
    journal.write(failed("b", "fb"))
    journal.write(anthropic_row("c", "fc", Outcome(status_code=200, body={"type": "message"})))
    journal.close()
    again = Journal(path)
    done = again.open()
    assert row_key("a", "fa") in done and row_key("c", "fc") in done
    assert row_key("a", "other") not in done and row_key("b", "fb") not in done
    assert done_marker("a") in done and done_marker("b") not in done
    assert again.rows_before == 3
    again.close()
    done.close()


def test_a_file_apiexec_did_not_write_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other-input.jsonl"
    text = json.dumps({"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {}}) + "\n{torn"
    path.write_text(text)
    with pytest.raises(NotAJournal, match="not an apiexec output file.*--force"):
        Journal(path).open()
    assert path.read_text() == text


def test_force_uses_a_foreign_file_and_sets_its_rows_aside(tmp_path):
    path = tmp_path / "out.jsonl"
    foreign = json.dumps({"custom_id": "q1", "body": {}})
    path.write_text(foreign + "\nnot json at all\n")
    journal = Journal(path, force=True)
    journal.open().close()
    journal.write(ok("q1", "f1"))
    journal.close()
    result = journal.compact(keys(("q1", "f1")))
    assert result.set_aside == 2 and result.aside_path == tmp_path / "out.jsonl.set-aside.jsonl"
    assert [r["custom_id"] for r in map(json.loads, path.read_text().splitlines())] == ["q1"]
    assert result.aside_path.read_text() == foreign + "\nnot json at all\n"


def test_torn_last_line_is_cut_but_a_complete_one_without_newline_is_kept(tmp_path):
    path = tmp_path / "out.jsonl"
    write_rows(path, [ok("a"), ok("b")], tail="")
    journal = Journal(path)
    done = journal.open()
    assert row_key("b", "fp") in done
    journal.write(ok("c"))
    journal.close()
    assert [json.loads(x)["custom_id"] for x in path.read_text().splitlines()] == ["a", "b", "c"]

    torn = tmp_path / "torn.jsonl"
    first = json.dumps(ok("a")) + "\n"
    torn.write_text(first + '{"id": "x", "custom_id": "b", "respo')
    journal = Journal(torn)
    done = journal.open()
    assert len(done) == 2  # key and marker of "a"
    journal.close()
    assert torn.read_text() == first


def test_torn_only_line_empties_the_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "x", "cus')
    journal = Journal(path)
    assert len(journal.open()) == 0
    journal.close()
    assert path.read_text() == ""


def test_compact_keeps_one_row_per_request_and_sets_strays_aside(tmp_path):
    path = tmp_path / "out.jsonl"
    journal = Journal(path)
    journal.open()
    journal.write(failed("a", message="first"))
    journal.write(ok("a", body={"n": 1}))
    journal.write(failed("a", message="later"))
    journal.write(failed("b", message="old"))
    journal.write(failed("b", message="new"))
    journal.write(ok("c", fp="old-request"))  # same id, the request changed since
    journal.write(ok("c", fp="fp"))
    journal.write(ok("zz"))  # not in this input
    journal.close()
    result = journal.compact(keys(("a", "fp"), ("b", "fp"), ("c", "fp")))
    rows = {r["custom_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert set(rows) == {"a", "b", "c"} and len(path.read_text().splitlines()) == 3
    assert rows["a"]["response"]["body"] == {"n": 1}
    assert rows["b"]["error"]["message"] == "new"
    assert fingerprint_of(rows["c"]) == "fp"
    assert (result.dropped, result.set_aside) == (3, 2)
    aside = [json.loads(x) for x in result.aside_path.read_text().splitlines()]
    assert sorted((r["custom_id"], fingerprint_of(r)) for r in aside) == [("c", "old-request"), ("zz", "fp")]
    assert journal.compact(keys(("a", "fp"), ("b", "fp"), ("c", "fp"))).dropped == 0


def test_compact_drops_failures_superseded_elsewhere(tmp_path):
    path = tmp_path / "errors.jsonl"
    journal = Journal(path)
    journal.open()
    journal.write(failed("a"))
    journal.write(failed("b"))
    journal.close()
    result = journal.compact(keys(("a", "fp"), ("b", "fp")), superseded=keys(("a", "fp")))
    assert result.dropped == 1
    assert [json.loads(x)["custom_id"] for x in path.read_text().splitlines()] == ["b"]


def test_a_failed_write_leaves_no_torn_row(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    journal = Journal(path)
    journal.open()
    journal.write(ok("a"))
    real_write = os.write

    def half_then_enospc(fd, data):
        if fd == journal._fd and len(data) > 20:
            real_write(fd, data[:20])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        journal.write(ok("b"))
    monkeypatch.undo()
    journal.write(ok("c"))
    journal.close()
    assert [json.loads(x)["custom_id"] for x in path.read_text().splitlines()] == ["a", "c"]


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
    journal.write(ok("a", body={"text": "half an emoji: \ud83d"}))
    journal.close()
    assert row_key("a", "fp") in Journal(path).open()
    assert json.loads(path.read_text())["response"]["body"]["text"].endswith("\ud83d")


def test_id_set_is_a_set_on_disk():
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
        journal.write(failed(f"id{i}"))
    for i in range(0, 3000, 2):
        journal.write(ok(f"id{i}"))
    journal.close()
    assert journal.compact(keys(*((f"id{i}", "fp") for i in range(3000)))).dropped == 1500
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3000 and len({r["custom_id"] for r in rows}) == 3000
    assert sum(r["error"] is None for r in rows) == 1500
