"""Prices: the dated table, model-name matching, worst-case and actual cost maths."""

import datetime
import json
import math

import pytest

from apiexec.errors import ConfigError
from apiexec.http.presets import PRESETS
from apiexec.llm.prices import (
    PRICES_AS_OF,
    UNCAPPED_OUTPUT_TOKENS,
    ModelPrice,
    Prices,
    UnknownPrice,
    Usage,
    expected_prompt_tokens,
    max_output_tokens,
    read_usage,
)
from apiexec.llm.tokens import estimate_prompt_tokens
from apiexec.mock.answers.chat import chat_answer

PRICES = Prices({"m": {"input": 2.0, "output": 8.0, "cached_input": 0.5}, "big": {"input": 1, "output": 1, "max_output": 1000}})


def test_the_table_is_dated_and_every_price_is_valid():
    datetime.date.fromisoformat(PRICES_AS_OF)
    prices = Prices.builtin()
    assert prices.as_of == PRICES_AS_OF and len(prices) > 30
    for name, price in prices.items():
        assert name == name.lower()
        assert price.input > 0 or name.startswith("text-embedding")
        assert price.cached <= price.input, name


@pytest.mark.parametrize(
    "model",
    ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-5", "o3", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1",
     "deepseek-chat", "gemini-2.5-flash", "llama-3.3-70b-versatile", "mistral-large-latest", "grok-4"],
)
def test_common_models_of_the_preset_providers_have_a_price(model):
    assert Prices.builtin().lookup(model) is not None


def test_list_prices_as_published():
    # OpenAI https://developers.openai.com/api/docs/pricing ; Anthropic https://platform.claude.com/docs/en/about-claude/pricing
    prices = Prices.builtin()
    assert prices["gpt-4o-mini"] == ModelPrice(0.15, 0.60, 0.075, 16_384)
    assert (prices["gpt-4o"].input, prices["gpt-4o"].output) == (2.50, 10.00)
    assert (prices["claude-sonnet-4-5"].input, prices["claude-sonnet-4-5"].output) == (3.00, 15.00)
    assert prices["claude-haiku-4-5"].cached == 0.10
    assert {"openai", "anthropic", "deepseek", "gemini", "groq", "mistral", "xai"} <= set(PRESETS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic/claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ],
)
def test_matching_exact_then_dated_snapshots_then_router_names(name, expected):
    prices = Prices.builtin()
    assert prices.lookup(name) == prices[expected]


@pytest.mark.parametrize("name", ["gpt-4o-audio-preview", "gpt-4o-mini-tts", "gpt-4", "claude", "my-model", "", None, 42,
                                  "gpt-4o-2024-08", "gpt-4o-20240806x"])
def test_nothing_looser_matches(name):
    assert Prices.builtin().lookup(name) is None


def test_a_mini_model_is_never_priced_as_its_big_sibling():
    prices = Prices.builtin()
    assert prices.lookup("gpt-4o-mini-2024-07-18") != prices["gpt-4o"]


def test_cost_maths_per_million_tokens():
    assert PRICES.cost("m", 1_000_000, 500_000) == pytest.approx(2.0 + 4.0)
    assert PRICES.cost("m", 1_000, 0, cached=400) == pytest.approx((600 * 2.0 + 400 * 0.5) / 1e6)
    assert PRICES.cost("m", 0, 0) == 0.0


def test_unknown_model_costs_none_never_zero():
    assert PRICES.cost("other", 1000, 1000) is None
    assert PRICES.worst_case({"model": "other", "messages": []}) is None
    assert PRICES.usage_cost({"model": "other", "usage": {"prompt_tokens": 5}}) is None


def test_cached_input_defaults_to_the_input_price():
    prices = Prices({"x": {"input": 1.0, "output": 1.0}})
    assert prices["x"].cached == 1.0
    assert prices.cost("x", 100, 0, cached=100) == pytest.approx(100e-6)


def test_worst_case_is_prompt_estimate_plus_all_allowed_output():
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello there"}]}
    prompt = estimate_prompt_tokens(body)
    assert PRICES.worst_case(body) == pytest.approx((prompt * 2.0 + 100 * 8.0) / 1e6)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
