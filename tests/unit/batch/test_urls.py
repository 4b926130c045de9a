"""Line urls: normalised, never above the API root, joined to every preset without doubling the version."""

import urllib.parse

import pytest

from apiexec.batch.urls import LineURLError, endpoint_path, normalise
from apiexec.http.presets import ENDPOINT_ALIASES, PRESETS

#: Stand-in roots for presets whose base URL the user supplies.
USER_ROOTS = {"azure": "https://res.openai.azure.com/openai/v1", "openai-compatible": "http://127.0.0.1:8000/v1"}


def root_of(name):
    return PRESETS[name].base_url or USER_ROOTS.get(name, "http://127.0.0.1:8000/v1")


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("url, path", [("/v1/chat/completions", "chat/completions"),
                                       ("/v1/embeddings", "embeddings"), ("/v1/messages", "messages")])
def test_every_preset_joins_standard_batch_urls_below_its_root(name, url, path):
    """A batch line url reaches <preset root>/<path>, whatever the root's prefix (facts: Groq /openai/v1,
    OpenRouter /api/v1, Gemini /v1beta/openai, Perplexity no version)."""
    base = root_of(name)
    joined = base.rstrip("/") + "/" + endpoint_path(base, url)
    assert joined == base.rstrip("/") + "/" + path
    assert "/v1/v1/" not in joined


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_line_repeating_the_whole_base_path_is_taken_relative_to_it(name):
    base = root_of(name)
    prefix = urllib.parse.urlsplit(base).path.rstrip("/")
    assert endpoint_path(base, prefix + "/chat/completions") == "chat/completions"


def test_default_endpoints_are_plain_relative_paths():
    for alias in ENDPOINT_ALIASES.values():
        assert endpoint_path("https://api.openai.com/v1", "/v1/" + alias) == alias


@pytest.mark.parametrize("url, expected", [
    ("/v1/chat/../embeddings", "embeddings"),
    ("/v1/./chat//completions", "chat/completions"),
    ("/v1/chat/%2e%2e/embeddings", "embeddings"),
    ("chat/completions", "chat/completions"),
    ("/custom/route", "custom/route"),
])
def test_paths_are_normalised(url, expected):
    assert endpoint_path("https://api.groq.com/openai/v1", url) == expected


@pytest.mark.parametrize("url, fragment", [
    ("/", "names no endpoint"),
    ("/v1", "names no endpoint"),
    ("/v1/../..", "climbs above"),
    ("/v1/../../admin", "climbs above"),
    ("/%2e%2e/%2e%2e/admin", "climbs above"),
    ("/v1/chat%2fcompletions", "encoded slash"),
    ("https://evil.example/v1/chat/completions", "not a full URL"),
    ("//evil.example/v1/chat/completions", "not a full URL"),
    ("/v1/chat/completions?api-version=1", "query"),
    ("/v1/chat completions", "space"),
    ("/v1\\..\\admin", "backslash"),
    ("/v1/chat\r\nX-Evil: 1", "control"),
])
def test_unsafe_urls_are_refused_with_a_reason(url, fragment):
    with pytest.raises(LineURLError, match=fragment):
        endpoint_path("https://api.openai.com/v1", url)


def test_normalise_keeps_segments_as_written():
    assert normalise("/v1/files/file-abc/content") == ["v1", "files", "file-abc", "content"]
