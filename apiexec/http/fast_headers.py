"""Response headers read without the ``email`` package, same result.

``http.client`` reads a response's header lines itself, then hands them to
``email.parser`` to build the :class:`http.client.HTTPMessage` that urllib3
and requests read. That parser is general (MIME, folding, envelopes) and
slow: about 45 µs for the five headers of a small nginx answer, against
about 10 µs here. One call to an instant server (nginx, sequential POSTs)
took 468 µs of CPU with it and 398 µs without it.

:func:`parse_headers` builds the same message straight from the lines when
every line is a plain ``Name: value`` line, which is what servers send; the
first line that is anything else (a folded value, no colon, a stray ``\\r``,
a line cut by the end of the stream) sends the whole block to
``http.client.parse_headers`` as before. ``tests/unit/http/test_fast_headers.py`` checks both give the same
message (items, ``get_all``, defects, payload) on generated blocks.

:class:`FastHeadersResponse` is an :class:`http.client.HTTPResponse` whose
``begin`` is CPython's own, run with :func:`parse_headers` in place of
``http.client.parse_headers`` (the same code object with one name bound
differently; nothing else in the process changes). The endpoint's
connections use it (``response_class``). On a Python whose ``begin`` no
longer calls ``parse_headers`` it is the plain class.

Example:
    >>> import io
    >>> msg = parse_headers(io.BytesIO(b"Content-Type: application/json\\r\\nX-A:  1 \\r\\n\\r\\n"))
    >>> msg.items(), msg["content-type"]
    ([('Content-Type', 'application/json'), ('X-A', '1 ')], 'application/json')
"""

from __future__ import annotations

import http.client
import io
import re
import types
from typing import Any, BinaryIO, Final

#: A plain header line: a field name (the characters ``email.feedparser``
#: accepts in one, at least one), a colon, a value without CR or LF (where
#: the email parser breaks lines), then CRLF or LF.
_PLAIN: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r?\n")


def parse_headers(fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage) -> Any:
    """``http.client.parse_headers``, without ``email.parser`` for plain lines.

    Raises:
        http.client.LineTooLong: A header line is too long (as http.client).
        http.client.HTTPException: Too many headers (as http.client).
    """
    lines = http.client._read_headers(fp)  # type: ignore[attr-defined]  # the limits stay http.client's
    fields = lines[:-1]
    plain = _PLAIN.fullmatch
    if not all(map(plain, fields)):  # ("From " lines do not match: no space in a name)
        return http.client.parse_headers(io.BytesIO(b"".join(lines)), _class)  # the lines, read again by http.client
    message = PlainMessage() if _class is http.client.HTTPMessage else _class()
    for line in fields:
        name, _, value = line.decode("iso-8859-1").partition(":")
        message.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))  # as the compat32 policy stores it
    message.set_payload("")
    return message


class PlainMessage(http.client.HTTPMessage):
    """An ``HTTPMessage`` of plain lines: ``get`` and ``items`` skip the policy call per header.

    The compat32 policy hands a ``str`` value back unchanged unless it holds
    lone surrogates, which a line decoded from ISO-8859-1 never does: the
    result is the same, without two calls per header for every read
    (urllib3 copies ``items()`` and ``http.client`` asks ``get`` three
    times for each response). A value stored later with lone surrogates
    comes back as stored, where compat32 would wrap it in a ``Header``.

    Example:
        >>> import io
        >>> msg = parse_headers(io.BytesIO(b"A: 1\\r\\nB: 2\\r\\na: 3\\r\\n\\r\\n"))
        >>> type(msg).__name__, msg.get("a"), msg.get("C", "none"), msg.items()
        ('PlainMessage', '1', 'none', [('A', '1'), ('B', '2'), ('a', '3')])
    """

    def get(self, name: str, failobj: Any = None) -> Any:
        name = name.lower()
        for key, value in self._headers:  # type: ignore[attr-defined]
            if key.lower() == name:
                return value
        return failobj

    def items(self) -> list[tuple[str, Any]]:
        return list(self._headers)  # type: ignore[attr-defined]


def _fast_begin() -> Any:
    """CPython's ``HTTPResponse.begin`` calling :func:`parse_headers`, or None."""
    begin = http.client.HTTPResponse.begin
    code = getattr(begin, "__code__", None)
    if code is None or "parse_headers" not in code.co_names or not hasattr(http.client, "_read_headers"):
        return None
    names = dict(vars(http.client))
    names["parse_headers"] = parse_headers
    return types.FunctionType(code, names, begin.__name__, begin.__defaults__, begin.__closure__)


class FastHeadersResponse(http.client.HTTPResponse):
    """An ``http.client`` response whose headers are read by :func:`parse_headers`."""


_BEGIN = _fast_begin()
if _BEGIN is not None:
    FastHeadersResponse.begin = _BEGIN  # type: ignore[method-assign]


__all__ = ["FastHeadersResponse", "PlainMessage", "parse_headers"]