def test_every_output_limit_field_and_n_count(field):
    assert max_output_tokens({"model": "m", field: 50, "n": 3}) == 150


def test_without_a_limit_the_models_max_output_or_the_documented_default():
    assert max_output_tokens({"model": "big", "messages": []}, PRICES["big"]) == 1000
    assert max_output_tokens({"model": "m", "messages": []}, PRICES["m"]) == UNCAPPED_OUTPUT_TOKENS
    assert max_output_tokens({"model": "gpt-4o-mini", "messages": []}, Prices.builtin()["gpt-4o-mini"]) == 16_384
    assert max_output_tokens({"model": "text-embedding-3-small", "input": "hi"}) == 0


def test_an_invalid_output_limit_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="max_tokens"):
        PRICES.worst_case({"model": "m", "max_tokens": -1})


def test_openai_chat_usage_with_cached_tokens():
    answer = {"model": "m", "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
                                      "prompt_tokens_details": {"cached_tokens": 800}}}
    assert read_usage(answer) == Usage(input=200, output=200, cached=800)
    assert PRICES.usage_cost(answer) == pytest.approx((200 * 2 + 800 * 0.5 + 200 * 8) / 1e6)


def test_responses_api_usage_counts_cached_inside_input():
    answer = {"usage": {"input_tokens": 100, "output_tokens": 10, "input_tokens_details": {"cached_tokens": 30},
                        "output_tokens_details": {"reasoning_tokens": 4}}}
    assert read_usage(answer) == Usage(input=70, output=10, cached=30)


def test_anthropic_usage_with_cache_reads_and_writes():
    answer = {"model": "m", "usage": {"input_tokens": 50, "output_tokens": 20, "cache_read_input_tokens": 1000,
                                      "cache_creation_input_tokens": 300,
                                      "cache_creation": {"ephemeral_1h_input_tokens": 100,
                                                         "ephemeral_5m_input_tokens": 200}}}
    assert read_usage(answer) == Usage(input=50, output=20, cached=1000, cache_write=200, cache_write_1h=100)
    expected = (50 * 2 + 20 * 8 + 1000 * 0.5 + 200 * 2 * 1.25 + 100 * 2 * 2.0) / 1e6
    assert PRICES.usage_cost(answer) == pytest.approx(expected)


def test_embeddings_usage_has_no_output():
    assert read_usage({"usage": {"prompt_tokens": 8, "total_tokens": 8}}) == Usage(input=8)


@pytest.mark.parametrize("answer", [None, {}, {"usage": None}, {"usage": {}}, {"usage": {"total_tokens": 5}}, [1]])
def test_no_usage_is_none(answer):
    assert read_usage(answer) is None
    assert PRICES.usage_cost(answer, "m") is None


def test_a_name_asked_again_gets_the_same_answer_from_the_kept_lookups():
    prices = Prices.builtin()
    names = ["gpt-4o-mini-2024-07-18", "openai/gpt-4o", "my-model", "GPT-4o-Mini"]
    first = [prices.lookup(name) for name in names]
    assert [prices.lookup(name) for name in names] == first
    assert first == [prices["gpt-4o-mini"], prices["gpt-4o"], None, prices["gpt-4o-mini"]]
    # an override is a new table: nothing kept from the old one answers for it
    mine = prices.with_overrides({"my-model": {"input": 1, "output": 2}})
    assert mine.lookup("my-model") == mine["my-model"] and prices.lookup("my-model") is None


def test_kept_lookups_are_bounded_and_names_past_the_bound_still_match():
    prices = Prices.builtin()
    for i in range(3000):
        assert prices.lookup(f"unknown-{i}") is None
    assert len(prices._found) <= 1024
    assert prices.lookup("gpt-4o-2024-08-06") == prices["gpt-4o"]


def test_usage_already_read_is_used_as_given():
    answer = {"model": "m", "usage": {"prompt_tokens": 1_000_000}}
    assert PRICES.usage_cost(answer, usage=Usage(input=0, output=1_000_000)) == pytest.approx(PRICES.cost("m", 0, 1_000_000))


