"""mock layer: a local mock of the OpenAI and Anthropic HTTP APIs (see :mod:`apiexec.mock.server`).

Imports only :mod:`apiexec.errors` and :mod:`apiexec._checks`, so it stays an
independent oracle for the client's limiter and error handling. The names below
load on first use, so that the CLI importing :mod:`apiexec.mock.command` at
start-up does not import the server.

Example:
    >>> from apiexec.mock import MockServerConfig
    >>> MockServerConfig(port=0).host
    '127.0.0.1'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apiexec.mock.server import MockServer, MockServerConfig, MockServerStats, serve_forever

__all__ = ["MockServer", "MockServerConfig", "MockServerStats", "serve_forever"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("apiexec.mock.server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
