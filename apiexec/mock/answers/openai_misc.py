"""OpenAI embeddings, legacy completions and models.

* ``POST /v1/embeddings``: ``input`` as a string, a list of strings, a list of
  token ids or a list of token-id lists; ``dimensions`` (default 8);
  ``encoding_format`` ``float`` or ``base64`` (little-endian float32, as the SDK
  decodes it). Vectors are unit length and derived from a hash of the input.
* ``POST /v1/completions``: ``prompt`` (string, strings, token ids),
  ``max_tokens`` (default 16), ``n``, ``echo``, ``stop``, ``logprobs`` (0..5),
  ``stream`` with ``stream_options.include_usage``.
* ``GET /v1/models`` and ``GET /v1/models/{id}`` (any id: the mock serves every model name).

Example:
    >>> answer = embeddings_answer({"input": [[1, 2, 3]], "dimensions": 4})
    >>> len(answer.payload["data"][0]["embedding"]), answer.total_tokens
    (4, 3)
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from collections.abc import Mapping
from typing import Any, Final

from apiexec.mock.answers.chat import SYSTEM_FINGERPRINT
from apiexec.mock.answers.common import (
    MAX_CHOICES,
    Answer,
    BadRequest,
    estimate_tokens,
    fake_logprob,
    model_of,
    pieces,
    plain_reply,
    positive_int,
    stop_sequences,
)
from apiexec.mock.config import DEFAULT_MODEL, EMBEDDING_DIMENSIONS, is_int
from apiexec.mock.wire import new_id, sse

MAX_DIMENSIONS: Final = 4096
LEGACY_DEFAULT_MAX_TOKENS: Final = 16
MAX_LEGACY_LOGPROBS: Final = 5
OWNED_BY: Final = "apiexec-mock"


# --------------------------------------------------------------------------- embeddings


def embeddings_answer(body: dict[str, Any]) -> Answer:
    """The embeddings of ``body["input"]``."""
    inputs = _embedding_inputs(body.get("input"))
    dimensions = positive_int(body, "dimensions", EMBEDDING_DIMENSIONS, maximum=MAX_DIMENSIONS) or 1
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    tokens = sum(cost for _, cost in inputs)
    data = []
    for i, (key, _) in enumerate(inputs):
        vector = embedding(key, dimensions)
        value: list[float] | str = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": value})
    payload = {
        "object": "list",
        "data": data,
        "model": model_of(body),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Answer(payload, tokens)


def _embedding_inputs(raw: object) -> list[tuple[str, int]]:
    """(hash key, token cost) per input; strings cost ceil(chars / 4), token ids one each."""
    message = "'input' must be a string, a list of strings, a list of token ids or a list of token-id lists"
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise BadRequest(message, "input")
    if all(is_int(t) for t in raw):
        return [(_ids_key(raw), len(raw))]
    out = []
    for item in raw:
        if isinstance(item, str) and item:
            out.append((item, estimate_tokens([item], 0)))
        elif isinstance(item, list) and item and all(is_int(t) and t >= 0 for t in item):
            out.append((_ids_key(item), len(item)))
        else:
            raise BadRequest(message, "input")
    return out


def _ids_key(ids: list[Any]) -> str:
    return "tokens:" + ",".join(str(t) for t in ids)


def embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        seed = text.encode("utf-8") if block == 0 else f"{block}:{text}".encode()
        digest = hashlib.sha256(seed).digest()
        raw += [int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(16)]
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


# --------------------------------------------------------------------------- legacy completions


def completions_answer(body: dict[str, Any]) -> Answer:
    """A legacy ``text_completion`` (and its SSE chunks when streaming)."""
    model = model_of(body, required=True)
    prompts = _prompts(body.get("prompt"))
    n = positive_int(body, "n", 1, maximum=MAX_CHOICES) or 1
    limit = positive_int(body, "max_tokens", LEGACY_DEFAULT_MAX_TOKENS)
    stops = stop_sequences(body, "stop")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not is_int(logprobs) or not 0 <= logprobs <= MAX_LEGACY_LOGPROBS):
        raise BadRequest(f"'logprobs' must be an integer in 0..{MAX_LEGACY_LOGPROBS}", "logprobs")
    choices: list[dict[str, Any]] = []
    prompt_tokens = completion_tokens = 0
    for text, cost in prompts:
        prompt_tokens += cost
        reply, tokens, reason = plain_reply(text, limit, stops)
        full = text + reply if body.get("echo") is True else reply
        for _ in range(n):
            choices.append({
                "text": full,
                "index": len(choices),
                "logprobs": None if logprobs is None else _legacy_logprobs(full, logprobs),
                "finish_reason": "length" if reason == "length" else "stop",
            })
            completion_tokens += tokens
    payload = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    events = _legacy_stream(payload, body) if body.get("stream") is True else None
    return Answer(payload, prompt_tokens + completion_tokens, events)


def _prompts(raw: object) -> list[tuple[str, int]]:
    """(text to quote, prompt tokens) per prompt."""
    message = "'prompt' must be a string, a list of strings, a list of token ids or a list of token-id lists"
    if isinstance(raw, str):
        return [(raw, estimate_tokens([raw], 0))]
    if not isinstance(raw, list) or not raw:
        raise BadRequest(message, "prompt")
    if all(is_int(t) for t in raw):
        return [(" ".join(str(t) for t in raw), len(raw))]
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append((item, estimate_tokens([item], 0)))
        elif isinstance(item, list) and all(is_int(t) for t in item):
            out.append((" ".join(str(t) for t in item), len(item)))
        else:
            raise BadRequest(message, "prompt")
    return out


def _legacy_logprobs(text: str, top: int) -> dict[str, Any]:
    tokens = pieces(text) if text else []
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [fake_logprob(t) for t in tokens],
        "top_logprobs": [{t: fake_logprob(t)} for t in tokens] if top else None,
        "text_offset": offsets,
    }


def _legacy_stream(payload: Mapping[str, Any], body: Mapping[str, Any]) -> list[bytes]:
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base = {key: payload[key] for key in ("id", "object", "created", "model", "system_fingerprint")}
    chunks = []
    for choice in payload["choices"]:
        for piece in pieces(choice["text"]) if choice["text"] else []:
            chunks.append(dict(base, choices=[{"text": piece, "index": choice["index"], "logprobs": None,
                                               "finish_reason": None}]))
        chunks.append(dict(base, choices=[{"text": "", "index": choice["index"], "logprobs": None,
                                           "finish_reason": choice["finish_reason"]}]))
    if include_usage:
        chunks = [dict(c, usage=None) for c in chunks] + [dict(base, choices=[], usage=payload["usage"])]
    return [sse(c) for c in chunks] + [sse("[DONE]")]


# --------------------------------------------------------------------------- models


def openai_model(model_id: str = DEFAULT_MODEL) -> dict[str, Any]:
    """OpenAI's ``Model`` object for ``model_id``."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": OWNED_BY}


def openai_models() -> dict[str, Any]:
    """``GET /v1/models``: one model, ``mock-model``."""
    return {"object": "list", "data": [openai_model()]}
