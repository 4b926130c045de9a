"""The circuit breaker: what trips it, once, with one reason; what a finished call means."""

import concurrent.futures as cf
import json

import pytest

from apiexec.batch.breaker import Breaker, refusal_reason
from apiexec.batch.outcomes import NotSent, classify
from apiexec.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BudgetExceeded,
    DeadlineExceeded,
    RateLimitError,
    ServiceRefused,
    StorageError,
)

QUOTA = json.dumps({"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}})
SLOW_DOWN = json.dumps({"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}})


@pytest.mark.parametrize("error, refused", [
    (ServiceRefused("no", status_code=401), True),
    (APIStatusError("no", status_code=401), True),
    (APIStatusError("no", status_code=403), True),
    (RateLimitError("q", status_code=429, body_excerpt=QUOTA), True),
    (APIStatusError("pay", status_code=402), True),
    (RateLimitError("slow", status_code=429, body_excerpt=SLOW_DOWN), False),
    (APIStatusError("bad", status_code=400), False),
    (APIStatusError("oops", status_code=500), False),
    (StorageError("redis down", url="redis://h"), True),
    (BudgetExceeded("cap", cap=1.0, spent=1.0), True),
    (APIConnectionError("refused"), False),
])
def test_refusal_reason(error, refused):
    assert (refusal_reason(error) is not None) == refused


def test_refusal_names_the_code():
    assert "insufficient_quota" in refusal_reason(RateLimitError("q", status_code=429, body_excerpt=QUOTA))


def test_trips_once_first_reason_wins():
    breaker = Breaker()
    assert breaker.trip("first") is True and breaker.trip("second") is False
    assert breaker.reason == "first" and breaker.tripped.is_set()


def test_connection_failures_in_a_row_trip_and_an_answer_resets():
    breaker = Breaker(connection_failures=3)
    assert breaker.note_connection_failure() is None
    assert breaker.note_connection_failure() is None
    breaker.note_answer()
    assert breaker.note_connection_failure() is None and breaker.note_connection_failure() is None
    assert "3 calls in a row" in breaker.note_connection_failure()


def future_of(result=None, error=None, cancel=False):
    future = cf.Future()
    if cancel:
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


class Call:
    response_status = None
    request_id = None


def test_classify_success_and_http_failure():
    call = Call()
    call.response_status, call.request_id = 201, "req_9"
    ok = classify(call, future_of({"x": 1}))
    assert ok.outcome.ok and ok.outcome.status_code == 201 and ok.outcome.request_id == "req_9"
    refused = classify(Call(), future_of(error=RateLimitError("q", status_code=429, body_excerpt=QUOTA, request_id="r")))
    assert refused.outcome.status_code == 429 and refused.outcome.body == json.loads(QUOTA)
    assert refused.outcome.request_id == "r" and "refused" in refused.trip


@pytest.mark.parametrize("error", [NotSent("stopped"), StorageError("down", url="sqlite:///x")])
def test_calls_never_sent_have_no_row(error):
    assert classify(Call(), future_of(error=error)).outcome is None
    assert classify(Call(), future_of(cancel=True)).outcome is None


def test_connection_failures_count_but_timeouts_do_not():
    assert classify(Call(), future_of(error=APIConnectionError("refused"))).connection_failure
    timeout = classify(Call(), future_of(error=APITimeoutError("slow")))
    assert not timeout.connection_failure and timeout.outcome.code == "timeout"


def test_a_deadline_passed_before_sending_is_expired():
    expired = classify(Call(), future_of(error=DeadlineExceeded("queued", 5.0)))
    assert expired.outcome.expired and expired.outcome.code == "deadline_exceeded"
    assert not classify(Call(), future_of(error=DeadlineExceeded("response", 5.0))).outcome.expired


def test_an_answer_that_is_not_json_is_an_api_error_row():
    from apiexec.errors import APIError

    result = classify(Call(), future_of(error=APIError("http://h/v1/chat/completions answered 200 with a body that is not JSON")))
    assert result.outcome.code == "api_error" and not result.connection_failure and result.trip is None


def test_a_long_error_body_cut_by_the_http_layer_keeps_its_fields():
    long_message = "This model's maximum context length is 128000 tokens. " * 8
    body = json.dumps({"error": {"message": long_message, "type": "invalid_request_error", "param": "messages",
                                 "code": "context_length_exceeded"}})
    error = APIStatusError("http://h answered 400", status_code=400, body_excerpt=body[:300])
    outcome = classify(Call(), future_of(error=error)).outcome
    message = outcome.body["error"]["message"]
    assert message.endswith("...") and long_message.startswith(message[:-3]) and len(message) > 200
    short = json.dumps({"error": {"type": "invalid_request_error", "code": "x", "message": long_message}})
    outcome = classify(Call(), future_of(error=APIStatusError("400", status_code=400, body_excerpt=short[:300]))).outcome
    assert outcome.body["error"]["type"] == "invalid_request_error" and outcome.body["error"]["code"] == "x"


def test_a_connect_timeout_counts_as_the_host_being_down():
    import requests

    try:
        try:
            raise requests.exceptions.ConnectTimeout("connect timed out")
        except requests.RequestException as exc:
            raise APITimeoutError("http://10.255.255.1/v1: timed out (ConnectTimeout)") from exc
    except APITimeoutError as error:
        connect = error
    assert classify(Call(), future_of(error=connect)).connection_failure
    assert classify(Call(), future_of(error=DeadlineExceeded("connect", 5.0))).connection_failure
    assert not classify(Call(), future_of(error=DeadlineExceeded("response", 5.0))).connection_failure
