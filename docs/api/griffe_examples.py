"""A griffe extension: read a Google-style ``Example:`` section as ``Examples:``.

apiexec's docstrings head their samples ``Example:`` (Google style allows the
singular); griffe only knows the plural and would render the samples as an
admonition of block quotes instead of code. This renames the heading before
parsing, leaving the source untouched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` headings to ``Examples:`` on every object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