def test_nonsense_counts_are_ignored_not_trusted():
    usage = read_usage({"usage": {"prompt_tokens": -5, "completion_tokens": True,
                                  "prompt_tokens_details": {"cached_tokens": 10**9}}})
    assert usage == Usage(input=0, output=0, cached=0)


def test_the_answers_model_wins_then_the_requests():
    answer = {"model": "m-2025-01-01", "usage": {"prompt_tokens": 1_000_000}}
    assert PRICES.usage_cost(answer, "other") == pytest.approx(2.0)
    assert PRICES.usage_cost({"usage": {"prompt_tokens": 1_000_000}}, "m") == pytest.approx(2.0)


def test_prices_file_overrides_the_builtin_table(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o-mini": {"input": 1, "output": 2}, "My-Model": {"input": 0.5, "output": 0.5,
                                                                                       "cached_input": 0.1}}))
    prices = Prices.from_file(path)
    assert prices["gpt-4o-mini"] == ModelPrice(1, 2)
    assert prices.lookup("my-model-2025-01-01") == ModelPrice(0.5, 0.5, 0.1)
    assert prices.lookup("gpt-4o") == Prices.builtin()["gpt-4o"]
    assert prices.as_of == f"{PRICES_AS_OF}+overrides"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ("[]", "expected an object of models"),
        ('{"m": 3}', "model 'm': expected an object"),
        ('{"m": {"input": 1}}', "model 'm': missing output"),
        ('{"m": {"input": 1, "output": -2}}', "model 'm': output: must be a finite number"),
        ('{"m": {"input": 1, "output": 2, "outptu": 3}}', "unknown field"),
        ('{"m": {"input": "1", "output": 2}}', "input: must be"),
        ('{"m": {"input": 1, "output": 2, "max_output": 1.5}}', "max_output"),
    ],
)
def test_a_bad_prices_file_is_one_clear_error_naming_prices(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        Prices.from_file(path)
    assert caught.value.field == "prices"


def test_a_missing_prices_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Prices.from_file(tmp_path / "nope.json")


def test_nan_and_infinite_prices_are_refused():
    for bad in (math.nan, math.inf, -0.1, True):
        with pytest.raises(ConfigError):
            ModelPrice(bad, 1.0)


def test_unknown_price_names_the_model():
    error = UnknownPrice("foo-1")
    assert error.model == "foo-1" and "'foo-1'" in str(error) and error.field == "model"
    assert "names no model" in str(UnknownPrice(None))


def test_expected_prompt_tokens_follow_the_rule_of_thumb():
    body = {"messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "efghi"}]}
    assert expected_prompt_tokens(body) == 3 + 6  # ceil(9 / 4) + 3 per message
    assert expected_prompt_tokens({"prompt": "x" * 40}) == 10
    assert expected_prompt_tokens({}) == 1


def test_expected_prompt_tokens_match_what_the_mock_bills_for_the_example(tmp_path):
    from pathlib import Path

    bodies = [json.loads(line)["body"] for line in Path("examples/chat.jsonl").read_text().splitlines()]
    ours = sum(expected_prompt_tokens(body) for body in bodies)
    billed = sum(chat_answer(body).payload["usage"]["prompt_tokens"] for body in bodies)
    assert abs(ours - billed) <= 0.10 * billed


def test_repr_and_mapping():
    assert repr(PRICES) == f"Prices(2 models, as_of='{PRICES_AS_OF}')"
    assert "M" in PRICES and sorted(PRICES) == ["big", "m"]


def test_a_star_entry_prices_every_other_model_and_requests_without_one():
    prices = Prices.builtin().with_overrides({"*": {"input": 9, "output": 9}})
    assert prices.lookup("my-deployment") == ModelPrice(9, 9)
    assert prices.lookup(None) == ModelPrice(9, 9)
    assert prices.lookup("gpt-4o-mini") == Prices.builtin()["gpt-4o-mini"]  # a real match still wins
    assert Prices.builtin().lookup("my-deployment") is None
