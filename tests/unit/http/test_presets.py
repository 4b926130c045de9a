"""Provider presets and ``Endpoint.for_provider``."""

import pytest
import responses

from apiexec import ConfigError, Endpoint, EndpointConfig
from apiexec.http.presets import ENDPOINT_ALIASES, PRESETS, preset_config

KEY = "apiexec-test-credential-0123456789"
KEY_VARS = sorted({p.api_key_env for p in PRESETS.values() if p.api_key_env})


@pytest.fixture(autouse=True)
def no_keys(monkeypatch):
    """No provider key from the machine running the tests."""
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)


def _build(name, monkeypatch):
    preset = PRESETS[name]
    if preset.api_key_env:
        monkeypatch.setenv(preset.api_key_env, KEY)
    extra = {"base_url": "http://10.0.0.5:8000/v1"} if preset.base_url is None else {}
    return preset_config(name, **extra)


def test_known_providers():
    assert {"openai", "anthropic", "groq", "openrouter", "ollama", "vllm", "openai-compatible"} <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name, monkeypatch):
    cfg = _build(name, monkeypatch)
    assert isinstance(cfg, EndpointConfig)
    assert cfg.provider == name
    assert cfg.full_url.startswith(("https://", "http://"))
    assert cfg.full_url.endswith("/" + PRESETS[name].default_endpoint)
    assert KEY not in repr(cfg)
    if PRESETS[name].api_key_env:
        assert cfg.api_key.reveal() == KEY


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_an_endpoint(name, monkeypatch):
    cfg = _build(name, monkeypatch)
    with Endpoint(cfg) as ep:
        assert ep.client is not None
        assert KEY not in repr(ep)


