"""Presets for common providers: base URL, auth, key variable, paths, header dialect.

Every value was checked against the provider's documentation; the table with
sources is ``docs/providers.md``.

Azure OpenAI takes three extra options: ``resource`` (the resource name; else
``base_url``, else ``$AZURE_OPENAI_ENDPOINT``), and, for the deployment URLs,
``deployment`` with an optional ``api_version`` (else ``$OPENAI_API_VERSION``,
else :data:`AZURE_API_VERSION`). Without ``deployment`` the ``/openai/v1``
API is used, which needs no version.

Example:
    >>> preset_config("ollama", "chat").full_url
    'http://localhost:11434/v1/chat/completions'
    >>> cfg = preset_config("azure", "chat", resource="contoso", api_key="k", deployment="gpt-4o",
    ...                     api_version="2024-10-21")
    >>> cfg.full_url, cfg.auth_headers()
    ('https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21', {'api-key': 'k'})
"""

from __future__ import annotations

import os
import re
import urllib.parse
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
#: The GA data-plane version used for Azure deployment URLs when none is given.
AZURE_API_VERSION: Final = "2024-10-21"
_AZURE_NAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")
_DEPLOYMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
        rate_limit_dialect: How its rate-limit headers read.
    """

    base_url: str | None
    api_key_env: str | None
    key_required: bool = True
    auth_type: str = "bearer"
    default_endpoint: str = "chat/completions"
    default_headers: Mapping[str, str] = field(default_factory=dict)
    rate_limit_dialect: str = "auto"


PRESETS: Final[Mapping[str, Preset]] = {
    "openai": Preset(base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY", rate_limit_dialect="openai"),
    "anthropic": Preset(
        base_url="https://api.anthropic.com/v1",
        api_key_env="ANTHROPIC_API_KEY",
        auth_type="x-api-key",
        default_endpoint="messages",
        default_headers={"anthropic-version": "2023-06-01"},
        rate_limit_dialect="anthropic",
    ),
    # base_url from resource=, base_url= or $AZURE_OPENAI_ENDPOINT (see azure_fields).
    "azure": Preset(
        base_url=None, api_key_env="AZURE_OPENAI_API_KEY", auth_type="api-key", rate_limit_dialect="azure"
    ),
    "groq": Preset(base_url="https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY", rate_limit_dialect="groq"),
    "openrouter": Preset(
        base_url="https://openrouter.ai/api/v1", api_key_env="OPENROUTER_API_KEY", rate_limit_dialect="openrouter"
    ),
    "gemini": Preset(
        base_url="https://generativelanguage.googleapis.com/v1beta/openai", api_key_env="GEMINI_API_KEY"
    ),
    "mistral": Preset(base_url="https://api.mistral.ai/v1", api_key_env="MISTRAL_API_KEY"),
    "together": Preset(base_url="https://api.together.xyz/v1", api_key_env="TOGETHER_API_KEY"),
    "deepseek": Preset(base_url="https://api.deepseek.com", api_key_env="DEEPSEEK_API_KEY"),
    "fireworks": Preset(base_url="https://api.fireworks.ai/inference/v1", api_key_env="FIREWORKS_API_KEY"),
    "xai": Preset(base_url="https://api.x.ai/v1", api_key_env="XAI_API_KEY"),
    "cerebras": Preset(
        base_url="https://api.cerebras.ai/v1", api_key_env="CEREBRAS_API_KEY", rate_limit_dialect="suffixed"
    ),
    "perplexity": Preset(base_url="https://api.perplexity.ai", api_key_env="PERPLEXITY_API_KEY"),
    "ollama": Preset(base_url="http://localhost:11434/v1", api_key_env=None, key_required=False),
    "vllm": Preset(base_url="http://localhost:8000/v1", api_key_env="VLLM_API_KEY", key_required=False),
    # No default key variable: never send someone's OpenAI key to another host.
    "openai-compatible": Preset(base_url=None, api_key_env=None, key_required=False),
}


#: Other spellings of preset names.
PROVIDER_ALIASES: Final[Mapping[str, str]] = {
    "azure-openai": "azure",
    "azure_openai": "azure",
    "google": "gemini",
    "x-ai": "xai",
    "grok": "xai",
    "together-ai": "together",
    "fireworks-ai": "fireworks",
}


def preset_config(provider: str, endpoint: str | None = None, **overrides: Any) -> EndpointConfig:
    """An :class:`EndpointConfig` for a known provider.

    Args:
        provider: A key of :data:`PRESETS`.
        endpoint: Path or alias (``chat``, ``embeddings``, ``messages``...).
        **overrides: Any :class:`EndpointConfig` field (``base_url``,
            ``api_key``, ``timeout``...); for ``azure`` also ``resource``,
            ``deployment`` (or ``azure_deployment``), ``azure_endpoint`` and
            ``api_version``.

    Raises:
        ConfigError: Unknown provider or option, missing base URL, or a
            required key whose variable is not set (the message names the
            variable).
    """
    provider = PROVIDER_ALIASES.get(provider, provider)
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
        "rate_limit_dialect": preset.rate_limit_dialect,
    }
    if provider == "azure":
        fields.update(azure_fields(path, overrides))
    fields.update(overrides)
    if fields["base_url"] is None:
        raise ConfigError("base_url", f"provider {provider!r} needs a base_url")
    # api_key=None counts as not given: a required key must not be skipped silently.
    if overrides.get("api_key") is None and overrides.get("api_key_env") is None and preset.api_key_env:
        fields.update(_key_from_env(preset))
    return EndpointConfig(**fields)


def azure_fields(path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``base_url`` and ``endpoint`` of an Azure OpenAI resource (pops Azure's options).

    ``https://{resource}.openai.azure.com/openai/v1/{path}``, or with
    ``deployment``: ``.../openai/deployments/{deployment}/{path}?api-version=...``.

    Raises:
        ConfigError: No resource, or a resource/deployment name that cannot
            be part of a URL.
    """
    resource = overrides.pop("resource", None)
    # The openai SDK's AzureOpenAI spells them azure_deployment and azure_endpoint.
    deployment = overrides.pop("deployment", None) or overrides.pop("azure_deployment", None)
    api_version = overrides.pop("api_version", None) or os.environ.get("OPENAI_API_VERSION") or AZURE_API_VERSION
    root = overrides.pop("base_url", None) or overrides.pop("azure_endpoint", None)
    if resource is not None:
        if not isinstance(resource, str) or not _AZURE_NAME.fullmatch(resource):
            raise ConfigError("resource", "must be an Azure resource name (letters, digits, dashes)")
        root = f"https://{resource}.openai.azure.com"
    root = root or os.environ.get("AZURE_OPENAI_ENDPOINT")
    if not root:
        raise ConfigError("base_url", "provider 'azure' needs resource=, base_url= or $AZURE_OPENAI_ENDPOINT")
    root = _azure_root(str(root))
    if deployment is None:
        return {"base_url": f"{root}/openai/v1", "endpoint": path}
    if not isinstance(deployment, str) or not _DEPLOYMENT.fullmatch(deployment):
        raise ConfigError("deployment", "must be a deployment name (letters, digits, '.', '_', '-')")
    if not isinstance(api_version, str) or not re.fullmatch(r"[0-9A-Za-z.-]{4,40}", api_version):
        raise ConfigError("api_version", "must look like 2024-10-21 or 2025-04-01-preview")
    query = urllib.parse.urlencode({"api-version": api_version})
    return {"base_url": f"{root}/openai/deployments/{deployment}", "endpoint": f"{path}?{query}"}


def _azure_root(url: str) -> str:
    """The resource root of an Azure endpoint URL, without ``/openai[/v1]``."""
    url = url.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        url = url.removesuffix(suffix)
    return url


def _key_from_env(preset: Preset) -> dict[str, Any]:
    assert preset.api_key_env is not None
    if os.environ.get(preset.api_key_env):
        return {"api_key_env": preset.api_key_env}
    if preset.key_required:
        raise ConfigError("api_key_env", f"environment variable {preset.api_key_env} is not set")
    return {}
