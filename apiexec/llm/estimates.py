"""Token estimates of requests and responses, for rate limiting.

A call must reserve tokens from the token bucket *before* it is sent, so the
reservation is an estimate: the prompt tokens of the payload plus the output
the request allows. Once the response arrives, :func:`usage_tokens` reads what
the provider really charged, so the estimate only has to be close and, where
it must err, err high. Texts are counted by :mod:`apiexec.llm.tokenizer`
(tiktoken, else a heuristic that errs high).

Example:
    >>> request = {"model": "gpt-4o-mini", "max_tokens": 100,
    ...            "messages": [{"role": "user", "content": "Hello!"}]}
    >>> estimate_tokens(request) == estimate_prompt_tokens(request) + 100
    True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from apiexec.errors import ConfigError
from apiexec.llm.tokenizer import TokenCounter, counter_for

DEFAULT_OUTPUT_TOKENS: Final[int] = 256
"""Output reservation when a request names no maximum.

Without ``max_tokens`` a model may in principle write up to its context
limit, but reserving that would let only a handful of calls run at once. 256
is about the length of a typical chat answer; the reservation is trued up
from the response's ``usage`` once the call finishes, so a longer answer only
overshoots the budget briefly. Set ``max_tokens`` (or its variants) to make
the reservation exact.
"""

MESSAGE_OVERHEAD_TOKENS: Final[int] = 3
"""Tokens a chat message costs beyond its content (OpenAI cookbook, gpt-4o era)."""

NAME_OVERHEAD_TOKENS: Final[int] = 1
"""Extra token for a message's ``name`` field (OpenAI cookbook)."""

REPLY_PRIMING_TOKENS: Final[int] = 3
"""Every chat reply is primed with ``<|start|>assistant<|message|>`` (OpenAI cookbook)."""

IMAGE_TOKENS: Final[int] = 765
"""Flat cost of an OpenAI image part: a 1024x1024 image at detail "high" (85 + 4 tiles x 170)."""

LOW_DETAIL_IMAGE_TOKENS: Final[int] = 85
"""Flat cost of an OpenAI image part with ``detail: "low"``."""

ANTHROPIC_IMAGE_TOKENS: Final[int] = 1600
"""Flat cost of an Anthropic image block: about the most an image costs (width x height / 750)."""

OTHER_PART_TOKENS: Final[int] = IMAGE_TOKENS
"""Flat cost of a content part with no text we can count (audio, files, documents)."""

MIN_PROMPT_TOKENS: Final[int] = 1
"""Floor of a prompt estimate, so that no request is ever free."""

OUTPUT_LIMIT_FIELDS: Final[tuple[str, ...]] = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
)
"""Request fields that cap the output, first present wins."""

EMBEDDING_ONLY_FIELDS: Final[tuple[str, ...]] = ("encoding_format", "dimensions")
"""Request fields only the embeddings endpoint takes."""


_TEXT_PART_TYPES: Final[frozenset[str]] = frozenset(
    {"text", "input_text", "output_text"}
)
_OPENAI_IMAGE_PART_TYPES: Final[frozenset[str]] = frozenset(
    {"image_url", "input_image"}
)


# ---------------------------------------------------------------- payloads


def _json_tokens(value: Any, count: TokenCounter) -> int:
    """Counts a structured value by the size of its JSON text."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # circular references
        text = str(value)
    return count(text)


def _value_tokens(value: Any, count: TokenCounter) -> int:
    """Counts a string as text, None as nothing, anything else as JSON."""
    if value is None:
        return 0
    if isinstance(value, str):
        return count(value)
    return _json_tokens(value, count)


def _image_tokens(part: Mapping[str, Any]) -> int:
    """Flat cost of an OpenAI image part (chat ``image_url`` or Responses ``input_image``)."""
    image_url = part.get("image_url")
    detail = (
        image_url.get("detail")
        if isinstance(image_url, Mapping)
        else part.get("detail")
    )
    return LOW_DETAIL_IMAGE_TOKENS if detail == "low" else IMAGE_TOKENS


def _part_tokens(part: Any, count: TokenCounter) -> int:
    """Counts one content part or block (OpenAI or Anthropic)."""
    if isinstance(part, str):
        return count(part)
    if not isinstance(part, Mapping):
        return _value_tokens(part, count)
    kind = part.get("type")
    if not isinstance(kind, str):
        kind = ""
    if kind in _TEXT_PART_TYPES:
        return _value_tokens(part.get("text"), count)
    if kind in _OPENAI_IMAGE_PART_TYPES:
        return _image_tokens(part)
    if kind == "image":
        return ANTHROPIC_IMAGE_TOKENS
    if kind == "tool_use":
        return _value_tokens(part.get("name"), count) + _json_tokens(
            part.get("input"), count
        )
    if kind == "tool_result":
        return _content_tokens(part.get("content"), count)
    if kind in ("refusal", "thinking"):
        return _value_tokens(part.get(kind), count)
    if isinstance(part.get("text"), str):
        return count(part["text"])
    return OTHER_PART_TOKENS


def _content_tokens(content: Any, count: TokenCounter) -> int:
    """Counts message content: a string, a list of parts, or one part."""
    if isinstance(content, str):
        return count(content)
    if isinstance(content, (list, tuple)):
        return sum(_part_tokens(part, count) for part in content)
    if content is None:
        return 0
    return _part_tokens(content, count)


#: Chat roles, each a single token.
ROLES: Final[frozenset[str]] = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


def _message_tokens(message: Any, count: TokenCounter) -> int:
    """Counts one chat message the way OpenAI's cookbook does: every field plus overhead."""
    if not isinstance(message, Mapping):
        return MESSAGE_OVERHEAD_TOKENS + _value_tokens(message, count)
    tokens = MESSAGE_OVERHEAD_TOKENS
    for key, value in message.items():
        if key == "content":
            tokens += _content_tokens(value, count)
        elif key == "role" and isinstance(value, str) and value in ROLES:
            tokens += 1  # one token in every OpenAI encoding; the heuristic's margin is for free text
        elif key == "name":
            tokens += NAME_OVERHEAD_TOKENS + _value_tokens(value, count)
        elif not isinstance(value, (bool, int, float)):
            tokens += _value_tokens(value, count)
    return tokens


