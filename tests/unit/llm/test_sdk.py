"""The SDK adapter's pieces on a mock transport and a fake clock (apiexec.llm.sdk).

The loopback tests with the real SDKs are in tests/integration/test_sdk_adapter.py.
"""

from __future__ import annotations

import importlib
import sys

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletion

from apiexec.call_context import call_context
from apiexec.errors import ConfigError, DeadlineExceeded, ExecutorNotRunning
from apiexec.execution.event import ExecutionStatus
from apiexec.llm.sdk import (
    SDKCall,
    http_client,
    httpx_module,
    limited_transport,
    request_body,
    sdk_call,
    sdk_usage_tokens,
)
from apiexec.llm.tokens import estimate_tokens
from tests.helpers import FakeClock

httpx = httpx_module("openai")
URL = "http://api.test/v1/chat/completions"
HEADERS = {"x-request-id": "req_1", "x-ratelimit-remaining-requests": "59", "x-ratelimit-limit-requests": "60"}
REQUEST = {"model": "gpt-4o-mini", "max_tokens": 30, "messages": [{"role": "user", "content": "Hi there"}]}
COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello"}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


class Server:
    """A mock transport's handler that records requests and answers from a script."""

    def __init__(self, *answers):
        self.answers = list(answers) or [(200, COMPLETION)]
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if callable(answer):
            return answer(request)
        status, body = answer
        return httpx.Response(status, json=body, headers=HEADERS)


def client_for(server, **kwargs):
    return http_client("openai", transport=httpx.MockTransport(server), **kwargs)


class Observed:
    def __init__(self):
        self.responses = []

    def __call__(self, status, headers):
        self.responses.append((status, dict(headers)))


# -- the transport ------------------------------------------------------------------


def test_outside_an_executor_requests_just_pass():
    server = Server()
    with client_for(server) as client:
        assert client.post(URL, json=REQUEST).json()["id"] == "chatcmpl-1"
    assert len(server.requests) == 1


def test_every_response_reaches_the_observers_with_its_headers():
    observed = Observed()
    with client_for(Server((429, {"error": {}}), (200, COMPLETION))) as client, call_context(observed) as ctx:
        client.post(URL, json=REQUEST)
        client.post(URL, json=REQUEST)
    assert [status for status, _ in observed.responses] == [429, 200]
    assert observed.responses[0][1]["x-ratelimit-remaining-requests"] == "59"
    assert ctx.attempts == 2 and ctx.request_id == "req_1" and ctx.status_code == 200


def test_the_dialect_is_told_to_the_header_parser():
    from apiexec.http.rate_limit_headers import parse_rate_limit_headers

    seen = []
    transport = limited_transport(httpx.MockTransport(Server()), sdk="openai", dialect="groq")
    with httpx.Client(transport=transport) as client, call_context(lambda s, h: seen.append(h)):
        client.post(URL, json=REQUEST)
    # Groq's request headers count per day: the tag makes the parser say so.
    assert parse_rate_limit_headers(seen[0]).limit_requests_day == 60


def test_only_retries_pass_the_gate_and_a_refusal_sends_nothing():
    server = Server()
    gate_calls = []

    def gate():
        gate_calls.append(len(server.requests))
        return len(gate_calls) < 2  # the second retry is refused (shutdown)

    with client_for(server) as client, call_context(retry_gate=gate):
        client.post(URL, json=REQUEST)  # first attempt: no gate
        client.post(URL, json=REQUEST)  # a retry: the gate lets it go
        with pytest.raises(ExecutorNotRunning, match="shut down before a retry"):
            client.post(URL, json=REQUEST)
    assert gate_calls == [1, 2]
    assert len(server.requests) == 2


def test_attempt_timeouts_are_capped_by_the_deadline():
    clock = FakeClock(100.0)
    server = Server()
    transport = limited_transport(httpx.MockTransport(server), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport, timeout=httpx.Timeout(600, connect=5)) as client:
        with call_context(deadline=102.5, timeout=10.0):
            client.post(URL, json=REQUEST)
        client.post(URL, json=REQUEST)  # no deadline: the client's own timeouts
    assert server.requests[0].extensions["timeout"] == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}
    assert server.requests[1].extensions["timeout"] == {"connect": 5, "read": 600, "write": 600, "pool": 600}


