"""A bounded, thread-safe response cache with a time-to-live.

Keys come from :func:`cache_key`: the method, the URL and the canonical JSON
of the request body. Headers, and so credentials, never enter a key. Values
are stored as JSON text and parsed on every hit, so callers never share (and
never mutate) one cached object.

Example:
    >>> cache = ResponseCache(max_size=2, ttl=60.0)
    >>> key = cache_key("POST", "https://x/v1/chat", {"a": 1})
    >>> cache.put(key, {"ok": True}); cache.get(key)
    {'ok': True}
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def cache_key(method: str, url: str, body: Any) -> str:
    """A digest of method, URL and canonical body (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method}\n{url}\n{canonical}".encode()).hexdigest()


class ResponseCache:
    """LRU cache of JSON responses that expire after ``ttl`` seconds.

    Args:
        max_size: Most entries kept (0 disables the cache).
        ttl: Seconds an entry stays valid.
        clock: Monotonic clock (injectable for tests).

    Raises:
        ValueError: ``max_size`` below 0 or ``ttl`` not above 0.
    """

    def __init__(self, max_size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise ValueError(f"max_size: must be an int >= 0, got {max_size!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"ttl: must be a number > 0, got {ttl!r}")
        self._max_size = max_size
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value for ``key`` (a fresh copy), or ``default``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self._clock():
                self._entries.pop(key, None)
                self.misses += 1
                return default
            self._entries.move_to_end(key)
            self.hits += 1
            text = entry[1]
        return json.loads(text)

    def put(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value, evicting the least recently used."""
        if self._max_size == 0:
            return
        text = json.dumps(value)
        with self._lock:
            self._entries[key] = (self._clock() + self._ttl, text)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
