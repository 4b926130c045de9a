"""Every failure mapped to the error tree in one place: statuses, signals, bodies, transport errors."""

import json

import pytest
import requests
import responses
import urllib3

from apiexec import APIConnectionError, APIError, APIStatusError, APITimeoutError, Endpoint, EndpointConfig
from apiexec.errors import DeadlineExceeded, RateLimitError, ServiceRefused
from apiexec.http.deadline import CallDeadline
from apiexec.http.error_map import ErrorMapper, error_type, is_error_body, request_id, should_retry_header
from apiexec.http.retry import is_retryable
from tests.helpers import FakeClock

KEY = "apiexec-test-credential-0123456789"
BASE = "https://api.example.com/v1"
URL = f"{BASE}/chat/completions"


def config(**kw):
    fields = {"provider": "test", "endpoint": "chat/completions", "base_url": BASE, "api_key": KEY}
    fields.update(kw)
    return EndpointConfig(**fields)


MAPPER = ErrorMapper(config())


@pytest.mark.parametrize(
    ("status", "body", "cls", "retryable"),
    [
        (400, {"error": {"type": "invalid_request_error"}}, APIStatusError, False),
        (401, {"error": {"type": "invalid_request_error", "code": "invalid_api_key"}}, ServiceRefused, False),
        (402, {"error": {"message": "Insufficient credits", "code": 402}}, ServiceRefused, False),
        (403, {"error": {"type": "permission_error"}}, ServiceRefused, False),
        (408, {}, APIStatusError, True),
        (409, {}, APIStatusError, True),
        (429, {"error": {"type": "requests", "code": "rate_limit_exceeded"}}, RateLimitError, True),
        (429, {"error": {"type": "insufficient_quota", "code": "insufficient_quota"}}, ServiceRefused, False),
        (429, {"error": {"type": "billing_hard_limit_reached"}}, ServiceRefused, False),
        (429, {"type": "error", "error": {"type": "rate_limit_error"}}, RateLimitError, True),  # Anthropic
        (500, {}, APIStatusError, True),
        (501, {}, APIStatusError, False),
        (529, {"type": "error", "error": {"type": "overloaded_error"}}, APIStatusError, True),  # Anthropic
    ],
)
def test_status_errors(status, body, cls, retryable):
    error = MAPPER.status_error(status, "Reason", {"x-request-id": "req_1"}, json.dumps(body))
    assert type(error) is cls
    assert error.status_code == status and error.request_id == "req_1"
    assert is_retryable(error) is retryable


@pytest.mark.parametrize(("value", "verdict"), [("true", True), ("false", False), ("TRUE", True), ("maybe", None)])
def test_x_should_retry_wins_both_ways(value, verdict):
    for status in (400, 500):
        error = MAPPER.status_error(status, None, {"x-should-retry": value}, "")
        assert error.should_retry is verdict
        assert is_retryable(error) is (verdict if verdict is not None else status == 500)


def test_retry_after_beyond_the_cap_is_final_with_the_wait_in_the_message():
    mapper = ErrorMapper(config(retry_after_cap=30.0))
    error = mapper.status_error(429, "Too Many Requests", {"retry-after": "45", "x-should-retry": "true"}, "")
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 45.0 and error.should_retry is False
    assert "45s" in str(error) and "retry_after_cap=30s" in str(error)
    assert not is_retryable(error)


def test_excerpt_is_redacted_before_it_is_cut():
    body = "x" * 290 + KEY  # the key straddles the 300-character cut
    error = MAPPER.status_error(400, None, {}, body)
    assert KEY[:8] not in error.body_excerpt and KEY[:8] not in str(error)


def test_helpers():
    assert request_id({"request-id": "req_a"}) == "req_a"
    assert should_retry_header({}) is None
    assert error_type({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}) == "RESOURCE_EXHAUSTED"
    assert error_type("nope") is None
    assert is_error_body({"error": {"message": "x"}}) and is_error_body({"type": "error"})
    assert not is_error_body({"error": None}) and not is_error_body([1])


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (requests.ConnectTimeout("x"), APITimeoutError),
        (requests.ReadTimeout("x"), APITimeoutError),
        (requests.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, "/", "t")), APITimeoutError),
        (requests.ConnectionError("refused"), APIConnectionError),
        (requests.exceptions.ChunkedEncodingError("cut"), APIConnectionError),
        (requests.exceptions.SSLError("bad cert"), APIError),
        (requests.exceptions.TooManyRedirects("loop"), APIError),
        (urllib3.exceptions.ProtocolError("cut"), APIConnectionError),
        (ConnectionResetError(), APIConnectionError),
    ],
)
def test_transport_errors(exc, cls):
    error = MAPPER.transport_error(exc, phase="response")
    assert type(error) is cls
    assert error.url == URL


def test_a_transport_error_after_the_deadline_is_the_deadline():
    clock = FakeClock(0.0)
    deadline = CallDeadline(5.0, waiter=clock)
    clock.advance(5.0)
    error = MAPPER.transport_error(ConnectionResetError(), phase="response", deadline=deadline)
    assert isinstance(error, DeadlineExceeded) and error.phase == "response"


@responses.activate
def test_a_200_error_body_is_an_api_error_and_not_retried():
    responses.post(URL, json={"error": {"message": "model overloaded", "code": 502}})
    with Endpoint(config(max_retries=2)) as ep, pytest.raises(APIError, match="model overloaded") as info:
        ep.call({})
    assert not isinstance(info.value, APIStatusError)
    assert len(responses.calls) == 1


@responses.activate
def test_a_json_answer_to_a_stream_request_reporting_an_error_is_that_error():
    responses.post(URL, json={"error": {"message": "no streaming for you"}})
    with Endpoint(config(max_retries=0)) as ep, pytest.raises(APIError, match="no streaming for you"):
        list(ep.stream({}))


@responses.activate
@pytest.mark.parametrize("status", [401, 403])
def test_refused_service_from_call_and_stream(status):
    responses.post(URL, json={"error": {"message": "no"}}, status=status)
    with Endpoint(config(max_retries=3)) as ep:
        with pytest.raises(ServiceRefused):
            ep.call({})
        with pytest.raises(ServiceRefused):
            list(ep.stream({}))
    assert len(responses.calls) == 2
