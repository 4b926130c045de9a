"""Retry policy: what is retried, how long it waits, how attempts are counted.

Waits are recorded by an injected ``sleep``; nothing really sleeps.
"""

import email.utils
import logging
import time

import pytest
import requests
import responses

from apiexec import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Endpoint,
    EndpointConfig,
    RateLimitError,
)
from apiexec.call_context import call_context
from apiexec.http.retry import RETRY_STATUSES, is_retryable, retry_policy

BASE = "https://api.example.com/v1"
URL = f"{BASE}/chat/completions"


class Recorder:
    """Stands in for time.sleep: records each wait."""

    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


def make(**kw):
    base = {"provider": "test", "endpoint": "chat/completions", "base_url": BASE, "max_retries": 3}
    base.update(kw)
    sleep = Recorder()
    return Endpoint(EndpointConfig(**base), sleep=sleep), sleep


# -- what is retried ------------------------------------------------------------------


@responses.activate
@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 429])
def test_retryable_status_then_success(status):
    responses.post(URL, json={"error": "x"}, status=status)
    responses.post(URL, json={"ok": True})
    ep, sleep = make()
    with call_context() as ctx:
        assert ep.call({"q": 1}) == {"ok": True}
    assert len(responses.calls) == 2
    assert ctx.attempts == 2
    assert len(sleep.waits) == 1
    assert [c.request.body for c in responses.calls] == [b'{"q": 1}'] * 2


@responses.activate
@pytest.mark.parametrize(
    "exc", [requests.ConnectionError("refused"), requests.ReadTimeout("slow"), requests.ConnectTimeout("slow")]
)
def test_transport_error_then_success(exc):
    responses.post(URL, body=exc)
    responses.post(URL, json={"ok": True})
    ep, sleep = make()
    with call_context() as ctx:
        assert ep.call({}) == {"ok": True}
    assert ctx.attempts == 2
    assert len(responses.calls) == 2
    assert len(sleep.waits) == 1


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_not_retried(status):
    responses.post(URL, json={"error": "bad"}, status=status)
    ep, sleep = make()
    with call_context() as ctx, pytest.raises(APIStatusError) as info:
        ep.call({})
    assert info.value.status_code == status
    assert not isinstance(info.value, RateLimitError)
    assert len(responses.calls) == 1
    assert ctx.attempts == 1
    assert sleep.waits == []


@responses.activate
def test_non_json_body_not_retried():
    responses.post(URL, body="not json", status=200)
    ep, sleep = make()
    with pytest.raises(APIError) as info:
        ep.call({})
    assert not isinstance(info.value, APIStatusError)
    assert len(responses.calls) == 1
    assert sleep.waits == []


@responses.activate
def test_gives_up_after_max_retries_with_last_error():
    responses.post(URL, json={"error": "down"}, status=503)
    ep, sleep = make(max_retries=2)
    with call_context() as ctx, pytest.raises(APIStatusError) as info:
        ep.call({})
    assert info.value.status_code == 503
    assert len(responses.calls) == 3
    assert ctx.attempts == 3
    assert len(sleep.waits) == 2


@responses.activate
def test_rate_limit_exhausted_raises_rate_limit_error():
    responses.post(URL, json={"error": "slow"}, status=429, headers={"retry-after": "1"})
    ep, sleep = make(max_retries=1)
    with pytest.raises(RateLimitError) as info:
        ep.call({})
    assert info.value.retry_after == 1.0
    assert sleep.waits == [1.0]


@responses.activate
def test_connection_errors_exhausted():
    responses.post(URL, body=requests.ConnectionError("refused"))
    ep, sleep = make(max_retries=2)
    with call_context() as ctx, pytest.raises(APIConnectionError):
        ep.call({})
    assert ctx.attempts == 3
    assert len(sleep.waits) == 2


@responses.activate
def test_timeouts_exhausted():
    responses.post(URL, body=requests.ReadTimeout("slow"))
    ep, _ = make(max_retries=1)
    with pytest.raises(APITimeoutError):
        ep.call({})
    assert len(responses.calls) == 2


