"""Tests for apiexec.llm.tokens: payload estimates, output reservations, usage, tokenizer choice."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiexec.errors import ConfigError
from apiexec.llm import tokenizer, tokens
from apiexec.llm.tokens import (
    ANTHROPIC_IMAGE_TOKENS,
    DEFAULT_OUTPUT_TOKENS,
    IMAGE_TOKENS,
    LOW_DETAIL_IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    encoding_name_for,
    estimate_prompt_tokens,
    estimate_tokens,
    heuristic_count,
    output_reservation,
    tokenizer_name,
    usage_tokens,
)
from tests.helpers import FakeEncoding

MSG: int = MESSAGE_OVERHEAD_TOKENS
ROLE: int = 1  # a chat role is one token in every encoding
PRIMING: int = REPLY_PRIMING_TOKENS


@pytest.fixture(autouse=True)
def _offline_tokenizer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Points tiktoken's cache at an empty dir and forbids sockets, for every test."""
    empty = tmp_path / "empty-tiktoken-cache"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.delenv("APIEXEC_TOKENIZER", raising=False)
    monkeypatch.delenv("APIEXEC_TIKTOKEN_DOWNLOAD", raising=False)

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tokenizer._forget_choices()
    yield
    tokenizer._forget_choices()


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Builds an OpenAI chat completions payload."""
    return {"model": "gpt-4o-mini", "messages": list(messages), **extra}


# ---------------------------------------------------------------- heuristic


# Held-out texts (never used to tune the heuristic) with their exact token counts,
# computed with tiktoken 0.x from the official cl100k_base and o200k_base BPE files
# (sha256 223921b7... and 446a9538..., the hashes tiktoken_ext/openai_public.py pins).
TRUE_COUNTS: list[tuple[str, int, int]] = [
    ("Hi there!", 3, 3), ("What's 15% of 80?", 9, 8), ("Name the largest planet.", 5, 5),
    ("Reply with YES or NO.", 6, 6), ("Convert 72°F to Celsius.", 7, 7), ("Is 97 a prime number?", 7, 7),
    ("Spell 'necessary' backwards.", 6, 6), ("Give me a synonym for happy.", 7, 7),
    ("How many legs does a spider have?", 8, 8), ("Explain recursion to a five-year-old.", 9, 8),
    ("Fix: pritn('hello')", 8, 7), ('git commit -m "fix: typo"', 9, 9), ("rm -rf /tmp/cache/*", 7, 7),
    ("user@example.com", 3, 3), ("v1.2.3-beta+build.45", 11, 11),
    ("ERROR 2024-03-15 10:22:31,004 [main] NullPointerException", 20, 22), ("¡Hola! ¿Qué tal?", 7, 7),
    ("Ça coûte 12,50 €.", 11, 7), ("Москва — столица России.", 14, 6), ("東京は日本の首都です。", 11, 8),
    ("北京欢迎你", 6, 3), ("Γειά σου Κόσμε", 13, 8), ("नमस्ते दुनिया", 13, 5), ("😀😃😄😁", 8, 6),
    ("O'Reilly's café", 5, 5), ("AWS_SECRET_ACCESS_KEY", 4, 4), ("getElementById", 2, 4),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9]", 27, 27), ('{"role": "user"}', 6, 6), ("#!/usr/bin/env python3", 6, 6),
    ("\n\n\n", 1, 1), ("Tab\tseparated\tvalues", 4, 4),
    ("The Industrial Revolution began in Britain in the late 18th century and spread to continental "
     "Europe and North America.", 22, 22),
    ("Please write a short, friendly email to my landlord asking whether the heating can be repaired "
     "before Friday.", 20, 20),
]


@pytest.mark.parametrize(("text", "cl100k", "o200k"), TRUE_COUNTS)
def test_heuristic_never_counts_fewer_tokens_than_tiktoken(text: str, cl100k: int, o200k: int) -> None:
    """issue 12: the heuristic promised to err high but undercounted short prompts by ~8%."""
    assert heuristic_count(text) >= max(cl100k, o200k)


@pytest.mark.parametrize(("text", "cl100k", "o200k"), TRUE_COUNTS)
def test_chat_estimate_never_below_the_cookbook_count(text: str, cl100k: int, o200k: int) -> None:
    """The exact count of a one-message chat (OpenAI cookbook): 3 + role + content + 3 for the reply."""
    exact = MSG + ROLE + max(cl100k, o200k) + PRIMING
    assert estimate_prompt_tokens(chat({"role": "user", "content": text})) >= exact


def test_heuristic_stays_close_on_english_prose() -> None:
    prose = [(t, c) for t, c, _ in TRUE_COUNTS if len(t) > 80]
    for text, exact in prose:
        assert heuristic_count(text) <= 1.6 * exact  # erring high, not wildly


@pytest.mark.parametrize("text", ["", "a", "abcd", "héllo", "привет", "日本語", "😀", "\ud800", " ", "\t\n"])
def test_heuristic_count_small_inputs(text: str) -> None:
    count = heuristic_count(text)  # a lone surrogate must not raise
    assert count == 0 if not text else count >= 1


def test_heuristic_is_conservative_for_cjk() -> None:
    text = "速率限制" * 25
    assert heuristic_count(text) >= len(text)  # >= 1 token per character
    assert heuristic_count(text) > len(text.encode()) // 4


@given(st.text())
def test_heuristic_never_zero_for_non_empty_text(text: str) -> None:
    count = heuristic_count(text)
    assert count >= (1 if text else 0)
    assert count >= len(text) // 4


# ---------------------------------------------------------------- payloads


def test_openai_chat_string_content() -> None:
    request = chat(
        {"role": "system", "content": "You are a helpful assistant."},  # 28 chars
        {"role": "user", "content": "Hello!"},
    )
    system = MSG + ROLE + heuristic_count("You are a helpful assistant.")
    user = MSG + ROLE + heuristic_count("Hello!")
    assert estimate_prompt_tokens(request) == system + user + PRIMING


def test_openai_chat_name_and_tool_calls_count() -> None:
    plain = chat({"role": "user", "content": "hi"})
    named = chat({"role": "user", "content": "hi", "name": "alice"})
    assert estimate_prompt_tokens(named) == estimate_prompt_tokens(plain) + 1 + heuristic_count("alice")
    tool_call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    tool_reply = {
        "role": "tool",
        "tool_call_id": "call_abc123",
        "content": "22C, sunny",
    }
    with_tools = chat({"role": "user", "content": "hi"}, tool_call, tool_reply)
    assert (
        estimate_prompt_tokens(with_tools)
        > estimate_prompt_tokens(plain) + 2 * MSG + 10
    )


def test_openai_chat_multi_part_content() -> None:
    text = {"type": "text", "text": "What is in this image?"}
    url = "https://upload.wikimedia.org/wikipedia/commons/boardwalk.jpg"
    high = {"type": "image_url", "image_url": {"url": url}}
    low = {"type": "image_url", "image_url": {"url": url, "detail": "low"}}
    base = MSG + ROLE + heuristic_count(text["text"]) + PRIMING
    assert estimate_prompt_tokens(chat({"role": "user", "content": [text]})) == base
    assert (
        estimate_prompt_tokens(chat({"role": "user", "content": [text, high]}))
        == base + IMAGE_TOKENS
    )
    assert (
        estimate_prompt_tokens(chat({"role": "user", "content": [text, low]}))
        == base + LOW_DETAIL_IMAGE_TOKENS
    )


def test_image_url_does_not_count_as_text() -> None:
    data_url = "data:image/png;base64," + "A" * 100_000
    part = {"type": "image_url", "image_url": {"url": data_url}}
    request = chat({"role": "user", "content": [part]})
    assert estimate_prompt_tokens(request) < IMAGE_TOKENS + 20


def test_legacy_completions_prompt() -> None:
    h = heuristic_count
    assert estimate_prompt_tokens({"model": "gpt-3.5-turbo-instruct", "prompt": "abcdefgh"}) == h("abcdefgh")
    assert estimate_prompt_tokens({"prompt": ["abcd", "abcdefgh"]}) == h("abcd") + h("abcdefgh")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("The food was delicious and the waiter...", heuristic_count("The food was delicious and the waiter...")),
        (["abcd", "abcdefgh", "abcdefghijkl"], sum(map(heuristic_count, ["abcd", "abcdefgh", "abcdefghijkl"]))),
        ([1212, 318, 257, 1332], 4),  # token ids count as themselves
        ([[1212, 318], [257, 1332, 13]], 5),
    ],
)
def test_embeddings_input(value: Any, expected: int) -> None:
    request = {"model": "text-embedding-3-small", "input": value}
    assert estimate_prompt_tokens(request) == expected
    assert output_reservation(request) == 0
    assert estimate_tokens(request) == expected


def test_responses_api_string_input() -> None:
    request = {"model": "gpt-4.1", "instructions": "Be brief.", "input": "abcdefgh"}
    assert estimate_prompt_tokens(request) == heuristic_count("Be brief.") + heuristic_count("abcdefgh")
    assert output_reservation(request) == DEFAULT_OUTPUT_TOKENS


def test_responses_api_message_items() -> None:
    request = {
        "model": "gpt-4.1",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "abcdefgh"},
                    {
                        "type": "input_image",
                        "image_url": "https://x/y.png",
                        "detail": "low",
                    },
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "abcd"}]},
            {"type": "message", "role": "user", "content": "abcd"},
        ],
        "max_output_tokens": 500,
    }
    h = heuristic_count
    first = MSG + ROLE + h("abcdefgh") + LOW_DETAIL_IMAGE_TOKENS
    second = MSG + ROLE + h("abcd")
    third = MSG + h("message") + ROLE + h("abcd")
    assert estimate_prompt_tokens(request) == first + second + third
    assert estimate_tokens(request) == first + second + third + 500


def test_responses_api_function_call_items_count() -> None:
    output = {"type": "function_call_output", "call_id": "call_1", "output": "x" * 400}
    request = {"model": "gpt-4.1", "input": [output]}
    assert estimate_prompt_tokens(request) >= 100


def test_anthropic_messages_with_system_blocks_and_tools() -> None:
    tool = {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "input_schema": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    }
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "A" * 50_000},
    }
    request = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are a poet."},  # 15 chars -> 4
            {"type": "text", "text": "abcd", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, image]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"location": "SF"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "abcd"}
                ],
            },
        ],
        "tools": [tool],
    }
    tool_tokens = heuristic_count(json.dumps([tool], ensure_ascii=False))
    tool_use = heuristic_count("get_weather") + heuristic_count('{"location": "SF"}')
    h = heuristic_count
    messages = (
        (MSG + ROLE + h("abcdefgh") + ANTHROPIC_IMAGE_TOKENS)
        + (MSG + ROLE + tool_use)
        + (MSG + ROLE + h("abcd"))
        + PRIMING
    )
    system = h("You are a poet.") + h("abcd")
    assert estimate_prompt_tokens(request) == system + messages + tool_tokens
    assert estimate_tokens(request) == estimate_prompt_tokens(request) + 1024


def test_anthropic_string_system() -> None:
    request = {"system": "abcdefgh", "messages": [{"role": "user", "content": "abcd"}]}
    h = heuristic_count
    assert estimate_prompt_tokens(request) == h("abcdefgh") + MSG + ROLE + h("abcd") + PRIMING


@pytest.mark.parametrize(
    "request_",
    [{}, {"messages": []}, {"model": "gpt-4o"}, {"unknown": 42}, {"input": ""}],
)
def test_empty_or_unknown_payload_has_a_floor(request_: dict[str, Any]) -> None:
    assert estimate_prompt_tokens(request_) == 1


def test_not_a_mapping_has_a_floor() -> None:
    assert estimate_prompt_tokens("oops") == 1  # type: ignore[arg-type]


def test_more_text_never_costs_less() -> None:
    short = chat({"role": "user", "content": "hi"})
    long = chat({"role": "user", "content": "hi " * 100})
    two = chat({"role": "user", "content": "hi"}, {"role": "user", "content": "hi"})
    assert estimate_prompt_tokens(long) > estimate_prompt_tokens(short)
    assert estimate_prompt_tokens(two) > estimate_prompt_tokens(short)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["type", "text", "content", "role", "image_url", "detail", "name"]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_payload_keys = st.sampled_from(
    ["messages", "input", "prompt", "system", "instructions", "tools", "model", "x"]
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_payload_keys, _json_values, max_size=5))
def test_prompt_estimate_never_raises_and_is_positive(request_: dict[str, Any]) -> None:
    assert estimate_prompt_tokens(request_) >= 1


@given(st.text(min_size=1))
def test_user_text_is_counted_at_least_once(text: str) -> None:
    request = chat({"role": "user", "content": text})
    assert estimate_prompt_tokens(request) >= heuristic_count(text) + MSG + PRIMING


def test_heuristic_estimate_is_fast() -> None:
    request = chat(
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": "Summarise in three bullet points: " + "lorem ipsum " * 100,
        },
    )
    rounds = 2000
    start = time.thread_time()  # this thread's CPU time: other processes' load does not count
    for _ in range(rounds):
        estimate_tokens(request)
    per_call = (time.thread_time() - start) / rounds
    assert per_call < 1e-3  # typically ~100 us of CPU


# ---------------------------------------------------------------- output reservation


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"messages": [], "max_tokens": 100}, 100),
        ({"messages": [], "max_completion_tokens": 200}, 200),
        ({"input": "x", "max_output_tokens": 300}, 300),
        ({"messages": [], "max_tokens": 0}, 0),
        ({"messages": [], "max_tokens": None, "max_completion_tokens": 50}, 50),
        ({"messages": [], "max_tokens": 10, "max_completion_tokens": 50}, 10),
        ({"messages": []}, DEFAULT_OUTPUT_TOKENS),
        ({"messages": [], "max_tokens": 100, "n": 3}, 300),
        ({"messages": [], "n": 2}, 2 * DEFAULT_OUTPUT_TOKENS),
        ({"prompt": "x", "max_tokens": 10, "n": 2, "best_of": 5}, 50),
        ({"messages": [], "max_tokens": 10, "n": True}, 10),
        ({"model": "gpt-4.1", "input": "x"}, DEFAULT_OUTPUT_TOKENS),  # Responses API
        ({"model": "text-embedding-3-large", "input": "x"}, 0),
        ({"model": "nomic-embed-text", "input": ["x"]}, 0),
        ({"model": "my-custom-model", "input": "x", "dimensions": 256}, 0),
        ({"model": "my-custom-model", "input": "x", "encoding_format": "float"}, 0),
        (
            {"model": "text-embedding-3-small", "messages": [], "input": "x"},
            DEFAULT_OUTPUT_TOKENS,
        ),
    ],
)
def test_output_reservation(request_: dict[str, Any], expected: int) -> None:
    assert output_reservation(request_) == expected


def test_output_reservation_model_argument_overrides_payload() -> None:
    assert output_reservation({"input": "x"}, model="text-embedding-ada-002") == 0


@pytest.mark.parametrize("value", [-1, 1.5, "100", True, [100]])
def test_output_reservation_rejects_bad_limits(value: Any) -> None:
    with pytest.raises(ConfigError, match="max_tokens") as info:
        output_reservation({"messages": [], "max_tokens": value})
    assert isinstance(info.value, ValueError)
    assert info.value.field == "max_tokens"


def test_estimate_tokens_is_prompt_plus_reservation() -> None:
    request = chat({"role": "user", "content": "Hello!"}, max_completion_tokens=64)
    assert estimate_tokens(request) == estimate_prompt_tokens(request) + 64


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # OpenAI chat completion
        (
            {
                "usage": {
                    "prompt_tokens": 19,
                    "completion_tokens": 10,
                    "total_tokens": 29,
                }
            },
            29,
        ),
        ({"usage": {"prompt_tokens": 19, "completion_tokens": 10}}, 29),
        # OpenAI embeddings
        ({"object": "list", "usage": {"prompt_tokens": 8, "total_tokens": 8}}, 8),
        ({"usage": {"prompt_tokens": 8}}, 8),
        # Responses API: input_tokens already includes cached tokens
        (
            {
                "object": "response",
                "usage": {
                    "input_tokens": 36,
                    "input_tokens_details": {"cached_tokens": 10},
                    "output_tokens": 87,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 123,
                },
            },
            123,
        ),
        ({"usage": {"input_tokens": 36, "output_tokens": 87}}, 123),
        # Anthropic, with prompt caching
        (
            {
                "type": "message",
                "usage": {
                    "input_tokens": 2095,
                    "output_tokens": 503,
                    "cache_creation_input_tokens": 100,
                    "cache_read_input_tokens": 1000,
                },
            },
            3698,
        ),
        (
            {
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 5,
                    "cache_read_input_tokens": None,
                }
            },
            15,
        ),
        ({"usage": {"total_tokens": 12.0}}, 12),
        (
            {
                "usage": {
                    "total_tokens": "12",
                    "prompt_tokens": 3,
                    "completion_tokens": 4,
                }
            },
            7,
        ),
    ],
)
def test_usage_tokens(response: dict[str, Any], expected: int) -> None:
    assert usage_tokens(response) == expected


@pytest.mark.parametrize(
    "response",
    [
        None,
        "text",
        [1, 2],
        {},
        {"usage": None},
        {"usage": "lots"},
        {"usage": {}},
        {"usage": {"total_tokens": -5}},
        {"usage": {"total_tokens": True}},
        {"usage": {"prompt_tokens": "x", "completion_tokens": 1.5}},
    ],
)
def test_usage_tokens_without_usable_usage(response: Any) -> None:
    assert usage_tokens(response) is None


@given(_json_values)
def test_usage_tokens_never_raises(value: Any) -> None:
    result = usage_tokens({"usage": value})
    assert result is None or result >= 0


# ---------------------------------------------------------------- tokenizer choice


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-20250514", "cl100k_base"),
        (None, "cl100k_base"),
    ],
)
def test_encoding_name_for(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_empty_tiktoken_cache_falls_back_to_heuristic() -> None:
    # The autouse fixture points TIKTOKEN_CACHE_DIR at an empty dir and blocks sockets.
    assert tokenizer_name() == "heuristic"
    assert tokenizer_name(model="gpt-4o") == "heuristic"
    assert estimate_prompt_tokens({"model": "gpt-4o", "input": "abcdefgh"}) == heuristic_count("abcdefgh")


def test_disabled_tiktoken_cache_falls_back_to_heuristic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken would download every time
    assert tokenizer_name() == "heuristic"


@pytest.fixture
def fake_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """A tiktoken cache holding a fake cl100k_base blob that passes the hash check."""
    pytest.importorskip("tiktoken")
    import tiktoken

    cache = tmp_path / "cache"
    cache.mkdir()
    content = b"fake bpe ranks"
    url = "https://example.invalid/cl100k_base.tiktoken"
    monkeypatch.setitem(
        tokens._TIKTOKEN_BLOBS,
        "cl100k_base",
        (url, hashlib.sha256(content).hexdigest()),
    )
    blob = cache / hashlib.sha1(url.encode()).hexdigest()
    blob.write_bytes(content)
    loaded: list[str] = []

    def get_encoding(name: str) -> FakeEncoding:
        loaded.append(name)
        return FakeEncoding(name)

    monkeypatch.setattr(tiktoken, "get_encoding", get_encoding)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tokenizer._forget_choices()
    return {"cache": cache, "blob": blob, "loaded": loaded}


def test_cached_encoding_is_used(fake_cache: dict[str, Any]) -> None:
    assert tokenizer_name(model="gpt-4") == "tiktoken:cl100k_base"
    request = {"model": "gpt-4", "input": "one two three four five"}
    assert estimate_prompt_tokens(request) == 5
    estimate_prompt_tokens(request)
    assert fake_cache["loaded"] == ["cl100k_base"]  # loaded once, then cached
    # o200k_base is not in the fake cache: gpt-4o falls back.
    assert tokenizer_name(model="gpt-4o") == "heuristic"


def test_corrupt_cached_blob_is_not_loaded(fake_cache: dict[str, Any]) -> None:
    fake_cache["blob"].write_bytes(
        b"truncated"
    )  # tiktoken would delete it and re-download
    assert tokenizer_name(model="gpt-4") == "heuristic"
    assert fake_cache["loaded"] == []


def test_data_gym_cache_dir_is_honoured(
    fake_cache: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(fake_cache["cache"]))
    assert tokenizer_name(model="gpt-4") == "tiktoken:cl100k_base"


def test_env_forces_heuristic(
    fake_cache: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIEXEC_TOKENIZER", "heuristic")
    assert tokenizer_name(model="gpt-4") == "heuristic"
    text = "one two three four five"
    assert estimate_prompt_tokens({"model": "gpt-4", "input": text}) == heuristic_count(text)
    assert fake_cache["loaded"] == []


def test_cache_path_matches_tiktoken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our copy of tiktoken's cache rule finds what tiktoken itself reads, offline."""
    pytest.importorskip("tiktoken")
    from tiktoken.load import read_file_cached

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    content = b"cached blob"
    url = "https://example.invalid/test.tiktoken"
    monkeypatch.setitem(
        tokens._TIKTOKEN_BLOBS,
        "cl100k_base",
        (url, hashlib.sha256(content).hexdigest()),
    )
    path = tokens._cached_blob_path("cl100k_base")
    assert path is not None
    Path(path).write_bytes(content)
    assert read_file_cached(url, hashlib.sha256(content).hexdigest()) == content


def test_real_tiktoken_when_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine whose real tiktoken cache has cl100k_base, counts are exact."""
    pytest.importorskip("tiktoken")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")  # back to the machine's own cache
    if tokenizer_name(model="gpt-4") == "heuristic":
        pytest.skip("cl100k_base is not in tiktoken's cache on this machine")
    assert estimate_prompt_tokens({"model": "gpt-4", "input": "Hello world"}) == 2
