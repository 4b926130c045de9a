"""Where a batch line's ``url`` goes: normalised, joined below the API root.

A line says ``"url": "/v1/chat/completions"``; the endpoint's base URL is the
API root *including its version* (``https://api.groq.com/openai/v1``,
``https://openrouter.ai/api/v1``, ``https://api.perplexity.ai``), exactly as
``OpenAI(base_url=...)`` reads it. So the line's leading version segment is
the one the base URL already stands for and is dropped: every standard batch
line reaches ``<base>/chat/completions`` whatever the provider's prefix.
A line that repeats the whole base path (``/openai/v1/chat/completions``
below ``.../openai/v1``) is taken relative to it too.

Paths are normalised first (``.`` and ``..`` resolved, also when
percent-encoded) and a path that would climb above the API root is refused:
a line can never send the key to another path, let alone another host.

Example:
    >>> endpoint_path("https://api.groq.com/openai/v1", "/v1/chat/completions")
    'chat/completions'
    >>> endpoint_path("https://api.perplexity.ai", "/v1/chat/completions")
    'chat/completions'
    >>> endpoint_path("http://localhost:8000/v1", "/v1/chat/../embeddings")
    'embeddings'
    >>> endpoint_path("http://localhost:8000/v1", "/v1/../../admin")
    Traceback (most recent call last):
    ...
    apiexec.batch.urls.LineURLError: url '/v1/../../admin' climbs above the API root
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

#: A version segment: v1, v2, v1beta, v1alpha2...
_VERSION: Final = re.compile(r"^v\d+[a-z0-9]*$")
#: Characters a path may never carry (control characters, backslash, spaces).
_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f\\]")


class LineURLError(ValueError):
    """A line's url is not a safe path below the API root."""


def normalise(url: str) -> list[str]:
    """The segments of a line url, ``.``/``..`` resolved.

    Raises:
        LineURLError: A full URL, a query or fragment, a forbidden
            character, an encoded slash, or ``..`` above the root.

    Example:
        >>> normalise("/v1/./chat//completions")
        ['v1', 'chat', 'completions']
    """
    if _FORBIDDEN.search(url):
        raise LineURLError(f"url {url!r} contains a space, control character or backslash")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme or parts.netloc:
        raise LineURLError(f"url {url!r} must be a path such as /v1/chat/completions, not a full URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise LineURLError(f"url {url!r} must not carry a query or fragment")
    segments: list[str] = []
    for raw in parts.path.split("/"):
        decoded = urllib.parse.unquote(raw)
        if "/" in decoded or "\\" in decoded or _FORBIDDEN.search(decoded):
            raise LineURLError(f"url {url!r} contains an encoded slash or control character")
        if decoded in ("", "."):
            continue
        if decoded == "..":
            if not segments:
                raise LineURLError(f"url {url!r} climbs above the API root")
            segments.pop()
            continue
        segments.append(raw)
    return segments


def endpoint_path(base_url: str, url: str) -> str:
    """The endpoint path (relative to ``base_url``) that a line url names.

    Args:
        base_url: The API root, e.g. ``https://api.openai.com/v1``.
        url: The line's url, e.g. ``/v1/chat/completions``.

    Returns:
        A relative path such as ``chat/completions`` (never empty).

    Raises:
        LineURLError: The url is unsafe (see :func:`normalise`) or names no
            endpoint below the root (``/``, ``/v1``).

    Example:
        >>> endpoint_path("https://openrouter.ai/api/v1", "/api/v1/embeddings")
        'embeddings'
    """
    segments = normalise(url)
    base = [s for s in urllib.parse.urlsplit(base_url).path.split("/") if s]
    if base and segments[: len(base)] == base:
        segments = segments[len(base) :]
    elif segments and _VERSION.match(segments[0]):
        segments = segments[1:]
    if not segments:
        raise LineURLError(f"url {url!r} names no endpoint below the API root")
    return "/".join(segments)