@responses.activate
def test_max_retries_zero_makes_one_attempt():
    responses.post(URL, json={}, status=503)
    ep, sleep = make(max_retries=0)
    with call_context() as ctx, pytest.raises(APIStatusError):
        ep.call({})
    assert len(responses.calls) == 1
    assert ctx.attempts == 1
    assert sleep.waits == []


@responses.activate
def test_attempts_counted_per_call():
    responses.post(URL, json={"ok": True})
    ep, _ = make()
    with call_context() as first:
        ep.call({})
    with call_context() as second:
        ep.call({})
    assert (first.attempts, second.attempts) == (1, 1)


@responses.activate
def test_retries_are_logged():
    responses.post(URL, json={}, status=500)
    responses.post(URL, json={})
    ep, _ = make()
    with _capture("apiexec.http.retry") as records:
        ep.call({})
    assert any("retrying" in r.getMessage() for r in records)


# -- how long it waits -----------------------------------------------------------------


def _wait_after(headers, **kw):
    responses.post(URL, json={}, status=429, headers=headers)
    responses.post(URL, json={"ok": True})
    ep, sleep = make(**kw)
    ep.call({})
    assert len(sleep.waits) == 1
    return sleep.waits[0]


@responses.activate
def test_wait_honours_retry_after_ms():
    assert _wait_after({"retry-after-ms": "1500"}) == pytest.approx(1.5)


@responses.activate
def test_retry_after_ms_wins_over_retry_after():
    assert _wait_after({"retry-after-ms": "250", "retry-after": "7"}) == pytest.approx(0.25)


@responses.activate
@pytest.mark.parametrize(("value", "expected"), [("3", 3.0), ("2.5", 2.5)])
def test_wait_honours_retry_after_seconds(value, expected):
    assert _wait_after({"Retry-After": value}) == pytest.approx(expected)


@responses.activate
def test_retry_after_zero_backs_off_with_jitter_instead_of_retrying_at_once():
    """issue 12: ``retry-after: 0`` used to retry with no pause at all (a retry storm)."""
    waits = {_wait_after({"Retry-After": "0"}, backoff_base=1.0, backoff_max=8.0) for _ in range(20)}
    assert all(0.0 <= w <= 1.0 for w in waits)
    assert len(waits) > 1  # jittered, not a fixed pause every client repeats in lockstep


@responses.activate
def test_wait_honours_retry_after_http_date():
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27.0 <= _wait_after({"retry-after": date}) <= 30.5


@responses.activate
def test_retry_after_date_in_the_past_backs_off():
    date = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert 0.0 <= _wait_after({"retry-after": date}, backoff_base=1.0) <= 1.0


@responses.activate
@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "500"}, {"retry-after-ms": "500000"}, {"retry-after": "DATE"}],
)
def test_server_wait_beyond_the_cap_fails_at_once_with_the_wait_in_the_error(headers):
    """issue 12: retrying before the server's time is a sure second 429; fail with the wait instead."""
    if headers.get("retry-after") == "DATE":
        headers = {"retry-after": email.utils.formatdate(time.time() + 3600, usegmt=True)}
    responses.post(URL, json={}, status=429, headers=headers)
    responses.post(URL, json={"ok": True})
    ep, sleep = make(retry_after_cap=10.0)
    with pytest.raises(RateLimitError) as info:
        ep.call({})
    assert sleep.waits == []
    assert len(responses.calls) == 1
    assert info.value.retry_after > 10.0
    assert info.value.should_retry is False
    assert "retry_after_cap=10s" in str(info.value)


@responses.activate
def test_server_wait_within_the_cap_is_waited():
    assert _wait_after({"retry-after": "10"}, retry_after_cap=10.0) == 10.0


@responses.activate
def test_retry_after_honoured_on_5xx_too():
    responses.post(URL, json={}, status=503, headers={"retry-after": "4"})
    responses.post(URL, json={})
    ep, sleep = make()
    ep.call({})
    assert sleep.waits == [4.0]


@responses.activate
def test_malformed_retry_after_falls_back_to_backoff():
    wait = _wait_after({"retry-after": "soon"}, backoff_base=1.0, backoff_max=8.0)
    assert 0.0 <= wait <= 1.0


