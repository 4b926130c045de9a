"""Presets for common providers: base URL, auth, key variable, paths.

Example:
    >>> cfg = preset_config("ollama", "chat")
    >>> cfg.full_url
    'http://localhost:11434/v1/chat/completions'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from apiexec.errors import ConfigError
from apiexec.http.config import EndpointConfig

#: Short names accepted for the endpoint path.
ENDPOINT_ALIASES: Final[Mapping[str, str]] = {
    "chat": "chat/completions",
    "completions": "completions",
    "embeddings": "embeddings",
    "responses": "responses",
    "messages": "messages",
}


@dataclass(frozen=True, kw_only=True)
class Preset:
    """What a provider needs.

    Attributes:
        base_url: The API root, or None when the user must give one.
        api_key_env: The conventional key variable; None: no key needed.
        key_required: A missing key is an error (hosted APIs).
        auth_type: How the key is sent.
        default_endpoint: Path used when none is named.
        default_headers: Headers the provider requires.
    """

    base_url: str | None
    api_key_env: str | None
    key_required: bool = True
    auth_type: str = "bearer"
    default_endpoint: str = "chat/completions"
    default_headers: Mapping[str, str] = field(default_factory=dict)


PRESETS: Final[Mapping[str, Preset]] = {
    "openai": Preset(base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"),
    "anthropic": Preset(
        base_url="https://api.anthropic.com/v1",
        api_key_env="ANTHROPIC_API_KEY",
        auth_type="x-api-key",
        default_endpoint="messages",
        default_headers={"anthropic-version": "2023-06-01"},
    ),
    "groq": Preset(base_url="https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY"),
    "openrouter": Preset(base_url="https://openrouter.ai/api/v1", api_key_env="OPENROUTER_API_KEY"),
    "ollama": Preset(base_url="http://localhost:11434/v1", api_key_env=None, key_required=False),
    "vllm": Preset(base_url="http://localhost:8000/v1", api_key_env="VLLM_API_KEY", key_required=False),
    # No default key variable: never send someone's OpenAI key to another host.
    "openai-compatible": Preset(base_url=None, api_key_env=None, key_required=False),
}


def preset_config(provider: str, endpoint: str | None = None, **overrides: Any) -> EndpointConfig:
    """An :class:`EndpointConfig` for a known provider.

    Args:
        provider: A key of :data:`PRESETS`.
        endpoint: Path or alias (``chat``, ``embeddings``, ``messages``...).
        **overrides: Any :class:`EndpointConfig` field (``base_url``,
            ``api_key``, ``timeout``...).

    Raises:
        ConfigError: Unknown provider, missing base URL, or a required key
            whose variable is not set (the message names the variable).
    """
    preset = PRESETS.get(provider)
    if preset is None:
        raise ConfigError("provider", f"unknown provider {provider!r}; known: {sorted(PRESETS)}")
    path = ENDPOINT_ALIASES.get(endpoint or "", endpoint or preset.default_endpoint)
    fields: dict[str, Any] = {
        "provider": provider,
        "endpoint": path,
        "base_url": preset.base_url,
        "auth_type": preset.auth_type,
        "default_headers": dict(preset.default_headers),
    }
    fields.update(overrides)
    if fields["base_url"] is None:
        raise ConfigError("base_url", f"provider {provider!r} needs a base_url")
    # api_key=None counts as not given: a required key must not be skipped silently.
    if overrides.get("api_key") is None and overrides.get("api_key_env") is None and preset.api_key_env:
        fields.update(_key_from_env(preset))
    return EndpointConfig(**fields)


def _key_from_env(preset: Preset) -> dict[str, Any]:
    assert preset.api_key_env is not None
    if os.environ.get(preset.api_key_env):
        return {"api_key_env": preset.api_key_env}
    if preset.key_required:
        raise ConfigError("api_key_env", f"environment variable {preset.api_key_env} is not set")
    return {}
