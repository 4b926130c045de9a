"""The built-in list prices, US dollars per million tokens (see :mod:`apiexec.llm.prices`).

Read on :data:`apiexec.llm.prices.PRICES_AS_OF` from the sources below. They
are list prices for standard online use and may have changed since; batch,
priority and long-context tiers are priced differently.
"""

from __future__ import annotations

from typing import Final

# Sources (list prices, USD per 1M tokens), read on PRICES_AS_OF:
# - OpenAI: https://developers.openai.com/api/docs/pricing (via
#   https://raw.githubusercontent.com/api-evangelist/posts/main/_posts/2026-11-06-openai-api-pricing-what-every-model-costs-per-million-tokens.md,
#   https://www.morphllm.com/openai-api-pricing, https://deploybase.ai/articles/openai-pricing,
#   https://chatgptpricing-akr.pages.dev/api-pricing)
# - Anthropic: https://platform.claude.com/docs/en/about-claude/pricing
# - DeepSeek: https://api-docs.deepseek.com/quick_start/pricing (V3.2: https://benchlm.ai/blog/posts/deepseek-api-pricing)
# - Gemini: https://ai.google.dev/gemini-api/docs/pricing (via https://docs.rs/gemini-cost)
# - Groq: https://groq.com/pricing ; Mistral: https://mistral.ai/pricing ; xAI: https://docs.x.ai/docs/models
# Each entry: (input, output, cached_input or None, max_output or None).
TABLE: Final[dict[str, tuple[float, float, float | None, int | None]]] = {
    # OpenAI
    "gpt-5.5": (5.00, 30.00, 0.50, 128_000),
    "gpt-5.4": (2.50, 15.00, 0.25, 128_000),
    "gpt-5.4-mini": (0.75, 4.50, 0.075, 128_000),
    "gpt-5.4-nano": (0.20, 1.25, 0.02, 128_000),
    "gpt-5.1": (1.25, 10.00, 0.125, 128_000),
    "gpt-5": (1.25, 10.00, 0.125, 128_000),
    "gpt-5-mini": (0.25, 2.00, 0.025, 128_000),
    "gpt-5-nano": (0.05, 0.40, 0.005, 128_000),
    "gpt-4.1": (2.00, 8.00, 0.50, 32_768),
    "gpt-4.1-mini": (0.40, 1.60, 0.10, 32_768),
    "gpt-4.1-nano": (0.10, 0.40, 0.025, 32_768),
    "gpt-4o": (2.50, 10.00, 1.25, 16_384),
    "gpt-4o-mini": (0.15, 0.60, 0.075, 16_384),
    "o1": (15.00, 60.00, 7.50, 100_000),
    "o3": (2.00, 8.00, 0.50, 100_000),
    "o3-mini": (1.10, 4.40, 0.55, 100_000),
    "o4-mini": (1.10, 4.40, 0.275, 100_000),
    "gpt-3.5-turbo": (0.50, 1.50, None, 4_096),
    "text-embedding-3-small": (0.02, 0.0, None, 0),
    "text-embedding-3-large": (0.13, 0.0, None, 0),
    # Anthropic (cached input = cache hits; cache writes from CACHE_WRITE_MULTIPLIER)
    "claude-opus-5": (5.00, 25.00, 0.50, None),
    "claude-opus-4-8": (5.00, 25.00, 0.50, None),
    "claude-opus-4-7": (5.00, 25.00, 0.50, None),
    "claude-opus-4-6": (5.00, 25.00, 0.50, None),
    "claude-opus-4-5": (5.00, 25.00, 0.50, None),
    "claude-opus-4-1": (15.00, 75.00, 1.50, None),
    "claude-opus-4-0": (15.00, 75.00, 1.50, None),
    "claude-opus-4": (15.00, 75.00, 1.50, None),
    "claude-sonnet-5": (2.00, 10.00, 0.20, None),
    "claude-sonnet-4-6": (3.00, 15.00, 0.30, None),
    "claude-sonnet-4-5": (3.00, 15.00, 0.30, None),
    "claude-sonnet-4-0": (3.00, 15.00, 0.30, None),
    "claude-sonnet-4": (3.00, 15.00, 0.30, None),
    "claude-3-7-sonnet": (3.00, 15.00, 0.30, None),
    "claude-haiku-4-5": (1.00, 5.00, 0.10, None),
    "claude-3-5-haiku": (0.80, 4.00, 0.08, None),
    "claude-3-haiku": (0.25, 1.25, 0.03, None),
    # DeepSeek (cached input = cache hit)
    "deepseek-chat": (0.28, 0.42, 0.028, 8_192),
    "deepseek-reasoner": (0.28, 0.42, 0.028, 65_536),
    # Google Gemini (prompts up to 200k tokens)
    "gemini-2.5-pro": (1.25, 10.00, 0.125, 65_536),
    "gemini-2.5-flash": (0.30, 2.50, 0.03, 65_536),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.01, 65_536),
    "gemini-2.0-flash": (0.10, 0.40, 0.025, 8_192),
    # Groq
    "llama-3.3-70b-versatile": (0.59, 0.79, None, 32_768),
    "llama-3.1-8b-instant": (0.05, 0.08, None, 131_072),
    # Mistral
    "mistral-large-latest": (2.00, 6.00, None, None),
    "mistral-small-latest": (0.10, 0.30, None, None),
    # xAI
    "grok-4": (3.00, 15.00, 0.75, None),
    "grok-3-mini": (0.30, 0.50, 0.075, None),
}

__all__ = ["TABLE"]