@pytest.mark.parametrize(
    ("alias", "path"),
    [
        ("chat", "chat/completions"),
        ("embeddings", "embeddings"),
        ("responses", "responses"),
        ("completions", "completions"),
        ("chat/completions", "chat/completions"),
        ("v1beta/custom", "v1beta/custom"),
    ],
)
def test_endpoint_aliases(alias, path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert preset_config("openai", alias).full_url == f"https://api.openai.com/v1/{path}"


def test_aliases_table():
    assert ENDPOINT_ALIASES["chat"] == "chat/completions"


def test_default_endpoints(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    assert preset_config("openai").endpoint == "chat/completions"
    assert preset_config("anthropic").full_url == "https://api.anthropic.com/v1/messages"


@pytest.mark.parametrize(
    ("name", "var"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("groq", "GROQ_API_KEY"),
        ("openrouter", "OPENROUTER_API_KEY"),
    ],
)
def test_hosted_provider_without_key_raises_naming_the_variable(name, var):
    with pytest.raises(ConfigError) as info:
        preset_config(name, "chat")
    assert info.value.field == "api_key_env"
    assert var in str(info.value)


def test_explicit_none_key_does_not_skip_the_required_key():
    with pytest.raises(ConfigError) as info:
        preset_config("openai", "chat", api_key=None)
    assert "OPENAI_API_KEY" in str(info.value)


def test_empty_key_variable_counts_as_missing(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "")
    with pytest.raises(ConfigError):
        preset_config("openai", "chat")


def test_openai_reads_key_and_sends_bearer(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = preset_config("openai", "chat")
    assert cfg.auth_headers() == {"Authorization": f"Bearer {KEY}"}
    assert cfg.api_key_env == "OPENAI_API_KEY"


def test_explicit_api_key_needs_no_env():
    cfg = preset_config("openai", "embeddings", api_key=KEY)
    assert cfg.auth_headers() == {"Authorization": f"Bearer {KEY}"}
    assert cfg.full_url == "https://api.openai.com/v1/embeddings"


def test_ollama_needs_no_key():
    cfg = preset_config("ollama", "chat")
    assert cfg.api_key is None
    assert cfg.auth_headers() == {}
    assert cfg.full_url == "http://localhost:11434/v1/chat/completions"


def test_vllm_key_is_optional(monkeypatch):
    assert preset_config("vllm", "chat").auth_headers() == {}
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    assert preset_config("vllm", "chat").auth_headers() == {"Authorization": f"Bearer {KEY}"}


def test_openai_compatible_needs_base_url():
    with pytest.raises(ConfigError) as info:
        preset_config("openai-compatible", "chat")
    assert info.value.field == "base_url"


def test_openai_compatible_any_base_url(monkeypatch):
    cfg = preset_config("openai-compatible", "chat", base_url="http://gpu-box:9000/v1")
    assert cfg.full_url == "http://gpu-box:9000/v1/chat/completions"
    assert cfg.auth_headers() == {}


def test_openai_compatible_never_sends_the_openai_key_elsewhere(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = preset_config("openai-compatible", "chat", base_url="http://gpu-box:9000/v1")
    assert cfg.auth_headers() == {}


def test_openai_compatible_key_by_override(monkeypatch):
    monkeypatch.setenv("MY_SERVER_KEY", KEY)
    by_env = preset_config("openai-compatible", "chat", base_url="http://gpu-box:9000/v1", api_key_env="MY_SERVER_KEY")
    by_value = preset_config("openai-compatible", "chat", base_url="http://gpu-box:9000/v1", api_key=KEY)
    assert by_env.auth_headers() == by_value.auth_headers() == {"Authorization": f"Bearer {KEY}"}


def test_anthropic_headers(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    cfg = preset_config("anthropic")
    assert cfg.auth_type == "x-api-key"
    assert cfg.auth_headers() == {"x-api-key": KEY}
    assert cfg.default_headers["anthropic-version"] == "2023-06-01"


@responses.activate
def test_anthropic_request_on_the_wire(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    responses.post("https://api.anthropic.com/v1/messages", json={"id": "msg_1"})
    ep = Endpoint.for_provider("anthropic", "messages")
    assert ep.call({"model": "claude", "max_tokens": 5, "messages": []}) == {"id": "msg_1"}
    headers = responses.calls[0].request.headers
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers
    ep.close()


@responses.activate
def test_for_provider_openai_one_line(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    responses.post("https://api.openai.com/v1/chat/completions", json={"id": "c1"})
    ep = Endpoint.for_provider("openai", "chat")
    assert ep.config.full_url == "https://api.openai.com/v1/chat/completions"
    assert ep.call({"model": "gpt", "messages": []}) == {"id": "c1"}
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    ep.close()


def test_for_provider_without_key_raises():
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        Endpoint.for_provider("openai", "chat")


def test_for_provider_overrides(monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    ep = Endpoint.for_provider("groq", "chat", timeout=5.0, max_retries=1)
    assert ep.config.timeout == 5.0
    assert ep.config.max_retries == 1
    assert ep.config.full_url == "https://api.groq.com/openai/v1/chat/completions"


def test_override_validated():
    with pytest.raises(ConfigError) as info:
        preset_config("ollama", "chat", timeout=0)
    assert info.value.field == "timeout"


def test_unknown_provider():
    with pytest.raises(ConfigError) as info:
        preset_config("nope", "chat")
    assert info.value.field == "provider"
    assert "openai" in str(info.value)


def test_configs_do_not_share_preset_headers(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    cfg = preset_config("anthropic", default_headers={"anthropic-version": "2024-01-01"})
    assert cfg.default_headers["anthropic-version"] == "2024-01-01"
    assert PRESETS["anthropic"].default_headers["anthropic-version"] == "2023-06-01"
    assert preset_config("anthropic").default_headers["anthropic-version"] == "2023-06-01"


# -- issue 12: more providers, each checked against its docs (docs/providers.md) --------------

DOCUMENTED = {
    "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai/chat/completions", "GEMINI_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1/chat/completions", "MISTRAL_API_KEY"),
    "together": ("https://api.together.xyz/v1/chat/completions", "TOGETHER_API_KEY"),
    "deepseek": ("https://api.deepseek.com/chat/completions", "DEEPSEEK_API_KEY"),
    "fireworks": ("https://api.fireworks.ai/inference/v1/chat/completions", "FIREWORKS_API_KEY"),
    "xai": ("https://api.x.ai/v1/chat/completions", "XAI_API_KEY"),
    "cerebras": ("https://api.cerebras.ai/v1/chat/completions", "CEREBRAS_API_KEY"),
    "perplexity": ("https://api.perplexity.ai/chat/completions", "PERPLEXITY_API_KEY"),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_openai_compatible_providers(name, monkeypatch):
    url, variable = DOCUMENTED[name]
    with pytest.raises(ConfigError, match=variable):
        preset_config(name, "chat")
    monkeypatch.setenv(variable, KEY)
    cfg = preset_config(name, "chat")
    assert cfg.full_url == url
    assert cfg.auth_headers() == {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(
    ("name", "dialect"),
    [("openai", "openai"), ("anthropic", "anthropic"), ("groq", "groq"), ("openrouter", "openrouter"),
     ("cerebras", "suffixed"), ("azure", "azure"), ("gemini", "auto")],
)
def test_presets_name_their_rate_limit_dialect(name, dialect):
    assert PRESETS[name].rate_limit_dialect == dialect


def test_azure_v1_api(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    cfg = preset_config("azure", "chat", resource="contoso")
    assert cfg.full_url == "https://contoso.openai.azure.com/openai/v1/chat/completions"
    assert cfg.auth_headers() == {"api-key": KEY}
    assert "Authorization" not in cfg.request_headers()


def test_azure_deployment_url_with_api_version(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    cfg = preset_config("azure", "embeddings", resource="contoso", deployment="text-embedding-3-small")
    assert cfg.full_url == (
        "https://contoso.openai.azure.com/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    )
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-04-01-preview")
    assert preset_config("azure", "chat", resource="contoso", deployment="gpt-4o").full_url.endswith(
        "?api-version=2025-04-01-preview"
    )


@pytest.mark.parametrize(
    "root", ["https://contoso.openai.azure.com", "https://contoso.openai.azure.com/", "https://contoso.openai.azure.com/openai/v1/"]
)
def test_azure_root_from_the_environment_as_the_openai_sdk_reads_it(root, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", root)
    assert preset_config("azure", "chat").full_url == "https://contoso.openai.azure.com/openai/v1/chat/completions"


@pytest.mark.parametrize(
    ("options", "field"),
    [({}, "base_url"), ({"resource": "bad/name"}, "resource"), ({"resource": "ok", "deployment": "a/b"}, "deployment"),
     ({"resource": "ok", "deployment": "d", "api_version": "x"}, "api_version")],
)
def test_azure_refuses_what_cannot_form_a_url(options, field, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    with pytest.raises(ConfigError) as info:
        preset_config("azure", "chat", **options)
    assert info.value.field == field


@responses.activate
def test_azure_request_on_the_wire(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    url = "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    responses.post(url, json={"ok": True})
    with Endpoint.for_provider("azure", "chat", resource="contoso", deployment="gpt-4o") as ep:
        assert ep.call({"messages": []}) == {"ok": True}
    sent = responses.calls[0].request
    assert sent.url == url
    assert sent.headers["api-key"] == KEY and "Authorization" not in sent.headers


def test_azure_takes_the_openai_sdks_spellings(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    cfg = preset_config("azure-openai", "chat", azure_endpoint="https://contoso.openai.azure.com/",
                        azure_deployment="gpt-4o", api_version="2024-10-21")
    assert cfg.provider == "azure"
    assert cfg.full_url == (
        "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    )
