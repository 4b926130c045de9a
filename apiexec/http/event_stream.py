"""The events of one streamed response: limits, completeness, release.

Iterating an :class:`EventStream` yields each event's parsed JSON data and
stops at ``[DONE]``, or at the end of a body whose last event said it was
the last (a ``finish_reason``, Anthropic ``message_stop``, Responses API
``response.completed``). Everything else raises, never passes silently:

- a body that ends before that: :class:`~apiexec.errors.APIStreamIncomplete`
  (the answer was cut off; retryable while no event was handed out);
- an event that is not a JSON object, or that reports an error: ``APIError``;
- no event within ``timeout`` seconds (the first one, or the next one), even
  while bytes trickle in: ``APITimeoutError``; the call's total deadline:
  ``DeadlineExceeded``; more than ``max_body_bytes``: ``ResponseTooLarge``.

``close()`` (safe twice) drains the rest within a small budget so the
connection can return to the pool, then closes the response; a server still
generating is cut off instead (which also stops the generation, as LLM
providers document).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

import requests

from apiexec.errors import APIStreamIncomplete, ResponseTooLarge
from apiexec.http.config import EndpointConfig
from apiexec.http.deadline import Alarm, CallDeadline
from apiexec.http.error_map import BODY_ERRORS, ErrorMapper
from apiexec.http.sse import DONE, ServerSentEvent, iter_sse

#: When a stream is closed before its end, the rest is read for at most this
#: long (seconds) and this many bytes so that the connection can go back to
#: the pool.
STREAM_DRAIN_TIMEOUT: Final = 0.1
STREAM_DRAIN_BYTES: Final = 64 * 1024
#: Bytes asked of the socket per read of a stream that is not chunked.
STREAM_READ_BYTES: Final = 8 * 1024
#: Event types after which the end of the body is the normal end.
FINAL_EVENT_TYPES: Final = frozenset(
    {"message_stop", "response.completed", "response.incomplete", "response.failed"}
)


class EventStream:
    """Iterator over the events of one response; see the module docstring.

    Args:
        response: The streamed response (headers read, body not).
        config: The endpoint's configuration (timeouts, body cap).
        mapper: Maps failures to apiexec errors.
        deadline: The call's total deadline.
        alarm: The attempt's alarm, attached to the response's connection.

    Example:
        >>> events = EventStream(response, config, ErrorMapper(config), deadline, alarm)  # doctest: +SKIP
        >>> try:                                                                       # doctest: +SKIP
        ...     for data in events:
        ...         print(data["choices"][0]["delta"])
        ... finally:
        ...     events.close()
    """

    def __init__(
        self,
        response: requests.Response,
        config: EndpointConfig,
        mapper: ErrorMapper,
        deadline: CallDeadline,
        alarm: Alarm,
    ) -> None:
        self._response: requests.Response | None = response
        self._config = config
        self._mapper = mapper
        self._deadline = deadline
        self._alarm = alarm
        self._body = _capped(body_chunks(response), config.max_body_bytes, mapper.url)
        self._events = iter_sse(self._body)
        self._done = False
        self._final_seen = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._done:
            raise StopIteration
        self._set_alarm()
        try:
            event = next(self._events, None)
            if event is None and (self._alarm.fired or self._deadline.left() <= 0):
                raise ConnectionError("the stream was cut at its time limit")
        except BODY_ERRORS as exc:
            self._done = True
            if self._final_seen and self._alarm.fired == "idle":
                # The answer was complete; a server that then neither closes nor sends
                # [DONE] must not turn it into a failure.
                raise StopIteration from None
            raise self._mapper.transport_error(
                exc, phase="stream", deadline=self._deadline, alarm=self._alarm
            ) from exc
        except BaseException:
            self._done = True
            raise
        data = None if event is None else self._event_data(event)
        if data is None:
            self._done = True
            if event is None and not self._final_seen:
                raise APIStreamIncomplete(
                    f"{self._mapper.url}: the stream ended before its final event (cut off)", url=self._mapper.url
                )
            raise StopIteration
        return data

    def _set_alarm(self) -> None:
        """The next event is due within ``timeout``, and before the deadline."""
        idle_at = time.monotonic() + self._config.timeout
        if idle_at < self._deadline.at:
            self._alarm.set(idle_at, "idle")
        else:
            self._alarm.set(self._deadline.at, "deadline")

    def _event_data(self, event: ServerSentEvent) -> dict[str, Any] | None:
        """The event's parsed data; None at ``[DONE]``.

        Raises:
            APIError: The data is not a JSON object, or it reports an error.
        """
        if event.data == DONE:
            self._final_seen = True
            return None
        try:
            data = json.loads(event.data)
        except ValueError:
            raise self._mapper.bad_event("not JSON") from None
        if not isinstance(data, dict):
            raise self._mapper.bad_event("not a JSON object")
        if _is_error_event(event.event, data):
            raise self._mapper.event_error(event.event, data)
        if _is_final(event.event, data):
            self._final_seen = True
        return data

    def close(self) -> None:
        """Drain what is left within the budget, then close the response."""
        self._alarm.cancel()
        response, self._response = self._response, None
        if response is None:
            return
        self._done = True
        try:
            self._drain(response)
        finally:
            response.close()

    def _drain(self, response: requests.Response) -> None:
        sock = _socket_of(response)
        if sock is None:  # body read to its end, or no way to bound the wait
            return
        deadline = time.monotonic() + STREAM_DRAIN_TIMEOUT
        drained = 0
        try:
            while drained <= STREAM_DRAIN_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                sock.settimeout(remaining)
                chunk = next(self._body, None)
                if chunk is None:
                    return
                drained += len(chunk)
        except (*BODY_ERRORS, ResponseTooLarge):
            return  # the connection is closed with the response


def body_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives (decompressed): one item per HTTP chunk, or per socket read."""
    raw = response.raw
    if getattr(raw, "chunked", False) or not hasattr(raw, "read1"):
        return response.iter_content(chunk_size=None)
    # Not chunked: read1 returns what has arrived instead of waiting for EOF.
    return iter(lambda: raw.read1(STREAM_READ_BYTES, decode_content=True), b"")


def _capped(chunks: Iterator[bytes], limit: int, url: str) -> Iterator[bytes]:
    """The chunks, until more than ``limit`` bytes came: then ResponseTooLarge."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ResponseTooLarge(f"{url}: the stream passed max_body_bytes={limit}", url=url, limit=limit)
        yield chunk


def _socket_of(response: requests.Response) -> Any:
    """The socket still attached to the response, if urllib3 exposes it."""
    raw = response.raw
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if callable(getattr(sock, "settimeout", None)) else None


def _is_error_event(name: str, data: Mapping[str, Any]) -> bool:
    """Anthropic ``event: error``; OpenAI and compatible ``{"error": ...}``."""
    return (
        name == "error"
        or data.get("type") == "error"
        or data.get("object") == "error"
        or data.get("error") is not None
    )


def _is_final(name: str, data: Mapping[str, Any]) -> bool:
    """The event says the answer is complete (the body may end after it)."""
    if name in FINAL_EVENT_TYPES or data.get("type") in FINAL_EVENT_TYPES:
        return True
    choices = data.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, Mapping) and c.get("finish_reason") is not None for c in choices
    )
