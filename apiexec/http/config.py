"""EndpointConfig: where and how to call one HTTP API endpoint.

The configuration is an immutable, keyword-only value, validated when built:
a bad value raises :class:`~apiexec.errors.ConfigError` (a ``ValueError``)
naming the field. The API key is held by :class:`Secret`, whose ``repr`` and
``str`` never show it.

Example:
    >>> cfg = EndpointConfig(provider="openai", endpoint="chat/completions",
    ...                      base_url="https://api.openai.com/v1", api_key="sk-test")
    >>> cfg.full_url
    'https://api.openai.com/v1/chat/completions'
    >>> "sk-test" in repr(cfg)
    False
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from apiexec._checks import check_int, check_positive_number
from apiexec.errors import ConfigError

DEFAULT_TIMEOUT: Final = 120.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_MAX_RETRIES: Final = 3
DEFAULT_BACKOFF_BASE: Final = 0.5
DEFAULT_BACKOFF_MAX: Final = 30.0
DEFAULT_RETRY_AFTER_CAP: Final = 60.0
#: Connections kept per host: at least the executor's default concurrency.
DEFAULT_POOL_MAXSIZE: Final = 64
DEFAULT_CACHE_SIZE: Final = 1024
DEFAULT_CACHE_TTL: Final = 600.0

METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
AUTH_TYPES: Final = frozenset({"bearer", "x-api-key", "none"})
TRANSPORT_TYPES: Final = frozenset({"http"})


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
        """The credential itself: only for building the auth header."""
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


class _FrozenHeaders(Mapping[str, str]):
    """A read-only, hashable header mapping (keeps the config immutable)."""

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = dict(headers)

    def __getitem__(self, name: str) -> str:
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
        endpoint: The path below ``base_url`` (``chat/completions``).
        base_url: ``http(s)://host[:port][/prefix]``.
        method: HTTP method.
        transport_type: Only ``http`` for now.
        timeout: Read timeout in seconds (per attempt).
        connect_timeout: Connect timeout in seconds.
        api_key: The key itself (a str or :class:`Secret`); never shown.
        api_key_env: Name of an environment variable holding the key; read
            once, here. A variable that is not set is an error.
        auth_type: ``bearer`` (Authorization header), ``x-api-key`` or ``none``.
        default_headers: Sent with every request (after auth headers).
        max_retries: Retries after the first attempt (0 disables retrying).
        backoff_base: First backoff in seconds; doubles per retry, jittered.
        backoff_max: Cap of one backoff.
        retry_after_cap: Longest server-requested wait honoured per retry.
        pool_maxsize: Connections kept open; size it to the concurrency.
        verify: TLS verification: True, False or a CA bundle path.
        cache_size: Entries in the response cache (``cache_control=True``).
        cache_ttl: Seconds a cached response stays valid.

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
    api_key: Secret | str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    auth_type: str = "bearer"
    default_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    pool_maxsize: int = DEFAULT_POOL_MAXSIZE
    verify: bool | str = True
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_ttl: float = DEFAULT_CACHE_TTL

    def __post_init__(self) -> None:
        for name in ("provider", "endpoint"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(name, "must be a non-empty string")
        _check_base_url(self.base_url)
        _check_choice("method", self.method.upper() if isinstance(self.method, str) else self.method, METHODS)
        object.__setattr__(self, "method", self.method.upper())
        _check_choice("transport_type", self.transport_type, TRANSPORT_TYPES)
        _check_choice("auth_type", self.auth_type, AUTH_TYPES)
        for name in ("timeout", "connect_timeout", "backoff_base", "backoff_max", "retry_after_cap", "cache_ttl"):
            check_positive_number(name, getattr(self, name))
        for name, low in (("max_retries", 0), ("pool_maxsize", 1), ("cache_size", 0)):
            check_int(name, getattr(self, name), low)
        _check_verify(self.verify)
        _check_headers(self.default_headers)
        object.__setattr__(self, "default_headers", _FrozenHeaders(self.default_headers))
        if self.api_key_env is not None and (
            not isinstance(self.api_key_env, str) or not self.api_key_env.strip()
        ):
            raise ConfigError("api_key_env", "must be a non-empty variable name or None")
        object.__setattr__(self, "api_key", self._resolve_key())

    def _resolve_key(self) -> Secret | None:
        key = self.api_key
        if key is None and self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    "api_key_env", f"environment variable {self.api_key_env} is not set"
                )
            key = value
        if key is None or isinstance(key, Secret):
            return key
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("api_key", "must be a non-empty string or None")
        key = key.strip()
        # requests would reject it later with the header value (the key) in its message.
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise ConfigError("api_key", "must not contain whitespace or control characters")
        return Secret(key)

    @property
    def full_url(self) -> str:
        """``base_url`` joined with ``endpoint`` by exactly one slash."""
        return f"{self.base_url.rstrip('/')}/{self.endpoint.lstrip('/')}"

    def auth_headers(self) -> dict[str, str]:
        """The credential headers (empty without a key or with auth ``none``)."""
        if self.api_key is None or self.auth_type == "none":
            return {}
        key = self.api_key.reveal() if isinstance(self.api_key, Secret) else self.api_key
        if self.auth_type == "x-api-key":
            return {"x-api-key": key}
        return {"Authorization": f"Bearer {key}"}

    def with_changes(self, **changes: Any) -> EndpointConfig:
        """A validated copy with some fields changed.

        Changing ``api_key_env`` (without ``api_key``) reads the key anew.
        """
        if "api_key_env" in changes and "api_key" not in changes:
            changes["api_key"] = None
        return replace(self, **changes)


def _check_base_url(value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError("base_url", f"must be a string, got {type(value).__name__}")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError("base_url", f"is not a valid URL ({exc})") from None
    if parts.username or parts.password:
        # Checked first: the message must not echo the credentials.
        raise ConfigError("base_url", "must not carry credentials; use api_key")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("base_url", f"must be an http(s) URL with a host, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError("base_url", "must not have a query or fragment (endpoint is appended)")


def _check_choice(name: str, value: Any, choices: frozenset[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(name, f"must be one of {sorted(choices)}, got {value!r}")


def _check_verify(verify: Any) -> None:
    # None or 0 would reach requests as "falsy" and silently disable TLS checks.
    if not isinstance(verify, bool) and not (isinstance(verify, str) and verify.strip()):
        raise ConfigError("verify", f"must be True, False or a CA bundle path, got {verify!r}")


def _check_headers(headers: Any) -> None:
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError("default_headers", "must be a mapping of str to str")
