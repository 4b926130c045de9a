"""Credentials: the :class:`Secret` type, which names are credentials, redaction.

Every credential an endpoint is configured with is held by a :class:`Secret`,
wherever it was given: ``api_key``, a default header that carries a key
(``Authorization``, ``x-api-key``, ``api-key``, ``x-goog-api-key``...) and a
query parameter that carries one (``?key=``, ``?api_key=``...). A Secret never
shows itself in ``repr``/``str``, cannot be pickled, and is revealed only when
a request is built.

Text that might contain a credential (an error body a server echoed, a log
line of urllib3) goes through :func:`redact` first. :class:`RedactingFilter`,
installed on urllib3's loggers by the session module, does that for every
debug line urllib3 writes (it logs each request's URL, query included).

Example:
    >>> s = Secret("sk-abc")
    >>> s, str(s), s.reveal()
    (Secret('***'), "Secret('***')", 'sk-abc')
    >>> redact("GET /v1/x?key=AIza123&alt=json used sk-abc", ["sk-abc"])
    'GET /v1/x?key=***&alt=json used ***'
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any, Final

from apiexec.errors import ConfigError

#: Header names (lower case) whose values are credentials.
CREDENTIAL_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        "x-auth-token",
        "cookie",
    }
)
#: Query parameter names (lower case) whose values are credentials.
CREDENTIAL_QUERY_PARAMS: Final = frozenset(
    {"key", "api_key", "api-key", "apikey", "access_token", "token", "sig", "signature", "x-goog-api-key"}
)
REDACTED: Final = "***"


@functools.cache
def _secret_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Credentials in a query string, and bearer tokens (compiled at first use, not at import)."""
    names = "|".join(re.escape(n) for n in sorted(CREDENTIAL_QUERY_PARAMS))
    query = re.compile(r"(?i)([?&;](?:" + names + r")=)[^&#\s\"']*")
    return query, re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


class Secret:
    """A credential that never shows itself in ``repr``, ``str`` or logs.

    Example:
        >>> Secret("sk-abc")
        Secret('***')
        >>> Secret("sk-abc").reveal()
        'sk-abc'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The credential itself: only for building a request."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")

    # Immutable: a copy is the same credential (and deepcopy of a config works).
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


def reveal(value: str | Secret) -> str:
    """The plain text of a header or query value."""
    return value.reveal() if isinstance(value, Secret) else value


def check_sendable(field: str, value: str, *, secret: bool, what: str = "") -> None:
    """Refuse a header value HTTP cannot carry, without echoing it.

    Header values go on the wire as Latin-1; a key pasted with a typographic
    dash or a stray newline would otherwise fail every call with an encoding
    error that contains the key itself (or, with CR/LF, inject headers).

    Args:
        field: The config field named by the error.
        value: The value to check.
        secret: Credentials may not hold whitespace either.
        what: Which part of the field (``value of header 'api-key'``).

    Raises:
        ConfigError: naming ``field`` and the position of the bad character.
    """
    for index, char in enumerate(value):
        if ord(char) > 0xFF or char in "\r\n\0" or (secret and (char.isspace() or not char.isprintable())):
            kind = "whitespace or control characters" if ord(char) <= 0xFF else "characters outside Latin-1"
            raise ConfigError(
                field,
                f"{what + ' ' if what else ''}contains {kind} (at position {index}), "
                "which cannot be sent in an HTTP header",
            )


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret, credential query value and bearer token masked.

    Redact before cutting an excerpt: a secret straddling the cut would
    otherwise leak its prefix.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    query, bearer = _secret_patterns()
    text = query.sub(lambda m: m.group(1) + REDACTED, text)
    return bearer.sub(lambda m: m.group(1) + REDACTED, text)


class _Registry:
    """The secrets of every endpoint with an open session (for log redaction)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for secret in secrets:
                self._counts[secret] = self._counts.get(secret, 0) + 1

    def remove(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for secret in secrets:
                left = self._counts.get(secret, 0) - 1
                if left > 0:
                    self._counts[secret] = left
                else:
                    self._counts.pop(secret, None)

    def values(self) -> list[str]:
        with self._lock:
            return list(self._counts)


#: Secrets in use by open sessions.
ACTIVE_SECRETS: Final = _Registry()


def _reset_after_fork() -> None:
    ACTIVE_SECRETS._lock = threading.Lock()  # a fork during add/remove must not deadlock the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class RedactingFilter(logging.Filter):
    """Masks credentials in log records (urllib3 logs each request's URL).

    The record's message is formatted once, redacted, and its arguments
    dropped, so handlers further down only ever see the redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's business, not ours
            return True
        cleaned = redact(message, ACTIVE_SECRETS.values())
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


_FILTER: Final = RedactingFilter()
_LOGGERS: Final = ("urllib3.connectionpool", "urllib3.connection", "urllib3.response", "urllib3.util.retry")


def install_log_filter() -> None:
    """Put :class:`RedactingFilter` on urllib3's loggers (idempotent)."""
    for name in _LOGGERS:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)
