"""Token estimates for rate limiting.

A call must reserve tokens from the token bucket *before* it is sent, so the
reservation is an estimate: the prompt tokens of the payload plus the output
the request allows. Once the response arrives, :func:`usage_tokens` reads what
the provider really charged, so the estimate only has to be close and, where
it must err, err high.

Counting uses tiktoken when it is installed *and* the BPE file of the needed
encoding is already in tiktoken's cache on disk (see :func:`tokenizer_name`);
otherwise a character heuristic (:func:`heuristic_count`). apiexec never makes
tiktoken download anything. Set ``APIEXEC_TOKENIZER=heuristic`` to force the
heuristic, e.g. for reproducible tests.

Example:
    >>> request = {"model": "gpt-4o-mini", "max_tokens": 100,
    ...            "messages": [{"role": "user", "content": "Hello!"}]}
    >>> estimate_tokens(request) == estimate_prompt_tokens(request) + 100
    True
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from apiexec.errors import ConfigError

logger = logging.getLogger(__name__)

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

CHARS_PER_TOKEN: Final[int] = 4
"""ASCII characters per token in the heuristic (about right for English)."""

TOKENIZER_ENV: Final[str] = "APIEXEC_TOKENIZER"
"""Environment variable; the value ``heuristic`` forces the heuristic tokenizer."""

HEURISTIC: Final[str] = "heuristic"
"""Name of the heuristic tokenizer, as returned by :func:`tokenizer_name`."""

OUTPUT_LIMIT_FIELDS: Final[tuple[str, ...]] = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
)
"""Request fields that cap the output, first present wins."""

EMBEDDING_ONLY_FIELDS: Final[tuple[str, ...]] = ("encoding_format", "dimensions")
"""Request fields only the embeddings endpoint takes."""

O200K_MODEL_PREFIXES: Final[tuple[str, ...]] = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
)
"""Model name prefixes that use o200k_base; every other model is counted with cl100k_base."""

_TIKTOKEN_BLOB_BASE: Final[str] = (
    "https://openaipublic.blob.core.windows.net/encodings/"
)

# Copied from tiktoken_ext/openai_public.py. tiktoken caches each BPE file
# under sha1(url) and verifies its sha256; if tiktoken ever changes either,
# the cached file is simply not found or not trusted and we fall back.
_TIKTOKEN_BLOBS: Final[Mapping[str, tuple[str, str]]] = {
    "cl100k_base": (
        _TIKTOKEN_BLOB_BASE + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        _TIKTOKEN_BLOB_BASE + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

_TEXT_PART_TYPES: Final[frozenset[str]] = frozenset(
    {"text", "input_text", "output_text"}
)
_OPENAI_IMAGE_PART_TYPES: Final[frozenset[str]] = frozenset(
    {"image_url", "input_image"}
)
# Characters of three UTF-8 bytes (CJK, Thai, Indic scripts...); see heuristic_count.
_THREE_BYTE_CHARS: Final[re.Pattern[str]] = re.compile("[\u0800-\uffff]")

TokenCounter = Callable[[str], int]
"""Counts the tokens of one text."""


class _Encoder(Protocol):
    """The part of ``tiktoken.Encoding`` apiexec uses."""

    name: str

    def encode_ordinary(self, text: str) -> list[int]:
        """Encodes text, treating special-token strings as plain text."""


# ---------------------------------------------------------------- counting


def heuristic_count(text: str) -> int:
    """Estimates the tokens of a text without a tokenizer.

    ASCII text costs one token per :data:`CHARS_PER_TOKEN` characters, about
    right for English prose and code. Other scripts pack fewer characters per
    token, and a plain character rule underestimates them badly (a CJK
    character is often a whole token), so each character is weighted by its
    UTF-8 length, with 3-byte characters (CJK, Thai, Indic) rounded up to a
    full token: 2-byte characters (accented Latin, Cyrillic, Greek, Arabic,
    Hebrew) cost 1/2 token, and characters of 3 or 4 bytes (CJK, emoji) cost 1.
    The result is rounded up, so any non-empty text costs at least 1.

    Args:
        text: The text.

    Returns:
        The estimated token count.
    """
    if text.isascii():
        units = len(text)
    else:
        units = len(text.encode("utf-8", "surrogatepass"))
        units += len(_THREE_BYTE_CHARS.findall(text))
    return -(-units // CHARS_PER_TOKEN)


def encoding_name_for(model: str | None) -> str:
    """Names the tiktoken encoding of a model.

    Args:
        model: Model name, possibly with a provider prefix ("openai/gpt-4o")
            or a fine-tune prefix ("ft:gpt-4o-mini:..."); None if unknown.

    Returns:
        "o200k_base" for gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and the o-series;
        "cl100k_base" for anything else (an approximation for non-OpenAI
        models such as Claude, whose tokenizers are not public).
    """
    if not model:
        return "cl100k_base"
    name = model.lower().rsplit("/", 1)[-1].removeprefix("ft:")
    return "o200k_base" if name.startswith(O200K_MODEL_PREFIXES) else "cl100k_base"


def _tiktoken_cache_dir() -> str:
    """Returns the directory tiktoken caches BPE files in ("" = no cache).

    Mirrors ``tiktoken.load.read_file_cached``.
    """
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _cached_blob_path(encoding_name: str) -> str | None:
    """Returns where tiktoken would cache an encoding's BPE file, or None."""
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        # An empty cache dir disables tiktoken's cache: every load downloads.
        return None
    url = _TIKTOKEN_BLOBS[encoding_name][0]
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def _blob_is_valid(path: str, expected_sha256: str) -> bool:
    """Tells whether a cached BPE file exists and has the expected hash.

    tiktoken deletes a cached file with the wrong hash and downloads it
    again, so a corrupt file must count as missing.
    """
    try:
        with open(path, "rb") as blob:
            digest = hashlib.sha256(blob.read()).hexdigest()
    except OSError:
        return False
    return digest == expected_sha256