@responses.activate
def test_backoff_is_jittered_within_bounds():
    responses.post(URL, json={}, status=500)
    for _ in range(20):
        ep, sleep = make(max_retries=6, backoff_base=0.5, backoff_max=3.0)
        with pytest.raises(APIStatusError):
            ep.call({})
        assert len(sleep.waits) == 6
        for i, wait in enumerate(sleep.waits):
            assert 0.0 <= wait <= min(3.0, 0.5 * 2**i)


@responses.activate
def test_backoff_grows_exponentially_up_to_cap(monkeypatch):
    # Jitter pinned to its upper bound shows the window: base * 2**n, capped.
    monkeypatch.setattr("tenacity.wait.random.uniform", lambda low, high: high)
    responses.post(URL, json={}, status=502)
    ep, sleep = make(max_retries=5, backoff_base=1.0, backoff_max=6.0)
    with pytest.raises(APIStatusError):
        ep.call({})
    assert sleep.waits == [1.0, 2.0, 4.0, 6.0, 6.0]


@responses.activate
def test_backoff_is_random():
    responses.post(URL, json={}, status=500)
    ep, sleep = make(max_retries=8, backoff_base=1.0, backoff_max=30.0)
    with pytest.raises(APIStatusError):
        ep.call({})
    assert len(set(sleep.waits)) > 1


# -- the policy on its own -----------------------------------------------------------------


def _status(code, retry_after=None):
    return APIStatusError("x", status_code=code, retry_after=retry_after)


@pytest.mark.parametrize("code", sorted(RETRY_STATUSES | {500, 502, 503, 504, 599}))
def test_is_retryable_statuses(code):
    assert is_retryable(_status(code))


@pytest.mark.parametrize("code", [400, 401, 402, 403, 404, 405, 410, 413, 422, 501, 505])
def test_is_not_retryable_statuses(code):
    assert not is_retryable(_status(code))


def test_is_retryable_transport_and_other_errors():
    assert is_retryable(APIConnectionError("x"))
    assert is_retryable(APITimeoutError("x"))
    assert not is_retryable(ValueError("x"))
    assert not is_retryable(KeyError("x"))


def test_policy_retries_a_plain_function():
    sleep = Recorder()
    outcomes = iter([_status(503, retry_after=2.0), _status(429, retry_after=0.5), "done"])

    def attempt():
        value = next(outcomes)
        if isinstance(value, Exception):
            raise value
        return value

    assert retry_policy(max_retries=3, sleep=sleep)(attempt) == "done"
    assert sleep.waits == [2.0, 0.5]


def test_policy_reraises_non_retryable_at_once():
    sleep = Recorder()
    calls = []

    def attempt():
        calls.append(1)
        raise _status(404)

    with pytest.raises(APIStatusError):
        retry_policy(max_retries=3, sleep=sleep)(attempt)
    assert calls == [1]
    assert sleep.waits == []


def test_policy_copies_are_independent():
    policy = retry_policy(max_retries=1, sleep=Recorder())
    first, second = policy.copy(), policy.copy()
    assert first is not second
    assert first(lambda: 1) == 1
    assert second(lambda: 2) == 2


class _capture:
    """Collect records of one logger at DEBUG."""

    def __init__(self, name):
        self.logger = logging.getLogger(name)
        self.records = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append

    def __enter__(self):
        self.old_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old_level)


@pytest.mark.parametrize("status", [501, 505])
def test_unimplemented_5xx_are_not_retried(status):
    from apiexec.errors import APIStatusError
    from apiexec.http.retry import is_retryable

    assert not is_retryable(APIStatusError("x", status_code=status))
    assert is_retryable(APIStatusError("x", status_code=502))


@responses.activate
def test_tls_failures_are_reported_once_not_retried():
    import requests

    from apiexec import APIConnectionError, APIError, Endpoint, EndpointConfig

    responses.add(responses.POST, "https://tls.example/v1/chat", body=requests.exceptions.SSLError("certificate verify failed"))
    sleeps = []
    endpoint = Endpoint(EndpointConfig(provider="t", endpoint="chat", base_url="https://tls.example/v1"), sleep=sleeps.append)
    with pytest.raises(APIError, match="TLS verification failed") as info:
        endpoint.call({"a": 1})
    assert not isinstance(info.value, APIConnectionError)
    assert len(responses.calls) == 1 and sleeps == []
