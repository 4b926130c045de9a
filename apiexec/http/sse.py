"""Server-sent events: a pure parser from raw stream chunks to events.

The parser follows the WHATWG event-stream rules, which OpenAI, Anthropic and
the OpenAI-compatible servers all speak::

    chunks (bytes, split anywhere) ─ iter_lines ─ lines ─ iter_events ─ ServerSentEvent

- Lines end in ``\\n``, ``\\r\\n`` or a lone ``\\r``; a ``\\r\\n`` split between
  two chunks is still one line end, and a UTF-8 character split between two
  chunks is decoded whole. A leading byte-order mark is dropped.
- A blank line dispatches the event gathered so far; several ``data:`` lines
  of one event are joined with ``\\n``. A block with no ``data`` line
  dispatches nothing.
- Lines starting with ``:`` are comments (keep-alives) and are skipped.
- ``field: value`` loses one space after the colon; a line without a colon
  is a field with an empty value; unknown fields are ignored.
- At the end of the stream an event not closed by a blank line is dropped,
  as the standard says: the server was cut off in the middle of it.

Nothing here knows about HTTP or JSON payloads, so every rule is unit-tested
on exact byte samples. The ``data: [DONE]`` sentinel of OpenAI is an ordinary
event at this level (see :data:`DONE`); the endpoint stops at it.

Example:
    >>> raw = [b'event: ping\\r\\ndata: {"type":', b' "ping"}\\r\\n\\r\\n', b"data: [DONE]\\n\\n"]
    >>> [(e.event, e.data) for e in iter_sse(raw)]
    [('ping', '{"type": "ping"}'), ('message', '[DONE]')]
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

#: The data of OpenAI's last event; it is a marker, not JSON.
DONE: Final = "[DONE]"
#: Event name of an event without an ``event:`` field.
DEFAULT_EVENT: Final = "message"

_LINE_END: Final = re.compile(r"\r\n|\r|\n")
_BOM: Final = "\ufeff"


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        data: The ``data:`` lines joined with ``\\n``.
        event: The ``event:`` name, or ``"message"`` when the event had none.
        id: The last event id the stream set (it carries over to later events).
        retry: The ``retry:`` milliseconds given in this event, if any.
    """

    data: str
    event: str = DEFAULT_EVENT
    id: str | None = None
    retry: int | None = None


def iter_lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """Split raw stream chunks into lines, without their line ends.

    Args:
        chunks: Pieces of the stream as they arrived, split anywhere (bytes
            are UTF-8; invalid bytes become U+FFFD).

    Yields:
        Each line; an unterminated last line too.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    first = True
    for chunk in chunks:
        text = decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if first and text:
            text, first = text.removeprefix(_BOM), False
        buffer += text
        # A final "\r" may be the first half of a "\r\n": wait for more.
        end = len(buffer) - 1 if buffer.endswith("\r") else len(buffer)
        start = 0
        for match in _LINE_END.finditer(buffer, 0, end):
            yield buffer[start : match.start()]
            start = match.end()
        buffer = buffer[start:]
    buffer += decoder.decode(b"", final=True)
    if buffer:
        yield from _LINE_END.split(buffer.removesuffix("\r"))


def iter_events(lines: Iterable[bytes | str]) -> Iterator[ServerSentEvent]:
    """Gather lines into events.

    Args:
        lines: One line per item; a trailing ``\\n``, ``\\r\\n`` or ``\\r`` is
            ignored, so ``file`` lines and ``response.iter_lines()`` both fit.

    Yields:
        Each event closed by a blank line.
    """
    data: list[str] = []
    name = ""
    last_id: str | None = None
    retry: int | None = None
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = line.removesuffix("\n").removesuffix("\r")
        if not line:
            if data:
                yield ServerSentEvent("\n".join(data), name or DEFAULT_EVENT, last_id, retry)
            data, name, retry = [], "", None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\0" not in value:
            last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            retry = int(value)


def iter_sse(chunks: Iterable[bytes | str]) -> Iterator[ServerSentEvent]:
    """Parse raw stream chunks into events: ``iter_events(iter_lines(chunks))``."""
    return iter_events(iter_lines(chunks))
