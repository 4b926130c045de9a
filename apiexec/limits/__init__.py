"""The limits layer: token buckets, backends (memory, SQLite, Redis), the limiter.

Never imports the execution, http, llm, batch or mock layers: it sees a
server's limits only as a plain :class:`~apiexec.limits.bucket.ServerLimits`.

Example:
    >>> from apiexec.limits import RateLimits
    >>> RateLimits.per_minute(requests=600).request_capacity
    10.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from apiexec.limits.bucket import LimitBackend, MemoryBackend, ServerLimits
from apiexec.limits.limiter import RateLimiter
from apiexec.limits.rate_limits import RateLimits

if TYPE_CHECKING:
    from apiexec.limits.adaptive import AIMD
    from apiexec.limits.keyed import KeyedLimits

#: Opt-in parts, loaded on first use.
_LAZY = {"AIMD": "apiexec.limits.adaptive", "KeyedLimits": "apiexec.limits.keyed"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

__all__ = ["AIMD", "KeyedLimits", "LimitBackend", "MemoryBackend", "RateLimiter", "RateLimits", "ServerLimits"]
