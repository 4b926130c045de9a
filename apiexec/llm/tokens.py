"""Token estimates for rate limiting: the front of :mod:`~apiexec.llm.tokenizer` and :mod:`~apiexec.llm.estimates`.

Counting a text lives in :mod:`apiexec.llm.tokenizer` (tiktoken when it can
be had, else a heuristic that errs high); estimating a request and reading a
response's usage in :mod:`apiexec.llm.estimates`. This module keeps the one
import line their users need.

Example:
    >>> request = {"model": "gpt-4o-mini", "max_tokens": 100,
    ...            "messages": [{"role": "user", "content": "Hello!"}]}
    >>> estimate_tokens(request) == estimate_prompt_tokens(request) + 100
    True
"""

from __future__ import annotations

from apiexec.llm.estimates import (
    ANTHROPIC_IMAGE_TOKENS,
    DEFAULT_OUTPUT_TOKENS,
    EMBEDDING_ONLY_FIELDS,
    IMAGE_TOKENS,
    LOW_DETAIL_IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    MIN_PROMPT_TOKENS,
    NAME_OVERHEAD_TOKENS,
    OTHER_PART_TOKENS,
    OUTPUT_LIMIT_FIELDS,
    REPLY_PRIMING_TOKENS,
    estimate_prompt_tokens,
    estimate_tokens,
    output_reservation,
    usage_tokens,
)
from apiexec.llm.tokenizer import (
    _TIKTOKEN_BLOBS,
    CHARS_PER_TOKEN,
    DOWNLOAD_ENV,
    HEURISTIC,
    TOKENIZER_ENV,
    TokenCounter,
    _cached_blob_path,
    _load_encoding,
    encoding_name_for,
    heuristic_count,
    tokenizer_name,
)

__all__ = [
    "ANTHROPIC_IMAGE_TOKENS",
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "DOWNLOAD_ENV",
    "EMBEDDING_ONLY_FIELDS",
    "HEURISTIC",
    "IMAGE_TOKENS",
    "LOW_DETAIL_IMAGE_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "MIN_PROMPT_TOKENS",
    "NAME_OVERHEAD_TOKENS",
    "OTHER_PART_TOKENS",
    "OUTPUT_LIMIT_FIELDS",
    "REPLY_PRIMING_TOKENS",
    "TOKENIZER_ENV",
    "TokenCounter",
    "_TIKTOKEN_BLOBS",
    "_cached_blob_path",
    "_load_encoding",
    "encoding_name_for",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "heuristic_count",
    "output_reservation",
    "tokenizer_name",
    "usage_tokens",
]