def test_no_attempt_starts_after_the_deadline():
    clock = FakeClock(100.0)
    server = Server()
    transport = limited_transport(httpx.MockTransport(server), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport) as client, call_context(deadline=101.0, timeout=3.0) as ctx:
        client.post(URL, json=REQUEST)
        clock.advance(1.0)
        with pytest.raises(DeadlineExceeded) as caught:
            client.post(URL, json=REQUEST)  # a retry after the SDK's backoff
    assert caught.value.phase == "retry" and caught.value.timeout == 3.0
    assert len(server.requests) == 1 and ctx.attempts == 1

    with httpx.Client(transport=transport) as client, call_context(deadline=100.0, timeout=3.0):
        with pytest.raises(DeadlineExceeded, match="3s passed while connecting"):
            client.post(URL, json=REQUEST)


def test_a_timeout_at_the_deadline_is_the_deadline():
    clock = FakeClock(100.0)

    def slow(request):
        clock.advance(float(request.extensions["timeout"]["read"]))
        raise httpx.ReadTimeout("timed out", request=request)

    transport = limited_transport(httpx.MockTransport(Server(slow)), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport) as client, call_context(deadline=100.5, timeout=0.5):
        with pytest.raises(DeadlineExceeded) as caught:
            client.post(URL, json=REQUEST)
    assert caught.value.phase == "response"
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


def test_a_timeout_before_the_deadline_stays_the_sdks_to_retry():
    def fails(request):
        raise httpx.ConnectTimeout("no route", request=request)

    clock = FakeClock(0.0)
    transport = limited_transport(httpx.MockTransport(Server(fails)), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport) as client, call_context(deadline=50.0, timeout=50.0):
        with pytest.raises(httpx.ConnectTimeout):
            client.post(URL, json=REQUEST)


def test_close_closes_the_inner_transport():
    inner = httpx.MockTransport(Server())
    closed = []
    inner.close = lambda: closed.append(True)
    limited_transport(inner, sdk="openai").close()
    assert closed == [True]
    assert "MockTransport" in repr(limited_transport(inner, sdk="openai", dialect="openai"))


# -- the client -----------------------------------------------------------------------


@pytest.mark.parametrize("sdk", [openai, anthropic])
def test_the_client_has_the_sdks_defaults_and_is_accepted_by_it(sdk):
    client = http_client(sdk)
    assert client.timeout == sdk.DEFAULT_TIMEOUT
    assert client.follow_redirects is True
    assert type(client._transport).__name__ == "LimitedTransport"
    kind = sdk.OpenAI if sdk is openai else sdk.Anthropic
    with kind(api_key="sk-unit", base_url="http://api.test", http_client=client) as sdk_client:
        assert sdk_client._client is client
    assert http_client(sdk, timeout=3.0, follow_redirects=False).timeout == httpx.Timeout(3.0)


def test_mounted_and_proxy_transports_are_wrapped_too(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    own = httpx.MockTransport(Server())
    with http_client("openai", mounts={"http://internal.test": own}) as client:
        mounted = [t for t in client._mounts.values() if t is not None]
    assert len(mounted) >= 2  # ours and the environment's proxy
    assert all(type(t).__name__ == "LimitedTransport" for t in mounted)


def test_the_httpx_module_is_the_one_the_sdk_imports():
    base = importlib.import_module("openai._base_client")
    expected = getattr(base, "httpx2", None) or base.httpx
    assert httpx_module(openai) is expected
    assert httpx_module(openai.OpenAI) is expected
    assert httpx_module("openai") is expected


def test_without_httpx_the_error_says_what_to_install(monkeypatch):
    for name in ("httpx", "httpx2"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    for name in ("openai", "anthropic"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # no SDK imported either
    with pytest.raises(ImportError, match=r"pip install 'apiexec\[sdk\]'"):
        httpx_module()
    with pytest.raises(ImportError, match="apiexec"):
        httpx_module("not_an_sdk")


# -- the event ----------------------------------------------------------------------------


def test_tokens_are_estimated_from_the_request_body():
    call = sdk_call(dict, **REQUEST, extra_headers={"x-a": "1"}, timeout=5.0, temperature=openai.NOT_GIVEN)
    assert call.required_tokens == estimate_tokens(REQUEST)
    assert SDKCall(dict, REQUEST, tokens=7).required_tokens == 7
    assert SDKCall(dict, REQUEST, requires_tokens=False).required_tokens is None
    assert call.event_type == "sdk_call" and call.timeout is None
    assert SDKCall(dict, REQUEST, timeout=2.5).timeout == 2.5


def test_request_body_leaves_out_options_and_merges_extra_body():
    body = request_body({**REQUEST, "extra_query": {"a": 1}, "extra_body": {"max_tokens": 90},
                         "top_p": openai.omit, "stop": anthropic.NOT_GIVEN})
    assert body == {**REQUEST, "max_tokens": 90}


def test_a_bad_output_limit_is_a_clear_error():
    call = sdk_call(dict, **{**REQUEST, "max_tokens": -1})
    with pytest.raises(ConfigError, match="max_tokens"):
        _ = call.required_tokens


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="fn must be callable"):
        SDKCall("create", REQUEST)
    with pytest.raises(TypeError, match="request must be a mapping"):
        SDKCall(dict, [("model", "m")])
    with pytest.raises(ConfigError, match="timeout"):
        SDKCall(dict, REQUEST, timeout=-1)


def test_used_tokens_reads_the_sdks_usage():
    completion = ChatCompletion.model_validate(COMPLETION)
    call = SDKCall(lambda **_: completion, REQUEST)
    assert call.used_tokens is None  # not run yet
    call.invoke()
    assert call.used_tokens == 11
    message = anthropic.types.Message.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "Hi"}], "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 100},
    })
    assert sdk_usage_tokens(message) == 125
    assert sdk_usage_tokens(object()) is None
    assert sdk_usage_tokens(None) is None


