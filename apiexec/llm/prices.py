"""What a call costs: per-model list prices, worst-case and actual cost.

A built-in, dated table (:data:`BUILTIN_PRICES`, as of :data:`PRICES_AS_OF`)
holds the providers' **list prices** in US dollars per million tokens:
input, output and cached input. They are the published prices on that date
and may have changed since (providers also sell batch, priority and
long-context tiers at other prices): give your own in a JSON file (the
CLI's ``--prices FILE``) or in code::

    {"gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
     "my-finetune": {"input": 0.30, "output": 1.20}}

**Matching a model name** (:meth:`Prices.lookup`), first rule that finds a
price wins; names are compared in lower case:

1. the exact name (``gpt-4o-mini``);
2. without a dated-snapshot suffix: ``-YYYY-MM-DD`` (``gpt-4o-2024-08-06``
   → ``gpt-4o``), ``-YYYYMMDD`` (``claude-sonnet-4-5-20250929`` →
   ``claude-sonnet-4-5``) or ``-latest``;
3. the same two rules on the part after the last ``/`` (router names such
   as ``openai/gpt-4o-mini``).

Nothing looser: ``gpt-4o-audio-preview`` is *not* priced as ``gpt-4o``
(its audio tokens cost more). A ``"*"`` entry, if you give one, prices
every model no rule matched (and requests naming no model, e.g. Azure
deployments). Otherwise a model with no price is unknown (``None``),
never free.

**Worst case** of a request (:meth:`Prices.worst_case`): its prompt estimate
(:func:`~apiexec.llm.tokens.estimate_prompt_tokens`) at the input price, plus
the most output it allows at the output price: ``max_tokens`` /
``max_completion_tokens`` / ``max_output_tokens`` (times ``n``), else the
model's ``max_output`` from the table, else :data:`UNCAPPED_OUTPUT_TOKENS`.

**Actual cost** of an answer (:meth:`Prices.usage_cost`) from its ``usage``:
OpenAI ``prompt_tokens``/``completion_tokens`` with
``prompt_tokens_details.cached_tokens`` (Responses API: ``input_tokens``,
``output_tokens``, ``input_tokens_details.cached_tokens``), Anthropic
``input_tokens``/``output_tokens`` plus ``cache_read_input_tokens`` (at the
cached price) and ``cache_creation_input_tokens`` (at the cache-write price:
1.25 x input, 2 x input for the 1-hour cache).

Example:
    >>> prices = Prices.builtin()
    >>> round(prices.cost("gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000), 4)
    0.75
    >>> prices.cost("my-unknown-model", 10, 10) is None
    True
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from apiexec.errors import ConfigError
from apiexec.llm.estimates import (
    _completions_per_request,
    _content_tokens,
    _input_tokens,
    _is_embeddings_request,
    _json_tokens,
    _value_tokens,
)
from apiexec.llm.price_table import TABLE
from apiexec.llm.tokenizer import CHARS_PER_TOKEN
from apiexec.llm.tokens import MESSAGE_OVERHEAD_TOKENS, OUTPUT_LIMIT_FIELDS, estimate_prompt_tokens, output_reservation

#: The day the built-in prices (:mod:`apiexec.llm.price_table`, sources cited there) were read.
PRICES_AS_OF: Final = "2026-11-26"

#: Output tokens a request that names no maximum is assumed able to write
#: (when the table gives the model no ``max_output``). Set ``max_tokens`` to
#: make the worst case exact: the cap only holds for what a request allows.
UNCAPPED_OUTPUT_TOKENS: Final = 16_384

#: The name of a price entry that applies to every model no other entry matches.
ANY_MODEL: Final = "*"

#: Anthropic's cache-write multipliers of the input price (5-minute and 1-hour caches).
CACHE_WRITE_MULTIPLIER: Final = 1.25
CACHE_WRITE_1H_MULTIPLIER: Final = 2.0

_PER_TOKEN: Final = 1e-6  # prices are per million tokens
#: Most model names whose price lookup a Prices keeps (names past this are matched each time).
_LOOKUPS_KEPT: Final = 1024
_NOT_LOOKED_UP: Final = object()
_SNAPSHOT: Final = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")

class UnknownPrice(ConfigError):
    """A model has no known price (under a spending cap every model needs one).

    Attributes:
        model: The model name (None when the request names none).
    """

    def __init__(self, model: str | None) -> None:
        what = f"no known price for model {model!r}" if model else "the request names no model, so it has no price"
        super().__init__("model", f"{what}; give one with --prices FILE or Prices(...)")
        self.model = model


@dataclass(frozen=True)
class ModelPrice:
    """One model's prices, US dollars per million tokens.

    Attributes:
        input: Input (prompt) tokens.
        output: Output (completion) tokens, reasoning included.
        cached_input: Input tokens read from the provider's cache (default:
            the input price).
        max_output: Most output tokens the model writes when a request names
            no maximum (None: :data:`UNCAPPED_OUTPUT_TOKENS`).

    Raises:
        ConfigError: A price is negative or not a finite number.
    """

    input: float
    output: float
    cached_input: float | None = None
    max_output: int | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input"):
            value = getattr(self, name)
            if value is None and name == "cached_input":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(name, f"must be a finite number of dollars per 1M tokens >= 0, got {value!r}")
        if self.max_output is not None and (isinstance(self.max_output, bool) or not isinstance(self.max_output, int)
                                            or self.max_output < 0):
            raise ConfigError("max_output", f"must be an int >= 0, got {self.max_output!r}")

    @property
    def cached(self) -> float:
        """The cached-input price (the input price when none is listed)."""
        return self.input if self.cached_input is None else self.cached_input


@dataclass(frozen=True)
class Usage:
    """Billable token counts of one answer, split by price.

    Attributes:
        input: Input tokens at the input price (cache hits and writes excluded).
        output: Output tokens.
        cached: Input tokens read from cache.
        cache_write: Input tokens written to a 5-minute cache (Anthropic).
        cache_write_1h: Input tokens written to a 1-hour cache (Anthropic).
    """

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0


class Prices(Mapping[str, ModelPrice]):
    """A price table: model name → :class:`ModelPrice`, with name matching.

    Args:
        table: Prices by model name (:class:`ModelPrice` objects or
            ``{"input", "output", "cached_input", "max_output"}`` mappings).
        as_of: The date the prices were read (shown beside every cost).

    Raises:
        ConfigError: A price is invalid (the message names the model).

    Example:
        >>> mine = Prices.builtin().with_overrides({"my-model": {"input": 1, "output": 2}})
        >>> mine.cost("my-model", 500_000, 250_000)
        1.0
        >>> mine.as_of
        '2026-11-26+overrides'
    """

    def __init__(self, table: Mapping[str, ModelPrice | Mapping[str, Any]], *, as_of: str = PRICES_AS_OF) -> None:
        self._table = {str(name).lower(): _price(name, value) for name, value in table.items()}
        self.as_of = as_of
        # Model name -> what lookup() found: a run asks for the same few names on
        # every answer. The table never changes, so neither do the answers.
        self._found: dict[str, ModelPrice | None] = {}

    @classmethod
    def builtin(cls) -> Prices:
        """The built-in list prices (as of :data:`PRICES_AS_OF`)."""
        return cls({name: ModelPrice(*row) for name, row in TABLE.items()})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, base: Prices | None = None) -> Prices:
        """``base`` (default: the built-in table) overridden by a JSON file.

        Raises:
            ConfigError: (field ``prices``) the file cannot be read, is not
                JSON, or a price in it is invalid.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("prices", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError("prices", f"{path} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("prices", f"{path}: expected an object of models, got {type(data).__name__}")
        return (base or cls.builtin()).with_overrides(data)

    def with_overrides(self, table: Mapping[str, ModelPrice | Mapping[str, Any]]) -> Prices:
        """A copy with ``table``'s prices added or replacing these."""
        merged: dict[str, ModelPrice | Mapping[str, Any]] = dict(self._table)
        merged.update({str(name).lower(): _price(name, value) for name, value in table.items()})
        suffix = "" if self.as_of.endswith("+overrides") else "+overrides"
        return Prices(merged, as_of=self.as_of + suffix if table else self.as_of)

    # -- Mapping --------------------------------------------------------------

    def __getitem__(self, model: str) -> ModelPrice:
        return self._table[model.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Prices({len(self)} models, as_of={self.as_of!r})"

    # -- matching and maths ---------------------------------------------------

    def lookup(self, model: object) -> ModelPrice | None:
        """The price of ``model`` by the matching rules above, else the ``"*"`` entry, else None."""
        if not isinstance(model, str) or not model:
            return self._table.get(ANY_MODEL)
        found = self._found.get(model, _NOT_LOOKED_UP)
        if found is not _NOT_LOOKED_UP:
            return found  # type: ignore[return-value]
        price = self._match(model)
        if len(self._found) < _LOOKUPS_KEPT:
            self._found[model] = price
        return price

    def _match(self, model: str) -> ModelPrice | None:
        name = model.strip().lower()
        candidates = [name]
        if "/" in name:
            candidates.append(name.rsplit("/", 1)[1])
        for candidate in candidates:
            for key in (candidate, _SNAPSHOT.sub("", candidate)):
                price = self._table.get(key)
                if price is not None:
                    return price
        return self._table.get(ANY_MODEL)

    def cost(self, model: object, input_tokens: int, output_tokens: int, cached: int = 0) -> float | None:
        """Dollars for ``input_tokens`` (of which ``cached`` were cache hits) and ``output_tokens``.

        None when the model has no price (never 0).
        """
        price = self.lookup(model)
        if price is None:
            return None
        cached = min(max(cached, 0), max(input_tokens, 0))
        return usage_dollars(price, Usage(input=input_tokens - cached, output=output_tokens, cached=cached))

    def worst_case(self, request: Mapping[str, Any], model: str | None = None) -> float | None:
        """The most ``request`` can cost: prompt estimate plus all the output it allows.

        Raises:
            ConfigError: An output limit field is not an int >= 0.
        """
        name = model or request.get("model")
        price = self.lookup(name)
        if price is None:
            return None
        prompt = estimate_prompt_tokens(request)
        return usage_dollars(price, Usage(input=prompt, output=max_output_tokens(request, price)))

    def usage_cost(self, response: Any, model: str | None = None, *, usage: Usage | None = None) -> float | None:
        """What an answer cost, from its ``usage`` and model (the answer's, else ``model``).

        ``usage`` is the answer's, when the caller has already read it.
        None when the answer reports no usage or neither model has a price.
        """
        if usage is None:
            usage = read_usage(response)
        if usage is None:
            return None
        named = response.get("model") if isinstance(response, Mapping) else None
        price = self.lookup(named) or self.lookup(model)
        return None if price is None else usage_dollars(price, usage)


def max_output_tokens(request: Mapping[str, Any], price: ModelPrice | None = None) -> int:
    """The most output tokens ``request`` allows (see the module docstring).

    Raises:
        ConfigError: An output limit field is not an int >= 0.
    """
    if any(request.get(field) is not None for field in OUTPUT_LIMIT_FIELDS):
        return output_reservation(request)
    named = request.get("model")
    if _is_embeddings_request(request, named if isinstance(named, str) else None):
        return 0
    limit = price.max_output if price is not None and price.max_output is not None else UNCAPPED_OUTPUT_TOKENS
    return limit * _completions_per_request(request)


def expected_prompt_tokens(request: Mapping[str, Any]) -> int:
    """A central estimate of the prompt tokens a provider will bill for ``request``.

    The rule of thumb of English text, ``ceil(characters / 4)`` over every
    text of the prompt, plus 3 tokens per chat message; images and other
    non-text parts at the flat amounts of :mod:`apiexec.llm.estimates`. It
    may fall either side of the real count (the rate limiter and the budget
    reserve :func:`~apiexec.llm.tokens.estimate_prompt_tokens`, which errs
    high); dry runs show both.

    Example:
        >>> expected_prompt_tokens({"messages": [{"role": "user", "content": "12345678"}]})
        5
    """
    chars = 0

    def count(text: str) -> int:
        nonlocal chars
        chars += len(text)
        return 0  # texts are summed, then divided once

    messages = request.get("messages")
    flat, overhead = 0, 0
    if isinstance(messages, (list, tuple)):
        for message in messages:
            overhead += MESSAGE_OVERHEAD_TOKENS
            content = message.get("content") if isinstance(message, Mapping) else message
            flat += _content_tokens(content, count)
    flat += _value_tokens(request.get("instructions"), count) + _content_tokens(request.get("system"), count)
    flat += _input_tokens(request.get("prompt"), count) + _input_tokens(request.get("input"), count)
    if request.get("tools"):
        flat += _json_tokens(request.get("tools"), count)
    return max(-(-chars // CHARS_PER_TOKEN) + flat + overhead, 1)


def usage_dollars(price: ModelPrice, usage: Usage) -> float:
    """Dollars of ``usage`` at ``price``."""
    return _PER_TOKEN * (
        usage.input * price.input
        + usage.output * price.output
        + usage.cached * price.cached
        + usage.cache_write * price.input * CACHE_WRITE_MULTIPLIER
        + usage.cache_write_1h * price.input * CACHE_WRITE_1H_MULTIPLIER
    )


def read_usage(response: Any) -> Usage | None:
    """The billable counts in a decoded answer's ``usage``, or None if it has none.

    Example:
        >>> read_usage({"usage": {"prompt_tokens": 100, "completion_tokens": 20,
        ...                       "prompt_tokens_details": {"cached_tokens": 60}}})
        Usage(input=40, output=20, cached=60, cache_write=0, cache_write_1h=0)
    """
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:  # OpenAI chat, completions, embeddings
        prompt = _count(usage.get("prompt_tokens"))
        cached = min(_count(_get(usage, "prompt_tokens_details", "cached_tokens")), prompt)
        return Usage(input=prompt - cached, output=_count(usage.get("completion_tokens")), cached=cached)
    if "input_tokens" not in usage and "output_tokens" not in usage:
        return None
    output = _count(usage.get("output_tokens"))
    if isinstance(usage.get("input_tokens_details"), Mapping):  # Responses API: cached tokens are inside input
        prompt = _count(usage.get("input_tokens"))
        cached = min(_count(_get(usage, "input_tokens_details", "cached_tokens")), prompt)
        return Usage(input=prompt - cached, output=output, cached=cached)
    # Anthropic: input_tokens excludes cache reads and writes, reported beside it.
    written = _count(usage.get("cache_creation_input_tokens"))
    hour = min(_count(_get(usage, "cache_creation", "ephemeral_1h_input_tokens")), written)
    return Usage(
        input=_count(usage.get("input_tokens")),
        output=output,
        cached=_count(usage.get("cache_read_input_tokens")),
        cache_write=written - hour,
        cache_write_1h=hour,
    )


def _get(usage: Mapping[str, Any], group: str, field: str) -> Any:
    details = usage.get(group)
    return details.get(field) if isinstance(details, Mapping) else None


def _count(value: Any) -> int:
    if type(value) is int:  # the usual case, first
        return max(value, 0)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    return 0


def _price(name: object, value: ModelPrice | Mapping[str, Any]) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError("prices", f"model {name!r}: expected an object such as "
                          f'{{"input": 0.15, "output": 0.6}}, got {value!r}')
    unknown = set(value) - {"input", "output", "cached_input", "max_output"}
    if unknown:
        raise ConfigError("prices", f"model {name!r}: unknown field(s) {', '.join(sorted(unknown))} "
                          "(use input, output, cached_input, max_output: USD per 1M tokens)")
    missing = [field for field in ("input", "output") if field not in value]
    if missing:
        raise ConfigError("prices", f"model {name!r}: missing {' and '.join(missing)} (USD per 1M tokens)")
    try:
        return ModelPrice(value["input"], value["output"], value.get("cached_input"), value.get("max_output"))
    except ConfigError as exc:
        raise ConfigError("prices", f"model {name!r}: {exc}") from None


__all__ = [
    "ANY_MODEL",
    "CACHE_WRITE_1H_MULTIPLIER",
    "CACHE_WRITE_MULTIPLIER",
    "PRICES_AS_OF",
    "UNCAPPED_OUTPUT_TOKENS",
    "ModelPrice",
    "Prices",
    "UnknownPrice",
    "Usage",
    "expected_prompt_tokens",
    "max_output_tokens",
    "read_usage",
    "usage_dollars",
]
