"""Hostile servers over loopback: slow-loris, stalled streams, cut-off streams, gzip bombs (issue 12)."""

from __future__ import annotations

import functools
import gzip
import json
import time
import tracemalloc
import zlib

import pytest

from apiexec import APITimeoutError, Endpoint, EndpointConfig
from apiexec.call_context import call_context
from apiexec.errors import APIStreamIncomplete, DeadlineExceeded, ResponseTooLarge
from tests.helpers import ScriptedServer, http_response

pytestmark = pytest.mark.integration

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def endpoint(server, **kw):
    fields = {"provider": "test", "endpoint": "chat/completions", "base_url": f"{server.url}/v1", "max_retries": 0}
    fields.update(kw)
    return Endpoint(EndpointConfig(**fields))


def chunk(text, finish=None):
    data = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def trickle(conn, head, byte=b"x", every=0.2, count=200):
    conn.sendall(head)
    for _ in range(count):
        time.sleep(every)
        conn.sendall(byte)


# -- total deadline ---------------------------------------------------------------------------


def test_body_trickling_one_byte_at_a_time_ends_at_the_total_deadline():
    """A per-read timeout never fires on a slow-loris body; the total deadline does."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with ScriptedServer(lambda conn, req: trickle(conn, head)) as srv:
        with endpoint(srv, timeout=5.0, total_timeout=1.0) as ep:
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded) as info:
                ep.call(BODY)
            elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 3.0
    assert info.value.phase == "response"
    assert info.value.timeout == 1.0


def test_headers_trickling_one_byte_at_a_time_end_at_the_total_deadline():
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 500
    with ScriptedServer(lambda conn, req: _slow_head(conn, head)) as srv:
        with endpoint(srv, timeout=5.0, total_timeout=1.0) as ep:
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                ep.call(BODY)
            assert time.monotonic() - start < 3.0


def _slow_head(conn, head):
    for i in range(len(head)):
        conn.sendall(head[i : i + 1])
        time.sleep(0.2)


def test_the_executors_earlier_deadline_wins():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with ScriptedServer(lambda conn, req: trickle(conn, head)) as srv:
        with endpoint(srv, timeout=5.0, total_timeout=30.0) as ep:
            start = time.monotonic()
            with call_context(deadline=time.monotonic() + 0.8, timeout=0.8), pytest.raises(DeadlineExceeded) as info:
                ep.call(BODY)
            assert time.monotonic() - start < 2.5
    assert info.value.timeout == 0.8


def test_retries_stop_at_the_deadline_instead_of_sleeping_past_it():
    answer = http_response(503, b"{}", {"Retry-After": "5", "Connection": "close"}, "Unavailable")
    with ScriptedServer(lambda conn, req: conn.sendall(answer)) as srv:
        with endpoint(srv, total_timeout=1.0, max_retries=3, retry_after_cap=10.0) as ep:
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded) as info:
                ep.call(BODY)
            assert time.monotonic() - start < 3.0  # the 5 s wait is never started
    assert info.value.phase == "retry"
    assert len(srv.requests) == 1


def test_a_pooled_connection_is_not_harmed_by_the_alarm_of_a_finished_call():
    ok = http_response(200, b'{"ok": 1}', {"Content-Type": "application/json"})

    def keep_alive(conn, req):
        conn.sendall(ok)
        return True

    with ScriptedServer(keep_alive) as srv:
        with endpoint(srv, total_timeout=0.5) as ep:
            for _ in range(2):
                assert ep.call(BODY) == {"ok": 1}
                time.sleep(0.6)  # past each finished call's deadline: its alarm must be gone
            assert ep.call(BODY) == {"ok": 1}
    assert len(srv.requests) == 3
    assert len(srv._conns) == 1  # one connection, reused: no alarm shut it while it sat in the pool


# -- streams ----------------------------------------------------------------------------------


def test_stream_without_a_first_event_times_out_even_while_bytes_trickle():
    with ScriptedServer(lambda conn, req: trickle(conn, SSE_HEAD, byte=b":")) as srv:
        with endpoint(srv, timeout=0.6, total_timeout=30.0, max_retries=1) as ep:
            start = time.monotonic()
            with call_context() as ctx, pytest.raises(APITimeoutError, match="no event"):
                list(ep.stream(BODY))
            assert time.monotonic() - start < 3.0
    assert ctx.attempts == 2  # no event handed out yet: retried once


def test_stream_idle_between_events_times_out_and_is_not_retried():
    def script(conn, req):
        conn.sendall(SSE_HEAD + chunk("a"))
        trickle(conn, b"", byte=b":")

    with ScriptedServer(script) as srv:
        with endpoint(srv, timeout=0.6, max_retries=2) as ep:
            got = []
            with call_context() as ctx, pytest.raises(APITimeoutError):
                for event in ep.stream(BODY):
                    got.append(event)
    assert len(got) == 1
    assert ctx.attempts == 1


def test_stream_ends_at_the_total_deadline():
    def script(conn, req):
        conn.sendall(SSE_HEAD)
        for i in range(100):
            conn.sendall(chunk(str(i)))
            time.sleep(0.1)

    with ScriptedServer(script) as srv:
        with endpoint(srv, timeout=5.0, total_timeout=1.0) as ep:
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded) as info:
                list(ep.stream(BODY))
            assert time.monotonic() - start < 2.5
    assert info.value.phase == "stream"


def test_truncated_stream_is_retried_when_nothing_was_handed_out():
    answers = [SSE_HEAD + b": still thinking\n\n", SSE_HEAD + chunk("a") + chunk("b", "stop") + b"data: [DONE]\n\n"]
    with ScriptedServer(lambda conn, req: conn.sendall(answers.pop(0))) as srv:
        with endpoint(srv, max_retries=1) as ep, call_context() as ctx:
            events = list(ep.stream(BODY))
    assert [e["choices"][0]["delta"]["content"] for e in events] == ["a", "b"]
    assert ctx.attempts == 2


def test_truncated_stream_after_an_event_raises_incomplete():
    """No [DONE], no finish_reason: a cut-off answer, never returned as complete."""
    with ScriptedServer(lambda conn, req: conn.sendall(SSE_HEAD + chunk("a") + chunk("b"))) as srv:
        with endpoint(srv, max_retries=3) as ep, call_context() as ctx:
            got = []
            with pytest.raises(APIStreamIncomplete):
                for event in ep.stream(BODY):
                    got.append(event)
    assert len(got) == 2
    assert ctx.attempts == 1


def test_stream_with_a_finish_reason_but_no_done_is_complete():
    with ScriptedServer(lambda conn, req: conn.sendall(SSE_HEAD + chunk("a") + chunk("", "stop"))) as srv:
        with endpoint(srv) as ep:
            assert len(list(ep.stream(BODY))) == 2


# -- decompressed body cap --------------------------------------------------------------------


@functools.cache
def _bomb(size):
    """``size`` zero bytes, gzip-compressed without ever holding them in memory."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip wrapper
    block = b"\0" * (1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + packer.flush()


@pytest.mark.parametrize("chunked", [False, True])
def test_gzip_bomb_is_refused_without_inflating_it(chunked):
    bomb = _bomb(256 * 1024 * 1024)  # 256 MiB of zeros in ~250 kB

    def script(conn, req):
        if chunked:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(bomb), 16384):
                piece = bomb[i : i + 16384]
                conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.sendall(http_response(200, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}))

    with ScriptedServer(script) as srv:
        with endpoint(srv, max_body_bytes=4 * 1024 * 1024) as ep:
            tracemalloc.start()
            try:
                with pytest.raises(ResponseTooLarge, match="max_body_bytes=4194304") as info:
                    ep.call(BODY)
                peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
            finally:
                tracemalloc.stop()
    assert info.value.limit == 4 * 1024 * 1024
    assert peak_mib < 32  # the cap and one read's worth, not the 256 MiB it inflates to


