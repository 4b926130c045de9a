"""Output rows parse with the providers' own SDK models (provider-facts.md: batch file formats)."""

import anthropic.types.messages as anthropic_types
import pytest
from openai.types.chat import ChatCompletion

from apiexec.batch.rows import (
    FINGERPRINT,
    Outcome,
    anthropic_row,
    error_json,
    fingerprint_of,
    is_success,
    make_row,
    openai_row,
)

COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-latest",
           "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 1, "output_tokens": 1}}
OPENAI_ERROR = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                          "param": None, "code": "insufficient_quota"}}


def test_openai_success_row_is_batch_request_output():
    row = openai_row("q1", "fp", Outcome(status_code=200, request_id="req_1", body=COMPLETION))
    assert set(row) == {"id", "custom_id", "response", "error"}  # exactly OpenAI's keys
    assert row["id"].startswith("batch_req_") and row["error"] is None
    assert fingerprint_of(row) == "fp" and openai_row("q1", "fp", Outcome(status_code=200))["id"] != row["id"]
    assert row["response"] == {"status_code": 200, "request_id": "req_1", "body": COMPLETION}
    assert ChatCompletion.model_validate(row["response"]["body"]).choices[0].message.content == "hi"
    assert is_success(row)


def test_openai_http_failure_keeps_status_request_id_and_the_providers_error_json():
    row = openai_row("q1", "fp", Outcome(status_code=429, request_id="req_2", body=OPENAI_ERROR, message="x"))
    assert row["error"] is None
    assert row["response"] == {"status_code": 429, "request_id": "req_2", "body": OPENAI_ERROR}
    assert row["response"]["body"]["error"]["code"] == "insufficient_quota"
    assert not is_success(row)


def test_openai_http_failure_without_json_gets_an_openai_shaped_error_body():
    row = openai_row("q1", "fp", Outcome(status_code=502, body=None, message="bad gateway"))
    error = row["response"]["body"]["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] == "bad gateway"


def test_openai_failure_without_http_answer_uses_error_and_null_response():
    row = openai_row("q1", "fp", Outcome(code="connection_error", message="refused"))
    assert row["response"] is None and row["error"] == {"code": "connection_error", "message": "refused"}
    assert not is_success(row)


@pytest.mark.parametrize("outcome, kind", [
    (Outcome(status_code=200, body=MESSAGE), "succeeded"),
    (Outcome(status_code=400, body={"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}),
     "errored"),
    (Outcome(status_code=529, body=None, message="overloaded"), "errored"),
    (Outcome(code="connection_error", message="refused"), "errored"),
    (Outcome(code="deadline_exceeded", message="late", expired=True), "expired"),
])
def test_anthropic_rows_parse_as_message_batch_individual_response(outcome, kind):
    row = anthropic_row("req-1", "fp", outcome)
    parsed = anthropic_types.MessageBatchIndividualResponse.model_validate(row)
    assert parsed.custom_id == "req-1" and parsed.result.type == kind
    assert is_success(row) == (kind == "succeeded")
    if kind == "errored":
        assert parsed.result.error.type == "error" and parsed.result.error.error.message


def test_anthropic_error_types_follow_the_status():
    row = anthropic_row("r", "fp", Outcome(status_code=529, message="busy"))
    assert row["result"]["error"]["error"]["type"] == "overloaded_error"
    assert make_row("anthropic", "r", "fp", Outcome(status_code=401))["result"]["error"]["error"]["type"] == (
        "authentication_error")


def test_fingerprints_are_read_from_either_layout_and_foreign_rows_have_none():
    assert fingerprint_of(anthropic_row("r", "a1b2", Outcome(status_code=200, body=MESSAGE))) == "a1b2"
    assert fingerprint_of(anthropic_row("r", "a1b2", Outcome(status_code=200)))  == "a1b2"
    assert FINGERPRINT in anthropic_row("r", "x", Outcome(status_code=200))
    for foreign in ({"id": "batch_req_wnaDys", "custom_id": "r", "response": None, "error": None},
                    {"custom_id": "r", "body": {}}, "text", None):
        assert fingerprint_of(foreign) is None


def test_error_json():
    assert error_json('{"error": {"message": "no"}}') == {"error": {"message": "no"}}
    assert error_json("<html>") is None