@functools.cache
def _load_encoding(encoding_name: str, blob_path: str) -> _Encoder | None:
    """Loads a tiktoken encoding from its cached BPE file, never downloading.

    Cached per (encoding, file path), failures included: a file that appears
    later is only noticed by a new process or a changed cache directory.

    Args:
        encoding_name: A key of ``_TIKTOKEN_BLOBS``.
        blob_path: Where tiktoken caches that encoding's BPE file.

    Returns:
        The encoding, or None if tiktoken or the cached file is missing.
    """
    if not os.path.isfile(blob_path):
        logger.debug(
            "tiktoken %s not cached at %s: using heuristic", encoding_name, blob_path
        )
        return None
    try:
        import tiktoken
    except ImportError:
        logger.debug("tiktoken not installed: using heuristic")
        return None
    if not _blob_is_valid(blob_path, _TIKTOKEN_BLOBS[encoding_name][1]):
        logger.debug(
            "tiktoken cache %s fails its hash check: using heuristic", blob_path
        )
        return None
    try:
        encoding: _Encoder = tiktoken.get_encoding(encoding_name)
    except Exception:  # tiktoken's failures are not part of its API
        logger.debug(
            "cannot load tiktoken %s: using heuristic", encoding_name, exc_info=True
        )
        return None
    return encoding


def _select_encoder(model: str | None) -> _Encoder | None:
    """Returns the tiktoken encoding to count with, or None for the heuristic."""
    if os.environ.get(TOKENIZER_ENV, "").strip().lower() == HEURISTIC:
        return None
    encoding_name = encoding_name_for(model)
    blob_path = _cached_blob_path(encoding_name)
    if blob_path is None:
        return None
    return _load_encoding(encoding_name, blob_path)


def _counter_for(model: str | None) -> TokenCounter:
    """Returns the token counter for a model."""
    encoder = _select_encoder(model)
    if encoder is None:
        return heuristic_count
    encode = encoder.encode_ordinary
    return lambda text: len(encode(text))


def tokenizer_name(*, model: str | None = None) -> str:
    """Names the tokenizer used for a model.

    tiktoken is used only if it is importable, ``APIEXEC_TOKENIZER`` is not
    ``heuristic``, and the encoding's BPE file is already in tiktoken's cache
    (``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else
    ``<tempdir>/data-gym-cache``; file name sha1 of the BPE file's URL) with
    the sha256 tiktoken expects. To enable it, load the encoding once with
    network access, e.g. ``python -c "import tiktoken;
    tiktoken.get_encoding('o200k_base')"``.

    Args:
        model: Model name; None counts as a cl100k_base model.

    Returns:
        "tiktoken:<encoding>" (e.g. "tiktoken:o200k_base") or "heuristic".
    """
    encoder = _select_encoder(model)
    return HEURISTIC if encoder is None else f"tiktoken:{encoder.name}"


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


def _message_tokens(message: Any, count: TokenCounter) -> int:
    """Counts one chat message the way OpenAI's cookbook does: every field plus overhead."""
    if not isinstance(message, Mapping):
        return MESSAGE_OVERHEAD_TOKENS + _value_tokens(message, count)
    tokens = MESSAGE_OVERHEAD_TOKENS
    for key, value in message.items():
        if key == "content":
            tokens += _content_tokens(value, count)
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


def _payload_tokens(request: Mapping[str, Any], count: TokenCounter) -> int:
    """Counts every prompt-bearing field of a request payload."""
    return (
        _value_tokens(request.get("instructions"), count)
        + _content_tokens(request.get("system"), count)
        + _input_tokens(request.get("prompt"), count)
        + _input_tokens(request.get("input"), count)
        + _messages_tokens(request.get("messages"), count)
        + _json_tokens_or_zero(request.get("tools"), count)
    )


def _json_tokens_or_zero(value: Any, count: TokenCounter) -> int:
    """Counts a value as JSON, or 0 if it is None or empty."""
    return _json_tokens(value, count) if value else 0


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
    count = _counter_for(_model_of(request, model))
    return max(_payload_tokens(request, count), MIN_PROMPT_TOKENS)


def _positive_int(value: Any) -> int | None:
    """Returns value if it is an int >= 1 (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _completions_per_request(request: Mapping[str, Any]) -> int:
    """Returns how many completions a request generates (``n``, ``best_of``)."""
    counts = (_positive_int(request.get(field)) for field in ("n", "best_of"))
    return max((c for c in counts if c is not None), default=1)


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
