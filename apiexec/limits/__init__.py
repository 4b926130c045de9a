"""The limits layer: token buckets, backends (memory, SQLite, Redis), the limiter.

Never imports the execution, http, llm, batch or mock layers: it sees a
server's limits only as a plain :class:`~apiexec.limits.bucket.ServerLimits`.

Example:
    >>> from apiexec.limits import RateLimits
    >>> RateLimits.per_minute(requests=600).request_capacity
    10.0
"""

from apiexec.limits.adaptive import AIMD
from apiexec.limits.bucket import LimitBackend, MemoryBackend, ServerLimits
from apiexec.limits.keyed import KeyedLimits
from apiexec.limits.limiter import RateLimiter
from apiexec.limits.rate_limits import RateLimits

__all__ = ["AIMD", "KeyedLimits", "LimitBackend", "MemoryBackend", "RateLimiter", "RateLimits", "ServerLimits"]