def test_used_tokens_of_a_raw_response_parses_it():
    class Raw:
        def parse(self):
            return ChatCompletion.model_validate(COMPLETION)

    class Broken:
        def parse(self):
            raise ValueError("not JSON")

    assert sdk_usage_tokens(Raw()) == 11
    assert sdk_usage_tokens(Broken()) is None


def test_a_failed_call_reports_no_usage():
    def fails(**_):
        raise openai.APIConnectionError(request=httpx.Request("POST", URL))

    call = SDKCall(fails, REQUEST)
    call.invoke()
    assert call.execution.status is ExecutionStatus.FAILED and call.used_tokens is None
    assert isinstance(call.execution.exception, openai.APIConnectionError)


def test_the_executors_error_passes_an_sdks_retry_loop():
    server = Server()
    attempts = []

    def sdk_like(**request):
        # Like an SDK: every exception is retried, then wrapped.
        with client_for(server) as client:
            for _ in range(3):
                attempts.append(1)
                try:
                    return client.post(URL, json=request).json()
                except Exception as exc:
                    last = exc
            raise RuntimeError("Connection error.") from last

    call = SDKCall(sdk_like, REQUEST)
    with call_context(retry_gate=lambda: False) as ctx:
        ctx.attempts = 1  # the first attempt was made: the next one is a retry
        call.invoke()
    assert isinstance(call.execution.exception, ExecutorNotRunning)
    assert attempts == [1] and server.requests == []


def test_our_error_wrapped_by_an_sdk_is_unwrapped():
    def wraps(**_):
        try:
            raise DeadlineExceeded("response", 2.0)
        except DeadlineExceeded as exc:
            raise openai.APIConnectionError(request=httpx.Request("POST", URL)) from exc

    call = SDKCall(wraps, REQUEST)
    call.invoke()
    assert isinstance(call.execution.exception, DeadlineExceeded)
    assert call.execution.error == "DeadlineExceeded: call deadline of 2s passed while reading the response"


def test_our_error_deep_in_a_cause_chain_is_found():
    def wraps(**_):
        try:
            try:
                raise ExecutorNotRunning("the executor shut down before a retry could be sent")
            except ExecutorNotRunning as ours:
                raise ValueError("transport failed") from ours
        except ValueError as middle:
            raise RuntimeError("Connection error.") from middle

    call = SDKCall(wraps, REQUEST)
    call.invoke()
    assert isinstance(call.execution.exception, ExecutorNotRunning)


def test_other_errors_are_left_as_they_are():
    def fails(**_):
        raise ValueError("bad request")

    call = SDKCall(fails, REQUEST)
    call.invoke()
    assert isinstance(call.execution.exception, ValueError)


# -- response bodies under a deadline ---------------------------------------------------------


class Trickle(httpx.SyncByteStream):
    """A body that moves the fake clock on by ``step`` before each chunk."""

    def __init__(self, clock, chunks, step, fail_with=None):
        self.clock, self.chunks, self.step, self.fail_with = clock, chunks, step, fail_with
        self.closed = False

    def __iter__(self):
        for chunk in self.chunks:
            self.clock.advance(self.step)
            yield chunk
        if self.fail_with is not None:
            self.clock.advance(self.step)  # the read blocked this long, then timed out
            raise self.fail_with

    def close(self):
        self.closed = True


