"""limits layer: token-bucket maths, limit backends, the RateLimiter, storage URLs.

Never imports execution, http, llm, batch or mock (see ``tools/layers.py``).
The SQLite and Redis backends are imported only when a storage URL names
them (:func:`backend_from_url`), so ``import apiexec`` stays light.

Example:
    >>> from apiexec.limits import MemoryBackend, RateLimiter, RateLimits
    >>> limiter = RateLimiter(MemoryBackend(limits=RateLimits.per_second(requests=200, burst=20)))
    >>> limiter.try_acquire()
    True
"""

from apiexec.limits.breaker import CircuitBreaker
from apiexec.limits.bucket import LimitBackend, MemoryBackend, ServerLimits, TokenBucket
from apiexec.limits.limiter import RateLimiter
from apiexec.limits.rate_limits import DEFAULT_INTERVAL, RateLimits
from apiexec.limits.storage import DEFAULT_KEY, DEFAULT_STORAGE, backend_from_url, parse_storage_url

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_KEY",
    "DEFAULT_STORAGE",
    "CircuitBreaker",
    "LimitBackend",
    "MemoryBackend",
    "RateLimiter",
    "RateLimits",
    "ServerLimits",
    "TokenBucket",
    "backend_from_url",
    "parse_storage_url",
]