def _messages_tokens(messages: Any, count: TokenCounter) -> int:
    """Counts a chat ``messages`` list, reply priming included."""
    if not isinstance(messages, (list, tuple)):
        return _value_tokens(messages, count)
    if not messages:
        return 0
    return sum(_message_tokens(m, count) for m in messages) + REPLY_PRIMING_TOKENS


def _input_item_tokens(item: Any, count: TokenCounter) -> int:
    """Counts one element of ``input``/``prompt``: text, token id(s) or a Responses item."""
    if isinstance(item, str):
        return count(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return 1  # a token id
    if isinstance(item, (list, tuple)):
        return _input_tokens(item, count)
    if isinstance(item, Mapping) and ("content" in item or "role" in item):
        return _message_tokens(item, count)
    return _value_tokens(item, count)  # function_call, function_call_output, ...


def _input_tokens(value: Any, count: TokenCounter) -> int:
    """Counts ``input`` (embeddings, Responses API) or ``prompt`` (completions)."""
    if isinstance(value, (list, tuple)):
        return sum(_input_item_tokens(item, count) for item in value)
    return _input_item_tokens(value, count) if value is not None else 0


def _json_tokens_or_zero(value: Any, count: TokenCounter) -> int:
    """Counts a value as JSON, or 0 if it is None or empty."""
    return _json_tokens(value, count) if value else 0


# Prompt-bearing request fields and how each is counted (each counts None as 0).
_PROMPT_FIELDS: Final[tuple[tuple[str, Callable[[Any, TokenCounter], int]], ...]] = (
    ("instructions", _value_tokens),
    ("system", _content_tokens),
    ("prompt", _input_tokens),
    ("input", _input_tokens),
    ("messages", _messages_tokens),
    ("tools", _json_tokens_or_zero),
)


def _payload_tokens(request: Mapping[str, Any], count: TokenCounter) -> int:
    """Counts every prompt-bearing field of a request payload."""
    tokens = 0
    for field, field_tokens in _PROMPT_FIELDS:
        value = request.get(field)
        if value is not None:  # absent fields cost no call
            tokens += field_tokens(value, count)
    return tokens


def _model_of(request: Mapping[str, Any], model: str | None) -> str | None:
    """Returns the explicit model, else the request's ``model`` field if a string."""
    if model is not None:
        return model
    named = request.get("model")
    return named if isinstance(named, str) else None


def estimate_prompt_tokens(
    request: Mapping[str, Any], *, model: str | None = None
) -> int:
    """Estimates the prompt (input) tokens of a request payload.

    Understands OpenAI chat (``messages``, string or multi-part content),
    completions (``prompt``), embeddings (``input``: text, texts or token
    ids), the Responses API (``input``, ``instructions``) and Anthropic
    messages (``system``, content blocks); ``tools`` count by their JSON
    size. Chat messages cost :data:`MESSAGE_OVERHEAD_TOKENS` each plus
    :data:`REPLY_PRIMING_TOKENS`; images and other non-text parts cost a flat
    amount (:data:`IMAGE_TOKENS`, :data:`LOW_DETAIL_IMAGE_TOKENS`,
    :data:`ANTHROPIC_IMAGE_TOKENS`, :data:`OTHER_PART_TOKENS`).

    Args:
        request: The JSON payload as a mapping.
        model: Model that picks the tokenizer; defaults to ``request["model"]``.

    Returns:
        The estimate, at least :data:`MIN_PROMPT_TOKENS` (also for an empty
        or unrecognised payload).
    """
    if not isinstance(request, Mapping):
        return MIN_PROMPT_TOKENS
    count = counter_for(_model_of(request, model))
    return max(_payload_tokens(request, count), MIN_PROMPT_TOKENS)


def _positive_int(value: Any) -> int | None:
    """Returns value if it is an int >= 1 (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _completions_per_request(request: Mapping[str, Any]) -> int:
    """Returns how many completions a request generates (``n``, ``best_of``)."""
    n, best_of = request.get("n"), request.get("best_of")
    if n is None and best_of is None:  # the common case
        return 1
    return max(_positive_int(n) or 1, _positive_int(best_of) or 1)


def _validated_output_limit(field: str, value: Any) -> int:
    """Checks an output limit field.

    Raises:
        ConfigError: If the value is not an int >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(field, f"must be an int >= 0, got {value!r}")
    return value


def _is_embeddings_request(request: Mapping[str, Any], model: str | None) -> bool:
    """Tells an embeddings request from a Responses API request (both use ``input``).

    Embeddings: ``input`` and no ``messages``, and either a model whose name
    contains "embed" or an embeddings-only field (``encoding_format``,
    ``dimensions``).
    """
    if "input" not in request or "messages" in request:
        return False
    if model is not None and "embed" in model.lower():
        return True
    return any(field in request for field in EMBEDDING_ONLY_FIELDS)


def output_reservation(request: Mapping[str, Any], *, model: str | None = None) -> int:
    """Returns the output tokens to reserve for a request.

    The first of ``max_tokens``, ``max_completion_tokens`` and
    ``max_output_tokens`` that is present and not None, else
    :data:`DEFAULT_OUTPUT_TOKENS`; multiplied by ``n``/``best_of`` when a
    request asks for several completions. Embeddings requests (see
    ``_is_embeddings_request``: ``input``, no ``messages``, an "embed" model
    or an embeddings-only field) produce no output tokens: 0.

    Args:
        request: The JSON payload as a mapping.
        model: Model name; defaults to ``request["model"]``.

    Returns:
        The reservation, >= 0.

    Raises:
        ConfigError: If an output limit field is not an int >= 0.
    """
    if not isinstance(request, Mapping):
        return DEFAULT_OUTPUT_TOKENS
    for field in OUTPUT_LIMIT_FIELDS:
        value = request.get(field)
        if value is not None:
            limit = _validated_output_limit(field, value)
            return limit * _completions_per_request(request)
    if _is_embeddings_request(request, _model_of(request, model)):
        return 0
    return DEFAULT_OUTPUT_TOKENS * _completions_per_request(request)


def estimate_tokens(request: Mapping[str, Any], *, model: str | None = None) -> int:
    """Estimates the tokens a request uses: prompt plus output reservation.

    Args:
        request: The JSON payload as a mapping.
        model: Model that picks the tokenizer; defaults to ``request["model"]``.

    Returns:
        The estimate, >= 1.

    Raises:
        ConfigError: If an output limit field is not an int >= 0.
    """
    reservation = output_reservation(request, model=model)
    return estimate_prompt_tokens(request, model=model) + reservation


# ---------------------------------------------------------------- responses

# Usage fields summed when ``total_tokens`` is absent, first group present wins.
# Anthropic reports cache reads and writes apart from input_tokens; the
# Responses API includes cached tokens in input_tokens and has no such keys.
_USAGE_GROUPS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ),
    ("prompt_tokens", "completion_tokens"),
)


def _token_count(value: Any) -> int | None:
    """Returns a usage count if it is a non-negative integer (or integral float)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def usage_tokens(response: Any) -> int | None:
    """Returns the total tokens a decoded JSON response reports in ``usage``.

    ``usage.total_tokens`` if present (OpenAI chat, embeddings, Responses
    API), else ``input_tokens + output_tokens`` plus Anthropic's
    ``cache_creation_input_tokens`` and ``cache_read_input_tokens``, else
    ``prompt_tokens + completion_tokens``. Missing members of a group count 0.

    Args:
        response: The decoded response body; anything else is tolerated.

    Returns:
        The total, or None if the response is not a mapping or has no usable
        usage. Never raises.
    """
    if not isinstance(response, Mapping):
        return None
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return None
    total = _token_count(usage.get("total_tokens"))
    if total is not None:
        return total
    for group in _USAGE_GROUPS:
        counts = [_token_count(usage.get(field)) for field in group]
        if any(c is not None for c in counts):
            return sum(c for c in counts if c is not None)
    return None
