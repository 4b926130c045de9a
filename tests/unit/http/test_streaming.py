"""Streaming: the SSE parser, assembly, Endpoint.stream, streamed APICalling in executors."""

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest.mock import Mock

import pytest
import responses

from apiexec import (
    APICalling,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Endpoint,
    EndpointConfig,
    ExecutionStatus,
    Executor,
    RateLimitedExecutor,
    RateLimitError,
)
from apiexec.call_context import call_context
from apiexec.http import event_stream as event_stream_module
from apiexec.http.sse import DONE, ServerSentEvent, iter_events, iter_lines, iter_sse
from apiexec.llm.stream_assembly import assemble, assemble_anthropic_message, assemble_chat_completion
from apiexec.mock.server import MockServer, MockServerConfig

KEY = "apiexec-test-credential-0123456789"

# -- exact samples, as the providers document them ---------------------------------------------

OPENAI_SAMPLE = (
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    b'"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    b'"delta":{"content":" w\xc3\xb6rld"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    b'"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}\n\n'
    b"data: [DONE]\n\n"
)

ANTHROPIC_SAMPLE = (
    b"event: message_start\n"
    b'data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", '
    b'"type": "message", "role": "assistant", "content": [], "model": "claude-3-5-sonnet-20241022", '
    b'"stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type": "content_block_stop", "index": 0}\n\n'
    b"event: message_delta\n"
    b'data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, '
    b'"usage": {"output_tokens": 15}}\n\n'
    b"event: message_stop\n"
    b'data: {"type": "message_stop"}\n\n'
)

ANTHROPIC_TYPES = [
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def split_every(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


def json_events(raw):
    """Parsed data of each event up to [DONE], as Endpoint.stream yields them."""
    out = []
    for event in iter_sse(raw):
        if event.data == DONE:
            break
        out.append(json.loads(event.data))
    return out


# -- the SSE parser ------------------------------------------------------------------------------


def test_openai_sample_parses_to_chunks_and_done():
    events = list(iter_sse([OPENAI_SAMPLE]))
    assert len(events) == 6
    assert events[-1] == ServerSentEvent(data="[DONE]", event="message")
    assert all(e.event == "message" for e in events)
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:4]] == ["", "Hello", " wörld", None]
    assert chunks[-1]["usage"]["total_tokens"] == 12


def test_anthropic_sample_keeps_event_names():
    events = list(iter_sse([ANTHROPIC_SAMPLE]))
    assert [e.event for e in events] == ANTHROPIC_TYPES
    assert [json.loads(e.data)["type"] for e in events] == ANTHROPIC_TYPES


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
@pytest.mark.parametrize("sample", [OPENAI_SAMPLE, ANTHROPIC_SAMPLE], ids=["openai", "anthropic"])
def test_any_chunking_gives_the_same_events(sample, size):
    """Events split anywhere (inside a line, a CRLF, a UTF-8 character) parse the same."""
    whole = list(iter_sse([sample]))
    assert list(iter_sse(split_every(sample, size))) == whole
    crlf = sample.replace(b"\n", b"\r\n")
    assert list(iter_sse(split_every(crlf, size))) == whole
    cr = sample.replace(b"\n", b"\r")
    assert list(iter_sse(split_every(cr, size))) == whole


def test_crlf_split_between_chunks_is_one_line_end():
    assert list(iter_lines([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])) == ["data: a", "data: b", ""]
    assert [e.data for e in iter_sse([b"data: a\r", b"\n\r", b"\n"])] == ["a"]


def test_lone_cr_at_end_is_a_line_end():
    assert list(iter_lines([b"data: a\r"])) == ["data: a"]
    assert [e.data for e in iter_sse([b"data: a\n\r"])] == ["a"]


def test_comments_are_ignored():
    raw = b": keep-alive\n\n:\ndata: 1\n: between\ndata: 2\n\n: OPENROUTER PROCESSING\n\ndata: 3\n\n"
    assert [e.data for e in iter_sse([raw])] == ["1\n2", "3"]


def test_multi_line_data_is_joined_with_newlines():
    raw = b'data: {"a":\ndata:  1}\ndata\ndata:x\n\n'
    (event,) = iter_sse([raw])
    assert event.data == '{"a":\n 1}\n\nx'
    assert json.loads(event.data.replace("\nx", "")) == {"a": 1}


def test_blank_lines_alone_dispatch_nothing_and_event_resets():
    raw = b"\n\n\nevent: first\n\n" + b"data: a\n\n" + b"event: named\ndata: b\n\n" + b"data: c\n\n"
    assert [(e.event, e.data) for e in iter_sse([raw])] == [("message", "a"), ("named", "b"), ("message", "c")]


def test_empty_data_field_dispatches_empty_string():
    assert [e.data for e in iter_sse([b"data:\n\n"])] == [""]


def test_stream_without_done_ends_after_last_event():
    sample = OPENAI_SAMPLE.replace(b"data: [DONE]\n\n", b"")
    events = list(iter_sse([sample]))
    assert len(events) == 5
    assert all(e.data != DONE for e in events)


def test_unterminated_last_event_is_dropped():
    assert [e.data for e in iter_sse([b"data: 1\n\ndata: 2\n"])] == ["1"]
    assert [e.data for e in iter_sse([b"data: 1\n\ndata: {\"trunc"])] == ["1"]


def test_id_carries_over_retry_is_per_event_and_unknown_fields_ignored():
    raw = b"id: 7\nretry: 1500\ndata: a\n\nfoo: bar\ndata: b\n\nid\nretry: soon\ndata: c\n\n"
    events = list(iter_sse([raw]))
    assert [(e.data, e.id, e.retry) for e in events] == [("a", "7", 1500), ("b", "7", None), ("c", "", None)]


def test_bom_and_invalid_utf8():
    events = list(iter_sse([b"\xef\xbb", b"\xbfdata: \xff ok\n\n"]))
    assert [e.data for e in events] == ["\ufffd ok"]


def test_iter_events_accepts_lines_with_or_without_terminators():
    lines = [b"event: e\r\n", "data: 1\n", "data: 2", b"", "data: 3\r", "\n"]
    assert [(e.event, e.data) for e in iter_events(lines)] == [("e", "1\n2"), ("message", "3")]


def test_str_chunks():
    assert [e.data for e in iter_sse(["da", "ta: é\n", "\n"])] == ["é"]


# -- assembly -----------------------------------------------------------------------------------


def test_assemble_openai_chat_completion():
    message = assemble(json_events([OPENAI_SAMPLE]))
    assert message == {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello wörld"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        "system_fingerprint": "fp_44709d6fcb",
    }


def test_assemble_openai_without_usage_has_no_usage():
    chunks = json_events([OPENAI_SAMPLE])[:-1]
    assert "usage" not in assemble_chat_completion(chunks)


def test_assemble_openai_tool_calls_and_several_choices():
    def chunk(index, delta, finish=None):
        return {"id": "c", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [
        chunk(0, {"role": "assistant", "content": None, "tool_calls": [call]}),
        chunk(1, {"role": "assistant", "content": "B"}),
        chunk(0, {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk(0, {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk(1, {"content": "ye"}, "stop"),
        chunk(0, {}, "tool_calls"),
    ]
    choices = assemble(chunks)["choices"]
    assert choices[0]["finish_reason"] == "tool_calls"
    assert choices[0]["message"]["content"] is None
    (tool_call,) = choices[0]["message"]["tool_calls"]
    assert tool_call == {"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert choices[1] == {"index": 1, "message": {"role": "assistant", "content": "Bye"}, "finish_reason": "stop"}


def test_assemble_anthropic_message():
    message = assemble(json_events([ANTHROPIC_SAMPLE]))
    assert message == {
        "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-sonnet-20241022",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 15},
    }


def test_assemble_anthropic_tool_use_and_thinking():
    start = {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
             "content": [], "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}}
    events = [
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ncisco"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 89}},
        {"type": "message_stop"},
    ]
    message = assemble_anthropic_message(events)
    assert message["content"] == [
        {"type": "thinking", "thinking": "Hmm", "signature": "sig"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "San Francisco"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 5, "output_tokens": 89}


def test_assemble_responses_api_and_unknown_shapes():
    final = {"id": "resp_1", "object": "response", "usage": {"total_tokens": 3}}
    events = [{"type": "response.created", "response": {"id": "resp_1"}},
              {"type": "response.output_text.delta", "delta": "x"},
              {"type": "response.completed", "response": final}]
    assert assemble(events) == final
    assert assemble([{"foo": 1}]) == [{"foo": 1}]
    assert assemble([]) == []


# -- Endpoint.stream against the mock server ------------------------------------------------------

CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "Tell me something about streams"}]}
ANTHROPIC_BODY = {"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello there"}]}


def endpoint_for(url, path="chat/completions", **kw):
    config = {"provider": "test", "endpoint": path, "base_url": f"{url}/v1", "max_retries": 2,
              "backoff_base": 0.01, "backoff_max": 0.05}
    config.update(kw)
    return Endpoint(EndpointConfig(**config))


def content_of(chunks):
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.fixture
def server():
    with MockServer(MockServerConfig(record_bodies=True)) as srv:
        yield srv


@pytest.mark.integration
def test_chat_stream_joins_to_the_non_streamed_content(server):
    body = dict(CHAT_BODY)
    with endpoint_for(server.url) as ep:
        chunks = list(ep.stream(body))
        whole = ep.call(body)
    assert len(chunks) > 3
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert content_of(chunks) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert body == CHAT_BODY  # the caller's dict is not touched
    sent = json.loads(server.stats.bodies[0])
    assert sent == {**CHAT_BODY, "stream": True}
    assert server.stats.connections == 1


@pytest.mark.integration
def test_chat_stream_with_usage_assembles_like_call(server):
    body = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    with endpoint_for(server.url) as ep:
        assembled = assemble(ep.stream(body))
        whole = ep.call(CHAT_BODY)
    for field in ("role", "content"):  # a whole message also carries refusal/annotations
        assert assembled["choices"][0]["message"][field] == whole["choices"][0]["message"][field]
    assert assembled["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert assembled["usage"] == whole["usage"]


@pytest.mark.integration
def test_anthropic_messages_stream(server):
    with endpoint_for(server.url, "messages", auth_type="x-api-key", api_key=KEY) as ep:
        events = list(ep.stream(ANTHROPIC_BODY))
        whole = ep.call(ANTHROPIC_BODY)
    types = [e["type"] for e in events if e["type"] != "ping"]  # Anthropic streams may carry pings anywhere
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    message = assemble(events)
    assert message["content"] == whole["content"]
    assert message["stop_reason"] == whole["stop_reason"]
    assert message["usage"] == whole["usage"]


def record_responses(ep):
    """Wrap the endpoint's session so the test sees every response it got."""
    seen = []
    session = ep._session()
    original = session.request

    def request(*args, **kwargs):
        response = original(*args, **kwargs)
        seen.append(response)
        return response

    session.request = request
    return seen


@pytest.mark.integration
def test_early_break_closes_the_response_and_keeps_the_connection(server):
    with endpoint_for(server.url) as ep:
        seen = record_responses(ep)
        stream = ep.stream(CHAT_BODY)
        first = next(stream)
        assert first["choices"][0]["delta"]["role"] == "assistant"
        stream.close()
        assert seen[0].raw.closed
        assert seen[0].raw.connection is None  # handed back to the pool
        for _chunk in ep.stream(CHAT_BODY):
            break
        assert ep.call(CHAT_BODY)["object"] == "chat.completion"
        assert len(list(ep.stream(CHAT_BODY))) > 3
    assert all(r.raw.closed for r in seen)
    assert server.stats.connections == 1
    assert server.stats.requests == 4


@pytest.mark.integration
def test_429_before_the_stream_is_retried_after_retry_after(server):
    server.script(["429:50"])
    seen = []
    with endpoint_for(server.url) as ep, call_context(lambda status, headers: seen.append(status)) as ctx:
        start = time.monotonic()
        chunks = list(ep.stream(CHAT_BODY))
        elapsed = time.monotonic() - start
    assert content_of(chunks).startswith("mock reply to:")
    assert ctx.attempts == 2
    assert seen == [429, 200]
    assert elapsed >= 0.045
    assert server.stats.by_status == Counter({429: 1, 200: 1})


@pytest.mark.integration
def test_500_after_max_retries_raises_status_error(server):
    server.script(["500"] * 3)
    sleep = Mock()
    ep = Endpoint(endpoint_for(server.url).config, sleep=sleep)
    with ep, call_context() as ctx, pytest.raises(APIStatusError) as info:
        list(ep.stream(CHAT_BODY))
    assert info.value.status_code == 500
    assert ctx.attempts == 3
    assert sleep.call_count == 2
    assert server.stats.by_status == Counter({500: 3})


@pytest.mark.integration
def test_400_is_not_retried_and_stream_is_lazy(server):
    with endpoint_for(server.url) as ep:
        stream = ep.stream({"model": "m"})  # no messages: 400
        assert server.stats.requests == 0  # nothing is sent before the first next()
        with pytest.raises(APIStatusError) as info:
            next(stream)
    assert info.value.status_code == 400
    assert server.stats.requests == 1


@pytest.mark.integration
def test_429_after_retries_is_rate_limit_error_without_credentials(server):
    server.script(["429:10"] * 3)
    with endpoint_for(server.url, api_key=KEY) as ep, pytest.raises(RateLimitError) as info:
        list(ep.stream(CHAT_BODY))
    assert info.value.retry_after == pytest.approx(0.01)
    assert KEY not in str(info.value) and KEY not in repr(info.value)


# -- faults the mock server cannot make: a tiny scripted SSE server -------------------------------


def chunk_event(text):
    body = {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections += 1

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        plan = self.server.plan.pop(0) if self.server.plan else "ok"
        self.server.requests.append(plan)
        if plan == "status_cut":
            return self._status_cut()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if plan == "plain_slow":
            return self._plain_slow()
        if plan == "plain_cut":
            return self._plain_cut()
        if plan == "gzip_garbage":
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if plan == "cut_before":
            return self._cut()
        if plan == "gzip_garbage":
            self._chunk(b"this is not gzip")
            return self.wfile.write(b"0\r\n\r\n")
        self._chunk(chunk_event("a"))
        self._chunk(chunk_event("b"))
        if plan == "cut_after":
            return self._cut()
        if plan == "slow":
            self.server.release.wait(10)
        if plan == "flood":
            return self._flood()
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _plain_slow(self):
        """No chunked encoding: the body ends when the connection closes."""
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(chunk_event("a") + chunk_event("b"))
        self.wfile.flush()
        self.server.release.wait(10)
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _plain_cut(self):
        """Content-Length promises more than is sent before the connection drops."""
        self.send_header("Content-Length", "10000")
        self.end_headers()
        self.wfile.write(chunk_event("a") + chunk_event("b"))
        self._cut()

    def _status_cut(self):
        """A 503 whose error body breaks off half-way."""
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b'{"error": {"mess')
        self._cut()

    def _flood(self):
        """Events as fast as the client takes them, until it hangs up."""
        event = chunk_event("x" * 16_000)
        while not self.server.release.is_set():
            self._chunk(event)

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _cut(self):
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, plan):
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.plan = list(plan)
        self.requests = []
        self.connections = 0
        self.release = threading.Event()

    def handle_error(self, request, client_address):
        pass  # the client hung up on purpose

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def scripted():
    servers = []

    def start(*plan):
        srv = _ScriptedServer(plan)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.mark.integration
def test_broken_connection_mid_stream_raises_and_is_not_retried(scripted):
    srv = scripted("cut_after", "ok")
    got = []
    with endpoint_for(srv.url) as ep, call_context() as ctx:
        with pytest.raises(APIConnectionError):
            for chunk in ep.stream(CHAT_BODY):
                got.append(chunk)
    assert content_of(got) == "ab"
    assert ctx.attempts == 1
    assert srv.requests == ["cut_after"]


@pytest.mark.integration
def test_broken_connection_before_the_first_event_is_retried(scripted):
    srv = scripted("cut_before", "ok")
    with endpoint_for(srv.url) as ep, call_context() as ctx:
        chunks = list(ep.stream(CHAT_BODY))
    assert content_of(chunks) == "ab"
    assert ctx.attempts == 2
    assert srv.requests == ["cut_before", "ok"]


@pytest.mark.integration
def test_early_break_does_not_wait_for_a_server_still_generating(scripted):
    srv = scripted("slow", "ok")
    with endpoint_for(srv.url) as ep:
        start = time.monotonic()
        for _chunk in ep.stream(CHAT_BODY):
            break
        assert time.monotonic() - start < 0.5  # drain budget is 0.1 s
        assert content_of(ep.stream(CHAT_BODY)) == "ab"
    assert srv.connections == 2  # the cut-off connection was closed, not reused


@pytest.mark.integration
def test_stream_without_chunked_encoding_is_read_as_it_arrives(scripted):
    srv = scripted("plain_slow", "plain_slow")
    with endpoint_for(srv.url) as ep:
        start = time.monotonic()
        stream = ep.stream(CHAT_BODY)
        first, second = next(stream), next(stream)  # while the server still holds the rest
        assert time.monotonic() - start < 0.5
        assert content_of([first, second]) == "ab"
        stream.close()
        assert time.monotonic() - start < 0.8
        srv.release.set()
        assert content_of(ep.stream(CHAT_BODY)) == "ab"
    assert srv.connections == 2


@pytest.mark.integration
@pytest.mark.parametrize("plan", ["slow", "plain_slow"], ids=["chunked", "not-chunked"])
def test_server_silent_mid_stream_past_the_read_timeout_raises_timeout(scripted, plan):
    srv = scripted(plan)
    got = []
    with endpoint_for(srv.url, timeout=0.2) as ep, call_context() as ctx, pytest.raises(APITimeoutError):
        for chunk in ep.stream(CHAT_BODY):
            got.append(chunk)
    assert content_of(got) == "ab"
    assert ctx.attempts == 1  # events were seen: not retried


@pytest.mark.integration
def test_connection_dropped_mid_stream_without_chunked_encoding_raises(scripted):
    srv = scripted("plain_cut", "ok")
    got = []
    broke = pytest.raises(APIConnectionError, match=r"the stream broke \(ProtocolError\)$")
    with endpoint_for(srv.url) as ep, call_context() as ctx, broke as info:
        for chunk in ep.stream(CHAT_BODY):
            got.append(chunk)
    assert not isinstance(info.value, APITimeoutError)
    assert content_of(got) == "ab"
    assert ctx.attempts == 1
    assert srv.requests == ["plain_cut"]


@pytest.mark.integration
def test_error_status_whose_body_breaks_is_retried_like_a_broken_connection(scripted):
    srv = scripted("status_cut", "ok")
    with endpoint_for(srv.url) as ep, call_context() as ctx:
        assert content_of(ep.stream(CHAT_BODY)) == "ab"
    assert ctx.attempts == 2
    assert srv.requests == ["status_cut", "ok"]


@pytest.mark.integration
def test_error_status_whose_body_breaks_raises_connection_error_and_closes(scripted):
    srv = scripted("status_cut")
    broke = pytest.raises(APIConnectionError, match=r"connection failed \(ChunkedEncodingError\)$")
    with endpoint_for(srv.url, max_retries=0) as ep, broke:
        seen = record_responses(ep)
        next(ep.stream(CHAT_BODY))
    assert seen[0].status_code == 503
    assert seen[0].raw.closed


@pytest.mark.integration
def test_undecodable_stream_is_a_broken_stream_and_retried(scripted):
    # requests raises ContentDecodingError, which is not one of its connection errors.
    srv = scripted("gzip_garbage", "gzip_garbage", "ok")
    broke = pytest.raises(APIConnectionError, match=r"the stream broke \(ContentDecodingError\)$")
    with endpoint_for(srv.url, max_retries=0) as ep, broke:
        list(ep.stream(CHAT_BODY))
    with endpoint_for(srv.url, max_retries=1) as ep, call_context() as ctx:
        assert content_of(ep.stream(CHAT_BODY)) == "ab"
    assert ctx.attempts == 2
    assert srv.requests == ["gzip_garbage", "gzip_garbage", "ok"]


@pytest.mark.integration
def test_early_close_stops_draining_after_the_byte_budget(scripted, monkeypatch):
    """A server still pouring out events is cut off after STREAM_DRAIN_BYTES, whatever the time left."""
    monkeypatch.setattr(event_stream_module, "STREAM_DRAIN_TIMEOUT", 10.0)
    body_chunks, received = event_stream_module.body_chunks, []

    def counted(response):
        for chunk in body_chunks(response):
            received.append(len(chunk))
            yield chunk

    monkeypatch.setattr(event_stream_module, "body_chunks", counted)
    srv = scripted("flood", "ok")
    with endpoint_for(srv.url) as ep:
        seen = record_responses(ep)
        stream = ep.stream(CHAT_BODY)
        assert content_of([next(stream)]) == "a"
        start = time.monotonic()
        stream.close()
        assert time.monotonic() - start < 1.0
        assert seen[0].raw.closed
        # the budget, plus at most the chunk that crossed it (events are 16 kB) and what came before
        assert event_stream_module.STREAM_DRAIN_BYTES < sum(received) < event_stream_module.STREAM_DRAIN_BYTES + 40_000
        assert content_of(ep.stream(CHAT_BODY)) == "ab"
    assert srv.connections == 2  # the cut-off connection was closed, not reused


@pytest.mark.integration
def test_early_close_stops_draining_at_the_deadline_while_events_keep_coming(scripted, monkeypatch):
    monkeypatch.setattr(event_stream_module, "STREAM_DRAIN_BYTES", 10**12)
    srv = scripted("flood", "ok")
    # Loopback floods 64 MiB (the default body cap, which also ends a drain) within the drain time.
    with endpoint_for(srv.url, max_body_bytes=1 << 40) as ep:
        stream = ep.stream(CHAT_BODY)
        assert content_of([next(stream)]) == "a"
        start = time.monotonic()
        stream.close()
        elapsed = time.monotonic() - start
        assert event_stream_module.STREAM_DRAIN_TIMEOUT <= elapsed < 0.5  # it kept reading, up to the deadline
        assert content_of(ep.stream(CHAT_BODY)) == "ab"
    assert srv.connections == 2


# -- error events and odd answers (no network: `responses`) ---------------------------------------

URL = "https://api.example.com/v1/chat/completions"


def mocked_endpoint(**kw):
    config = {"provider": "test", "endpoint": "chat/completions", "base_url": "https://api.example.com/v1",
              "api_key": KEY, "max_retries": 0}
    config.update(kw)
    return Endpoint(EndpointConfig(**config), sleep=Mock())


@responses.activate
def test_request_headers_and_body():
    responses.post(URL, body=OPENAI_SAMPLE, content_type="text/event-stream")
    chunks = list(mocked_endpoint().stream(CHAT_BODY, headers={"X-Trace": "t"}))
    assert len(chunks) == 5
    request = responses.calls[0].request
    assert json.loads(request.body) == {**CHAT_BODY, "stream": True}
    assert request.headers["Accept"] == "text/event-stream"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["X-Trace"] == "t"


@responses.activate
@pytest.mark.parametrize(
    "raw",
    [
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n',
        b'data: {"error": {"message": "bad things", "type": "server_error"}}\n\n',
    ],
    ids=["anthropic", "openai"],
)
def test_error_event_raises_api_error(raw):
    responses.post(URL, body=chunk_event("a") + raw + b"data: [DONE]\n\n", content_type="text/event-stream")
    got = []
    with pytest.raises(APIError) as info:
        for chunk in mocked_endpoint().stream(CHAT_BODY):
            got.append(chunk)
    assert len(got) == 1
    assert not isinstance(info.value, APIStatusError)
    assert "reported an error" in str(info.value)
    assert "Overloaded" in str(info.value) or "bad things" in str(info.value)


@responses.activate
def test_error_event_never_shows_the_key():
    raw = b'data: {"error": {"message": "invalid key ' + KEY.encode() + b'"}}\n\n'
    responses.post(URL, body=raw, content_type="text/event-stream")
    with pytest.raises(APIError) as info:
        list(mocked_endpoint().stream(CHAT_BODY))
    assert KEY not in str(info.value)
    assert "***" in str(info.value)


@responses.activate
def test_non_json_event_and_json_answer_raise_api_error():
    responses.post(URL, body=b"data: <html>\n\n", content_type="text/event-stream")
    responses.post(URL, json={"object": "chat.completion"})
    ep = mocked_endpoint()
    with pytest.raises(APIError, match="not JSON"):
        list(ep.stream(CHAT_BODY))
    with pytest.raises(APIError, match="not an event stream"):
        list(ep.stream(CHAT_BODY))


@responses.activate
@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b"42", b"null"], ids=["array", "string", "number", "null"])
def test_event_that_is_json_but_not_an_object_raises_api_error(data):
    responses.post(URL, body=chunk_event("a") + b"data: " + data + b"\n\n" + b"data: [DONE]\n\n",
                   content_type="text/event-stream")
    got = []
    with pytest.raises(APIError, match="an event of the stream is not a JSON object$") as info:
        for chunk in mocked_endpoint().stream(CHAT_BODY):
            got.append(chunk)
    assert not isinstance(info.value, APIConnectionError)
    assert content_of(got) == "a"
    assert info.value.url == URL


@responses.activate
def test_event_iterator_stays_finished_after_its_end_and_after_close():
    """Once ended or closed, the events keep raising StopIteration; a released response is never read."""
    responses.post(URL, body=OPENAI_SAMPLE, content_type="text/event-stream")
    ep = mocked_endpoint()
    headers = ep._headers(None)
    events, first = ep._open_stream(CHAT_BODY, headers)
    assert len([first, *events]) == 5
    assert list(events) == []
    events.close()
    events, first = ep._open_stream(CHAT_BODY, headers)
    events.close()
    with pytest.raises(StopIteration):
        next(events)
    events.close()  # safe twice


@responses.activate
def test_anthropic_stream_without_done_and_empty_stream():
    responses.post(URL, body=ANTHROPIC_SAMPLE, content_type="text/event-stream")
    responses.post(URL, body=b": just a comment\n\ndata: [DONE]\n\n", content_type="text/event-stream")
    ep = mocked_endpoint()
    assert [e["type"] for e in ep.stream(CHAT_BODY)] == ANTHROPIC_TYPES
    assert list(ep.stream(CHAT_BODY)) == []


# -- APICalling -----------------------------------------------------------------------------------


def test_non_streaming_call_is_unchanged():
    ep = Mock(spec=Endpoint)
    call = APICalling(ep, {"a": 1}, cache_control=True)
    assert call.stream is False
    assert call.event_invoke_function == ep.call
    assert call.event_invoke_kwargs == {"request": {"a": 1}, "cache_control": True}


def test_streaming_call_invokes_stream_call():
    ep = Mock(spec=Endpoint)
    call = APICalling(ep, {"a": 1}, stream=True)
    assert call.stream is True
    assert call.event_invoke_function == call.stream_call
    assert call.event_invoke_kwargs == {"request": {"a": 1}}
    assert APICalling(ep, {}, on_chunk=print).stream is True
    with pytest.raises(TypeError):
        APICalling(ep, {}, on_chunk="print")


@pytest.mark.integration
def test_streamed_api_calling_passes_chunks_and_assembles(server):
    got = []
    body = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    with endpoint_for(server.url) as ep:
        call = APICalling(ep, body, on_chunk=got.append)
        call.invoke()
        whole = ep.call(CHAT_BODY)
    assert call.execution.status is ExecutionStatus.COMPLETED
    assert call.execution.attempts == 1
    assert call.response_status == 200
    assert len(got) > 3
    for field in ("role", "content"):
        assert call.execution.result["choices"][0]["message"][field] == whole["choices"][0]["message"][field]
    assert call.used_tokens == whole["usage"]["total_tokens"]


@pytest.mark.integration
def test_stream_true_without_callback(server):
    with endpoint_for(server.url, "messages") as ep:
        call = APICalling(ep, ANTHROPIC_BODY, stream=True)
        call.invoke()
    assert call.execution.status is ExecutionStatus.COMPLETED
    assert call.execution.result["type"] == "message"
    usage = call.execution.result["usage"]
    assert call.used_tokens == usage["input_tokens"] + usage["output_tokens"] + sum(
        usage.get(k) or 0 for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
    )


@pytest.mark.integration
def test_failing_callback_fails_the_call_and_closes_the_stream(server):
    def on_chunk(event):
        raise ValueError("consumer broke")

    with endpoint_for(server.url) as ep:
        seen = record_responses(ep)
        call = APICalling(ep, CHAT_BODY, on_chunk=on_chunk)
        call.invoke()
        assert call.execution.status is ExecutionStatus.FAILED
        assert call.execution.error == "ValueError: consumer broke"
        assert seen[0].raw.closed
        assert ep.call(CHAT_BODY)["object"] == "chat.completion"
    assert server.stats.connections == 1


# -- executors: streamed calls are just events --------------------------------------------------------


@pytest.mark.integration
def test_streamed_calls_in_an_executor(server):
    with endpoint_for(server.url) as ep, Executor(APICalling) as ex:
        calls = [APICalling(ep, {**CHAT_BODY, "messages": [{"role": "user", "content": f"q{i}"}]}, stream=True)
                 for i in range(4)]
        results = list(ex.map(calls))
    assert [r["choices"][0]["message"]["content"] for r in results] == [f"mock reply to: q{i}" for i in range(4)]


@pytest.mark.integration
def test_streamed_calls_through_rate_limited_executor(server):
    counts = Counter()
    lock = threading.Lock()

    def counter(i):
        def on_chunk(event):
            with lock:
                counts[i] += 1
        return on_chunk

    executor = RateLimitedExecutor(limit_requests=3, interval=1.0, concurrency_limit=2)
    with endpoint_for(server.url) as ep, executor:
        calls = [APICalling(ep, {**CHAT_BODY, "messages": [{"role": "user", "content": f"q{i}"}],
                                 "stream_options": {"include_usage": True}},
                            requires_tokens=True, on_chunk=counter(i)) for i in range(6)]
        start = time.monotonic()
        futures = [executor.submit(c) for c in calls]
        results = [f.result(timeout=10) for f in futures]
        elapsed = time.monotonic() - start
    assert elapsed >= 0.9  # 3 at once, then 3 more at 3 per second
    assert all(c.execution.status is ExecutionStatus.COMPLETED for c in calls)
    for i, result in enumerate(results):
        assert result["choices"][0]["message"]["content"] == f"mock reply to: q{i}"
        # role chunk + one per word + finish chunk + usage chunk
        assert counts[i] == len(result["choices"][0]["message"]["content"].split()) + 3
    assert server.stats.requests == 6
    # the executor heard every response and settled the bucket with the streamed usage
    metrics = executor.metrics.snapshot()
    assert metrics["responses"] == 6
    assert metrics["tokens_used"] == sum(r["usage"]["total_tokens"] for r in results)


def test_stream_true_in_the_request_streams_through_apicalling(mock_server):
    from apiexec import APICalling, Endpoint, EndpointConfig

    endpoint = Endpoint(EndpointConfig(provider="mock", endpoint="v1/chat/completions", base_url=mock_server.url))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello there"}]}
    call = APICalling(endpoint, body)
    with endpoint:
        call.invoke()
    assert call.stream is True
    assert call.execution.status.value == "completed", call.execution.error
    assert call.execution.result["choices"][0]["message"]["content"].startswith("mock reply to: hello there")
