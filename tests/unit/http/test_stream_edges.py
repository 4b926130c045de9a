"""Endpoint.stream at its edges: no connection at all, a long error body, an interrupted open."""

import socket

import pytest
import responses

from apiexec import APIConnectionError, APIStatusError, Endpoint, EndpointConfig

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def endpoint(base_url, **kw):
    config = {"provider": "test", "endpoint": "chat/completions", "base_url": base_url, "max_retries": 0}
    config.update(kw)
    return Endpoint(EndpointConfig(**config))


def refused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_stream_that_cannot_connect_is_a_connection_error():
    with endpoint(f"http://127.0.0.1:{refused_port()}/v1") as ep, pytest.raises(APIConnectionError):
        next(iter(ep.stream(BODY)))


@responses.activate
def test_a_long_error_body_of_a_stream_is_read_only_up_to_the_cap():
    responses.post("http://api.test/v1/chat/completions", status=400, body="x" * 5000,
                   content_type="text/plain")
    with endpoint("http://api.test/v1", max_body_bytes=1024) as ep, pytest.raises(APIStatusError) as caught:
        next(iter(ep.stream(BODY)))
    assert caught.value.status_code == 400
    assert len(caught.value.body_excerpt) <= 1024


@responses.activate
def test_an_interrupt_while_a_stream_opens_closes_it_and_propagates():
    class Interrupt(BaseException):
        pass

    def explode(request):
        raise Interrupt()

    responses.add_callback(responses.POST, "http://api.test/v1/chat/completions", callback=explode)
    with endpoint("http://api.test/v1") as ep, pytest.raises(Interrupt):
        next(iter(ep.stream(BODY)))