@pytest.mark.parametrize(("content_type", "phase"), [("application/json", "response"), ("text/event-stream", "stream")])
def test_a_body_trickling_past_the_deadline_ends_the_call(content_type, phase):
    clock = FakeClock(0.0)
    body = Trickle(clock, [b"{", b'"a"', b":", b"1}"], step=0.4)

    def answer(request):
        return httpx.Response(200, headers={"content-type": content_type}, stream=body)

    transport = limited_transport(httpx.MockTransport(answer), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport) as client, call_context(deadline=1.0, timeout=1.0):
        with pytest.raises(DeadlineExceeded) as caught:
            client.post(URL, json=REQUEST)
    assert caught.value.phase == phase
    assert clock.now() == pytest.approx(1.2)  # the third chunk came after the deadline: no fourth
    assert body.closed


def test_a_body_within_the_deadline_is_untouched():
    clock = FakeClock(0.0)

    def answer(request):
        return httpx.Response(200, stream=Trickle(clock, [b'{"a":', b" 1}"], step=0.1))

    transport = limited_transport(httpx.MockTransport(answer), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport) as client, call_context(deadline=1.0, timeout=1.0):
        assert client.post(URL, json=REQUEST).json() == {"a": 1}


@pytest.mark.parametrize(("deadline", "expected"), [(0.5, DeadlineExceeded), (5.0, httpx.ReadTimeout)])
def test_a_read_timeout_in_the_body_is_the_deadline_only_once_it_passed(deadline, expected):
    clock = FakeClock(0.0)

    def answer(request):
        return httpx.Response(200, stream=Trickle(clock, [], step=1.0, fail_with=httpx.ReadTimeout("slow")))

    transport = limited_transport(httpx.MockTransport(answer), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport) as client, call_context(deadline=deadline, timeout=deadline):
        with pytest.raises(expected) as caught:
            client.post(URL, json=REQUEST)
    if expected is DeadlineExceeded:
        assert caught.value.phase == "response"
        assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


def test_a_connect_timeout_at_the_deadline_says_connecting():
    clock = FakeClock(0.0)

    def unreachable(request):
        clock.advance(1.0)
        raise httpx.ConnectTimeout("no route", request=request)

    transport = limited_transport(httpx.MockTransport(unreachable), sdk="openai", waiter=clock)
    with httpx.Client(transport=transport) as client, call_context(deadline=1.0, timeout=1.0):
        with pytest.raises(DeadlineExceeded, match="1s passed while connecting"):
            client.post(URL, json=REQUEST)


def test_a_connection_error_under_a_deadline_stays_the_sdks():
    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    transport = limited_transport(httpx.MockTransport(refused), sdk="openai", waiter=FakeClock(0.0))
    with httpx.Client(transport=transport) as client, call_context(deadline=1.0, timeout=1.0):
        with pytest.raises(httpx.ConnectError):
            client.post(URL, json=REQUEST)


def test_a_client_without_httpx_transports_is_refused():
    from apiexec.llm.sdk_transport import _wrap_transports

    with pytest.raises(TypeError, match="use limited_transport"):
        _wrap_transports(object(), "openai", None)


def test_a_body_ending_in_sdk_call_is_not_left_to_the_sdks_retries():
    clock = FakeClock(0.0)
    attempts = []

    def answer(request):
        attempts.append(1)
        return httpx.Response(200, stream=Trickle(clock, [b"{", b"}"], step=2.0))

    transport = limited_transport(httpx.MockTransport(answer), sdk="openai", waiter=clock)

    def sdk_like(**request):
        with httpx.Client(transport=transport) as client:
            for _ in range(3):
                try:
                    return client.post(URL, json=request).json()
                except Exception:  # an SDK retries everything it catches
                    continue
            raise RuntimeError("gave up")

    call = SDKCall(sdk_like, REQUEST)
    with call_context(deadline=1.0, timeout=1.0):
        call.invoke()
    assert isinstance(call.execution.exception, DeadlineExceeded)
    assert attempts == [1]


def test_without_an_sdk_named_the_imported_sdk_decides(monkeypatch):
    fake_httpx = type(sys)("fake_httpx")
    fake_base = type(sys)("fake_sdk_base")
    fake_base.httpx = fake_httpx
    monkeypatch.setitem(sys.modules, "openai", type(sys)("openai"))
    monkeypatch.setitem(sys.modules, "openai._base_client", fake_base)
    assert httpx_module() is fake_httpx  # e.g. an SDK still on legacy httpx
    monkeypatch.delitem(sys.modules, "openai")
    monkeypatch.delitem(sys.modules, "anthropic", raising=False)
    assert httpx_module().__name__ in ("httpx2", "httpx")