def test_gzip_bomb_in_a_stream_is_refused():
    body = gzip.compress(b": " + b"\0" * (8 * 1024 * 1024) + b"\n\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n".encode()
    with ScriptedServer(lambda conn, req: conn.sendall(head + body)) as srv:
        with endpoint(srv, max_body_bytes=1024 * 1024) as ep, pytest.raises(ResponseTooLarge):
            list(ep.stream(BODY))


def test_body_within_the_cap_is_read_whole():
    payload = json.dumps({"data": "x" * 200_000}).encode()
    answer = http_response(200, gzip.compress(payload), {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    with ScriptedServer(lambda conn, req: conn.sendall(answer)) as srv:
        with endpoint(srv, max_body_bytes=1024 * 1024) as ep:
            assert len(ep.call(BODY)["data"]) == 200_000


def test_an_executor_call_with_a_timeout_ends_and_the_executor_exits_promptly():
    """The issue's script: a slow-loris server must not keep ``with executor:`` from exiting."""
    from apiexec import Event, Executor

    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with ScriptedServer(lambda conn, req: trickle(conn, head)) as srv, endpoint(srv, timeout=30.0) as ep:
        start = time.monotonic()
        with Executor() as executor:
            future = executor.submit(Event(ep.call, {"request": BODY}, timeout=1.0))
            with pytest.raises(DeadlineExceeded) as info:
                future.result(timeout=10)
        assert time.monotonic() - start < 4.0
    assert info.value.timeout == 1.0


def test_a_retry_refused_by_the_deadline_keeps_the_failure_it_would_have_retried():
    answer = http_response(503, b'{"error": {"message": "busy"}}', {"Retry-After": "5", "Connection": "close"})
    with ScriptedServer(lambda conn, req: conn.sendall(answer)) as srv:
        with endpoint(srv, total_timeout=1.0, max_retries=3, retry_after_cap=10.0) as ep:
            with pytest.raises(DeadlineExceeded) as info:
                ep.call(BODY)
    assert "busy" in str(info.value.__cause__)


def test_the_deadline_holds_through_an_http_proxy(monkeypatch):
    """A slow-loris proxy: the request goes to it (absolute URL), and it trickles the answer."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with ScriptedServer(lambda conn, req: trickle(conn, head)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        config = EndpointConfig(provider="t", endpoint="chat", base_url="http://api.example.invalid/v1",
                                timeout=5.0, total_timeout=1.0, max_retries=0)
        with Endpoint(config) as ep:
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                ep.call(BODY)
            assert time.monotonic() - start < 3.0
    assert proxy.requests[0]["path"] == "http://api.example.invalid/v1/chat"


def test_a_stream_that_stalls_after_its_final_event_is_complete():
    def script(conn, req):
        conn.sendall(SSE_HEAD + chunk("a") + chunk("", "stop"))
        time.sleep(5)  # neither [DONE] nor a close

    with ScriptedServer(script) as srv:
        with endpoint(srv, timeout=0.5) as ep:
            start = time.monotonic()
            assert len(list(ep.stream(BODY))) == 2
            assert time.monotonic() - start < 3.0
