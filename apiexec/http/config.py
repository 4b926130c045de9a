"""EndpointConfig: where and how to call one HTTP API endpoint.

The configuration is an immutable, keyword-only value, validated when built:
a bad value raises :class:`~apiexec.errors.ConfigError` (a ``ValueError``)
naming the field, and never echoes a credential. Every credential is held by
a :class:`~apiexec.http.credentials.Secret`: the ``api_key``, default headers
that carry keys (``x-goog-api-key``, ``api-key``...) and query parameters that
carry keys (``?key=``), which are kept out of ``endpoint`` and ``full_url``.

Example:
    >>> cfg = EndpointConfig(provider="openai", endpoint="chat/completions",
    ...                      base_url="https://api.openai.com/v1", api_key="sk-test")
    >>> cfg.full_url
    'https://api.openai.com/v1/chat/completions'
    >>> "sk-test" in repr(cfg)
    False
    >>> cfg = EndpointConfig(provider="gemini", endpoint="models/m:generateContent?key=AIzaX&alt=json",
    ...                      base_url="https://generativelanguage.googleapis.com/v1beta")
    >>> cfg.full_url, "AIzaX" in repr(cfg)
    ('https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?alt=json', False)
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from apiexec._checks import check_int, check_positive_number
from apiexec.errors import ConfigError
from apiexec.http.credentials import (
    CREDENTIAL_HEADERS,
    CREDENTIAL_QUERY_PARAMS,
    Secret,
    check_sendable,
    redact,
    reveal,
)

__all__ = ["EndpointConfig", "Secret"]

#: Read timeout (s): the longest silence while waiting for the response, and
#: on streams the longest wait for the first event and between two events.
DEFAULT_TIMEOUT: Final = 120.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: Total seconds one call may take: every attempt, backoff and body byte
#: (openai-python's default timeout is also 10 minutes).
DEFAULT_TOTAL_TIMEOUT: Final = 600.0
DEFAULT_MAX_RETRIES: Final = 3
DEFAULT_BACKOFF_BASE: Final = 0.5
DEFAULT_BACKOFF_MAX: Final = 30.0
DEFAULT_RETRY_AFTER_CAP: Final = 60.0
#: Connections kept per host: at least the executor's default concurrency.
DEFAULT_POOL_MAXSIZE: Final = 64
DEFAULT_CACHE_SIZE: Final = 1024
DEFAULT_CACHE_TTL: Final = 600.0
#: Largest response body accepted, counted after decompression (64 MiB).
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024 * 1024

#: Upper bounds: larger values are typos (``timeout=1e30`` overflows the
#: socket layer; a million retries never ends).
MAX_SECONDS: Final = 7 * 24 * 3600.0
MAX_RETRIES: Final = 100
MAX_POOL_MAXSIZE: Final = 10_000
MAX_CACHE_SIZE: Final = 10_000_000
MIN_BODY_BYTES: Final = 1024
MAX_BODY_BYTES: Final = 1 << 40

METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
AUTH_TYPES: Final = frozenset({"bearer", "x-api-key", "api-key", "none"})
TRANSPORT_TYPES: Final = frozenset({"http"})
#: Rate-limit header dialects (see :mod:`apiexec.http.rate_limit_headers`).
RATE_LIMIT_DIALECTS: Final = frozenset({"auto", "openai", "azure", "anthropic", "groq", "openrouter", "suffixed"})
#: The dialect a provider name implies when ``rate_limit_dialect`` is ``auto``
#: (Groq's headers look like OpenAI's but count requests per day).
DIALECT_OF_PROVIDER: Final = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "groq": "groq",
    "openrouter": "openrouter",
    "cerebras": "suffixed",
}


class _FrozenHeaders(Mapping[str, "str | Secret"]):
    """A read-only, hashable header mapping; credential values are Secrets."""

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, str | Secret]) -> None:
        self._items = dict(headers)

    def __getitem__(self, name: str) -> str | Secret:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        # Header values may be credentials (custom auth headers): names only.
        return f"headers({sorted(self._items)})"


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """Where and how to call one endpoint.

    Attributes:
        provider: A name for the API (``openai``, ``anthropic``, ``test``...).
        endpoint: The path below ``base_url`` (``chat/completions``), with an
            optional query (``?api-version=...``). Credential parameters
            (``key``, ``api_key``...) are moved into ``query_secrets``.
        base_url: ``http(s)://host[:port][/prefix]``, no query.
        method: HTTP method.
        transport_type: Only ``http`` for now.
        timeout: Read timeout in seconds: the longest silence while waiting
            for a response; on streams the longest wait for the first event
            and between two events (enforced even when bytes trickle in).
        connect_timeout: Connect timeout in seconds.
        total_timeout: The whole call, every attempt, backoff and body byte
            included, in seconds; an executor's call deadline applies too
            (the earlier wins). Passing it raises
            :class:`~apiexec.errors.DeadlineExceeded`.
        api_key: The key itself (a str or :class:`Secret`); never shown.
        api_key_env: Name of an environment variable holding the key; read
            once, here. A variable that is not set is an error.
        auth_type: ``bearer`` (Authorization header), ``x-api-key``
            (Anthropic), ``api-key`` (Azure OpenAI) or ``none``.
        default_headers: Sent with every request (after auth headers). Values
            under credential names (``x-goog-api-key``...) or given as
            :class:`Secret` are kept as Secrets.
        query_secrets: Credential query parameters, as ``(name, Secret)``
            pairs; filled from ``endpoint``'s query.
        max_retries: Retries after the first attempt (0 disables retrying).
        backoff_base: First backoff in seconds; doubles per retry, jittered.
        backoff_max: Cap of one backoff.
        retry_after_cap: Longest server-requested wait honoured; a longer
            one fails the call with the wait in the error.
        pool_maxsize: Connections kept open; size it to the concurrency.
        verify: TLS verification: True, False or a CA bundle path.
        cache_size: Entries in the response cache (``cache_control=True``).
        cache_ttl: Seconds a cached response stays valid.
        max_body_bytes: Largest body accepted, after decompression.
        rate_limit_dialect: How the provider's rate-limit headers read
            (``auto`` detects it from the headers).

    Raises:
        ConfigError: naming the field, for any invalid value.
    """

    provider: str
    endpoint: str
    base_url: str
    method: str = "POST"
    transport_type: str = "http"
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    api_key: Secret | str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    auth_type: str = "bearer"
    default_headers: Mapping[str, str | Secret] = field(default_factory=dict, repr=False)
    query_secrets: tuple[tuple[str, Secret], ...] = field(default=(), repr=False)
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    pool_maxsize: int = DEFAULT_POOL_MAXSIZE
    verify: bool | str = True
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_ttl: float = DEFAULT_CACHE_TTL
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    rate_limit_dialect: str = "auto"

    def __post_init__(self) -> None:
        for name in ("provider", "endpoint"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(name, "must be a non-empty string")
        _check_base_url(self.base_url)
        _check_choice("method", self.method.upper() if isinstance(self.method, str) else self.method, METHODS)
        object.__setattr__(self, "method", self.method.upper())
        _check_choice("transport_type", self.transport_type, TRANSPORT_TYPES)
        _check_choice("auth_type", self.auth_type, AUTH_TYPES)
        _check_choice("rate_limit_dialect", self.rate_limit_dialect, RATE_LIMIT_DIALECTS)
        for name in ("timeout", "connect_timeout", "total_timeout", "backoff_base", "backoff_max", "retry_after_cap"):
            _check_seconds(name, getattr(self, name), MAX_SECONDS)
        _check_seconds("cache_ttl", self.cache_ttl, 365 * 24 * 3600.0)
        for name, low, high in (
            ("max_retries", 0, MAX_RETRIES),
            ("pool_maxsize", 1, MAX_POOL_MAXSIZE),
            ("cache_size", 0, MAX_CACHE_SIZE),
            ("max_body_bytes", MIN_BODY_BYTES, MAX_BODY_BYTES),
        ):
            check_int(name, getattr(self, name), low)
            if getattr(self, name) > high:
                raise ConfigError(name, f"must be <= {high}, got {getattr(self, name)!r}")
        _check_verify(self.verify)
        object.__setattr__(self, "default_headers", _FrozenHeaders(_checked_headers(self.default_headers)))
        self._split_endpoint_query()
        if self.api_key_env is not None and (
            not isinstance(self.api_key_env, str) or not self.api_key_env.strip()
        ):
            raise ConfigError("api_key_env", "must be a non-empty variable name or None")
        object.__setattr__(self, "api_key", self._resolve_key())

    def _split_endpoint_query(self) -> None:
        """Move credential query parameters out of ``endpoint`` into Secrets."""
        path, sep, query = self.endpoint.partition("?")
        secrets = list(self.query_secrets)
        if not all(isinstance(n, str) and isinstance(v, Secret) for n, v in secrets):
            raise ConfigError("query_secrets", "must be (name, Secret) pairs")
        if not sep:
            return
        kept = []
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if name.lower() in CREDENTIAL_QUERY_PARAMS:
                check_sendable("endpoint", value, secret=True, what=f"query parameter {name!r}")
                # A new value replaces one carried over (with_changes(endpoint=...?key=new)).
                secrets = [(n, v) for n, v in secrets if n.lower() != name.lower()]
                secrets.append((name, Secret(value)))
            else:
                kept.append((name, value))
        endpoint = path + ("?" + urllib.parse.urlencode(kept) if kept else "")
        object.__setattr__(self, "endpoint", endpoint)
        object.__setattr__(self, "query_secrets", tuple(secrets))

    def _resolve_key(self) -> Secret | None:
        key = self.api_key
        if key is None and self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    "api_key_env", f"environment variable {self.api_key_env} is not set"
                )
            key = value
        if isinstance(key, Secret):
            check_sendable("api_key", key.reveal().strip(), secret=True)
            return key
        if key is None:
            return None
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("api_key", "must be a non-empty string or None")
        key = key.strip()
        # requests would reject it later with the header value (the key) in its message.
        check_sendable("api_key", key, secret=True)
        return Secret(key)

    @property
    def full_url(self) -> str:
        """``base_url`` joined with ``endpoint`` by exactly one slash; no credentials."""
        return f"{self.base_url.rstrip('/')}/{self.endpoint.lstrip('/')}"

    def request_url(self) -> str:
        """:attr:`full_url` with the credential query parameters: only for sending."""
        if not self.query_secrets:
            return self.full_url
        extra = urllib.parse.urlencode([(name, value.reveal()) for name, value in self.query_secrets])
        return f"{self.full_url}{'&' if '?' in self.endpoint else '?'}{extra}"

    def auth_headers(self) -> dict[str, str]:
        """The credential headers (empty without a key or with auth ``none``)."""
        if self.api_key is None or self.auth_type == "none":
            return {}
        key = reveal(self.api_key)
        if self.auth_type in ("x-api-key", "api-key"):
            return {self.auth_type: key}
        return {"Authorization": f"Bearer {key}"}

    @property
    def header_dialect(self) -> str:
        """``rate_limit_dialect``, or for ``auto`` the one the provider name implies."""
        if self.rate_limit_dialect != "auto":
            return self.rate_limit_dialect
        return DIALECT_OF_PROVIDER.get(self.provider.strip().lower(), "auto")

    def request_headers(self) -> dict[str, str]:
        """Auth headers, then default headers, with every Secret revealed."""
        headers = self.auth_headers()
        headers.update({name: reveal(value) for name, value in self.default_headers.items()})
        return headers

    def secret_header_names(self) -> frozenset[str]:
        """Lower-case names of every header that carries a credential."""
        configured = {n.lower() for n, v in self.default_headers.items() if isinstance(v, Secret)}
        return CREDENTIAL_HEADERS | configured

    def secrets(self) -> list[str]:
        """Every credential's plain text (for redaction; never log it)."""
        values = [reveal(v) for v in self.default_headers.values() if isinstance(v, Secret)]
        values += [s.reveal() for _, s in self.query_secrets]
        if self.api_key is not None:
            values.append(reveal(self.api_key))
        return [v for v in values if v]

    def redact(self, text: str) -> str:
        """``text`` with every credential of this config masked."""
        return redact(text, self.secrets())

    def with_changes(self, **changes: Any) -> EndpointConfig:
        """A validated copy with some fields changed.

        Changing ``api_key_env`` (without ``api_key``) reads the key anew.
        """
        if "api_key_env" in changes and "api_key" not in changes:
            changes["api_key"] = None
        return replace(self, **changes)


