"""Server signals over loopback: x-should-retry, refused service, retry-after, error bodies, header dialects.

Header vectors are the providers' documented examples (sources beside each one).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from apiexec import APIError, APIStatusError, Endpoint, EndpointConfig, RateLimitError
from apiexec.call_context import call_context
from apiexec.errors import ServiceRefused
from apiexec.http.rate_limit_headers import parse_rate_limit_headers
from tests.helpers import ScriptedServer, http_response

pytestmark = pytest.mark.integration

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
OK = http_response(200, b'{"ok": true}', {"Content-Type": "application/json"})


class Waits(list):
    """Records retry waits instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


def endpoint(server, waits=None, **kw):
    fields = {"provider": "test", "endpoint": "chat/completions", "base_url": f"{server.url}/v1", "max_retries": 2}
    fields.update(kw)
    return Endpoint(EndpointConfig(**fields), sleep=waits if waits is not None else Waits())


def scripted(*answers):
    queue = list(answers)

    def script(conn, req):
        conn.sendall(queue.pop(0) if len(queue) > 1 else queue[0])
        return True

    return ScriptedServer(script)


def error(status, body, headers=None, reason="Error"):
    return http_response(status, json.dumps(body), {"Content-Type": "application/json", **(headers or {})}, reason)


# -- x-should-retry (openai-python _base_client._should_retry) ------------------------------


def test_x_should_retry_false_wins_over_a_retryable_status():
    with scripted(error(500, {}, {"x-should-retry": "false"}), OK) as srv, endpoint(srv) as ep:
        with pytest.raises(APIStatusError) as info:
            ep.call(BODY)
    assert info.value.should_retry is False
    assert len(srv.requests) == 1


def test_x_should_retry_true_wins_over_a_final_status():
    with scripted(error(400, {}, {"x-should-retry": "true"}), OK) as srv, endpoint(srv) as ep:
        assert ep.call(BODY) == {"ok": True}
    assert len(srv.requests) == 2


# -- refused service: never retried; the batch runner stops on it ------------------------------

QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, QUOTA),
        (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
        (403, {"error": {"message": "Country, region, or territory not supported", "type": "forbidden"}}),
        (402, {"error": {"message": "Insufficient credits", "code": 402}}),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
def test_refused_service_raises_service_refused_at_once(status, body, streamed):
    with scripted(error(status, body), OK) as srv, endpoint(srv) as ep:
        with pytest.raises(ServiceRefused) as info:
            list(ep.stream(BODY)) if streamed else ep.call(BODY)
    assert info.value.status_code == status
    assert len(srv.requests) == 1


def test_a_rate_limit_429_is_not_refused_service():
    body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    with scripted(error(429, body, {"retry-after-ms": "10"}), OK) as srv, endpoint(srv) as ep:
        assert ep.call(BODY) == {"ok": True}
    assert len(srv.requests) == 2


# -- retry-after ----------------------------------------------------------------------------


def test_retry_after_beyond_the_cap_fails_at_once_with_the_wait():
    waits = Waits()
    with scripted(error(429, {}, {"retry-after": "120"}), OK) as srv, endpoint(srv, waits, retry_after_cap=60.0) as ep:
        with pytest.raises(RateLimitError) as info:
            ep.call(BODY)
    assert info.value.retry_after == 120.0
    assert "120s" in str(info.value)
    assert waits == [] and len(srv.requests) == 1


def test_retry_after_within_a_raised_cap_is_waited():
    waits = Waits()
    with scripted(error(429, {}, {"retry-after": "120"}), OK) as srv, endpoint(srv, waits, retry_after_cap=300.0) as ep:
        assert ep.call(BODY) == {"ok": True}
    assert waits == [120.0]


def test_retry_after_zero_backs_off_with_jitter():
    waits = Waits()
    with scripted(error(429, {}, {"retry-after": "0"}), error(429, {}, {"retry-after": "0"}), OK) as srv:
        with endpoint(srv, waits, backoff_base=0.5) as ep:
            assert ep.call(BODY) == {"ok": True}
    assert len(waits) == 2 and all(0 <= w <= 1.0 for w in waits)


# -- success statuses that carry an error -----------------------------------------------------


def test_a_200_with_an_error_body_is_an_api_error():
    body = {"error": {"message": "upstream model failed", "code": 502}}
    with scripted(error(200, body, reason="OK"), OK) as srv, endpoint(srv) as ep:
        with pytest.raises(APIError, match="upstream model failed") as info:
            ep.call(BODY)
    assert not isinstance(info.value, APIStatusError)
    assert len(srv.requests) == 1


def test_a_200_with_a_null_error_field_is_success():
    body = {"id": "resp_1", "object": "response", "status": "completed", "error": None}
    with scripted(error(200, body, reason="OK")) as srv, endpoint(srv) as ep:
        assert ep.call(BODY)["id"] == "resp_1"


# -- rate-limit header dialects --------------------------------------------------------------

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _iso(seconds):
    return datetime.fromtimestamp(NOW.timestamp() + seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


DIALECTS = {
    # https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers
    "openai": (
        {"x-ratelimit-limit-requests": "60", "x-ratelimit-limit-tokens": "150000",
         "x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "149984",
         "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"},
        {"limit_requests": 60, "remaining_requests": 59, "reset_requests": 1.0,
         "limit_tokens": 150000, "remaining_tokens": 149984, "reset_tokens": 360.0},
    ),
    # Azure OpenAI may send only the remaining counts; -1 means "not reported" (../shared/provider-facts.md)
    "azure": (
        {"x-ratelimit-remaining-requests": "-1", "x-ratelimit-remaining-tokens": "79820"},
        {"remaining_requests": None, "remaining_tokens": 79820},
    ),
    # https://docs.anthropic.com/en/api/rate-limits#response-headers (resets are RFC 3339)
    "anthropic": (
        {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
         "anthropic-ratelimit-requests-reset": _iso(1),
         "anthropic-ratelimit-input-tokens-limit": "40000", "anthropic-ratelimit-input-tokens-remaining": "39000",
         "anthropic-ratelimit-input-tokens-reset": _iso(2),
         "anthropic-ratelimit-output-tokens-limit": "8000", "anthropic-ratelimit-output-tokens-remaining": "7900",
         "anthropic-ratelimit-output-tokens-reset": _iso(10)},
        {"limit_requests": 50, "remaining_requests": 49, "limit_input_tokens": 40000,
         "remaining_input_tokens": 39000, "limit_output_tokens": 8000, "remaining_output_tokens": 7900,
         "limit_tokens": 8000, "remaining_tokens": 7900},
    ),
    # https://console.groq.com/docs/rate-limits#rate-limit-headers: requests per DAY, tokens per minute
    "groq": (
        {"x-ratelimit-limit-requests": "14400", "x-ratelimit-limit-tokens": "18000",
         "x-ratelimit-remaining-requests": "14370", "x-ratelimit-remaining-tokens": "17997",
         "x-ratelimit-reset-requests": "2m59.56s", "x-ratelimit-reset-tokens": "7.66s"},
        {"limit_requests": None, "limit_requests_day": 14400, "remaining_requests_day": 14370,
         "reset_requests_day": 179.56, "limit_tokens": 18000, "remaining_tokens": 17997, "reset_tokens": 7.66},
    ),
    # https://openrouter.ai/docs/api-reference/limits: reset is a Unix epoch in milliseconds
    "openrouter": (
        {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "19",
         "X-RateLimit-Reset": str(int(NOW.timestamp() * 1000) + 30_000)},
        {"limit_requests": 20, "remaining_requests": 19},
    ),
    # https://inference-docs.cerebras.ai/support/rate-limits#rate-limit-headers: the suffix names the window
    "cerebras": (
        {"x-ratelimit-limit-requests-day": "1000000000", "x-ratelimit-limit-tokens-minute": "1000000000",
         "x-ratelimit-remaining-requests-day": "999997455", "x-ratelimit-remaining-tokens-minute": "999998298",
         "x-ratelimit-reset-requests-day": "33011.382867097855",
         "x-ratelimit-reset-tokens-minute": "11.382867097854614"},
        {"limit_requests_day": 1000000000, "remaining_requests_day": 999997455, "reset_requests_day": 33011.38,
         "limit_tokens": 1000000000, "remaining_tokens": 999998298, "reset_tokens": 11.38, "limit_requests": None},
    ),
}


@pytest.mark.parametrize("provider", sorted(DIALECTS))
def test_each_providers_headers_are_read_in_its_dialect(provider, monkeypatch):
    headers, expected = DIALECTS[provider]
    for name in ("AZURE_OPENAI_API_KEY", "GROQ_API_KEY", "OPENROUTER_API_KEY", "CEREBRAS_API_KEY",
                 "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, "apiexec-test-credential")
    answer = http_response(200, b'{"ok": true}', {"Content-Type": "application/json", **headers})
    seen = []
    with ScriptedServer(lambda conn, req: conn.sendall(answer)) as srv:
        extra = {"base_url": srv.url} if provider == "azure" else {"base_url": f"{srv.url}/v1"}
        with Endpoint.for_provider(provider, "chat", **extra) as ep:
            # What RateLimitedExecutor does with every response: parse the headers it is handed.
            with call_context(observer=lambda status, h: seen.append(parse_rate_limit_headers(h))):
                ep.call(BODY)
    info = seen[0]
    for field, value in expected.items():
        assert getattr(info, field) == (pytest.approx(value, abs=1.5) if isinstance(value, float) else value), field
