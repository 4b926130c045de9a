"""Find the fenced code blocks of a Markdown page, with the test directive before each.

A page's blocks are what its readers copy, so the docs tests run them. A block
that is a fragment (a synopsis, a file layout, a line that needs a host the
reader has) is marked with an HTML comment on the line before its fence,
which Markdown renderers (and the mkdocs site) do not show::

    <!-- docs-test: skip needs a Redis server named "limits" -->
    ```python
    ...
    ```

The reason is required: a skip nobody can explain is a sample that rots.

Example:
    >>> page = "text\\n<!-- docs-test: skip a synopsis -->\\n```bash\\napiexec run IN -o OUT\\n```\\n"
    >>> [(b.lang, b.line, b.skip) for b in code_blocks(page)]
    [('bash', 4, 'a synopsis')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_FENCE: Final = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE: Final = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<verb>\w+)\s*(?P<reason>.*?)\s*-->\s*$")


class DirectiveError(ValueError):
    """A ``docs-test`` comment that is not understood (the message says where)."""


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block.

    Attributes:
        lang: The info string's first word (``python``, ``bash``...), or "".
        code: The block's text, de-indented by the fence's indentation.
        line: The 1-based line of its first code line.
        skip: The reason given in a ``docs-test: skip`` directive, or None.
    """

    lang: str
    code: str
    line: int
    skip: str | None = None


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block of ``text``, in order.

    Raises:
        DirectiveError: A ``docs-test`` directive with an unknown verb or no
            reason, or a fence never closed.
    """
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise DirectiveError(f"line {i + 1}: a code fence is never closed")
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
        info = opening["info"].strip()
        lang = info.split()[0].strip("{}.") if info else ""
        blocks.append(CodeBlock(lang, "\n".join(body) + "\n", i + 2, _skip_reason(lines, i)))
        i = end + 1
    return blocks


def _skip_reason(lines: list[str], fence_index: int) -> str | None:
    """The reason of a directive on the nearest non-blank line above the fence."""
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    found = _DIRECTIVE.match(lines[j]) if j >= 0 else None
    if found is None:
        return None
    if found["verb"] != "skip":
        raise DirectiveError(f"line {j + 1}: unknown docs-test directive {found['verb']!r} (only 'skip REASON')")
    if not found["reason"]:
        raise DirectiveError(f"line {j + 1}: 'docs-test: skip' needs a reason")
    return found["reason"]