def _check_seconds(name: str, value: Any, high: float) -> None:
    check_positive_number(name, value)
    if value > high:
        raise ConfigError(name, f"must be at most {high:g} seconds, got {value!r}")


def _check_base_url(value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError("base_url", f"must be a string, got {type(value).__name__}")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        # The parser's message quotes the URL, which may carry a key.
        raise ConfigError("base_url", "is not a valid URL") from None
    if parts.username or parts.password:
        # Checked first: the message must not echo the credentials.
        raise ConfigError("base_url", "must not carry credentials; use api_key")
    if parts.query or parts.fragment:
        # Never echoed: a query is where keys hide (?key=...).
        raise ConfigError("base_url", "must not have a query or fragment (put it in endpoint)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        raise ConfigError("base_url", f"must be an http(s) URL with a host, got {shown!r}")


def _check_choice(name: str, value: Any, choices: frozenset[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(name, f"must be one of {sorted(choices)}, got {value!r}")


def _check_verify(verify: Any) -> None:
    # None or 0 would reach requests as "falsy" and silently disable TLS checks.
    if not isinstance(verify, bool) and not (isinstance(verify, str) and verify.strip()):
        raise ConfigError("verify", f"must be True, False or a CA bundle path, got {verify!r}")


def _checked_headers(headers: Any) -> dict[str, str | Secret]:
    """Validate default headers; wrap credential values in Secrets."""
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, Secret)) for k, v in headers.items()
    ):
        raise ConfigError("default_headers", "must be a mapping of str to str (or Secret)")
    checked: dict[str, str | Secret] = {}
    for name, value in headers.items():
        if not name or not name.isascii() or any(c in name for c in ":\r\n\0 \t"):
            raise ConfigError("default_headers", f"header name {name!r} is not a valid HTTP header name")
        secret = isinstance(value, Secret) or name.lower() in CREDENTIAL_HEADERS
        check_sendable("default_headers", reveal(value), secret=secret, what=f"value of header {name!r}")
        checked[name] = Secret(value) if secret and isinstance(value, str) else value
    return checked
