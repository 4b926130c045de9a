"""The SQLite limit row: schema, and conversion between a row and buckets.

One row per key. A process writes only the columns it computed (NULL means
"leave as is"), so a process without a request limit never wipes the request
level of one with it. Used by :mod:`apiexec.limits.sqlite`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from apiexec.limits.bucket import TokenBucket, make_bucket
from apiexec.limits.rate_limits import SERVER_LIMIT_WINDOW

TABLE: Final = "apiexec_limits"
CREATE: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key TEXT PRIMARY KEY,
    req_level REAL, req_stamp REAL, req_capacity REAL, req_rate REAL,
    tok_level REAL, tok_stamp REAL, tok_capacity REAL, tok_rate REAL,
    paused_until REAL
)"""
COLUMNS: Final = (
    "req_level", "req_stamp", "req_capacity", "req_rate",
    "tok_level", "tok_stamp", "tok_capacity", "tok_rate",
    "paused_until",
)  # fmt: skip
SELECT: Final = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE key = ?"
UPSERT: Final = (
    f"INSERT INTO {TABLE} (key, {', '.join(COLUMNS)}) VALUES (?, {', '.join('?' * len(COLUMNS))}) "
    f"ON CONFLICT(key) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in COLUMNS)
)

Row = tuple[float | None, ...]


@dataclass
class State:
    """One key's row, as buckets (None where this process has no bucket)."""

    requests: TokenBucket | None
    tokens: TokenBucket | None
    paused_until: float
    clock_went_back: bool = False  # a stamp was clamped: store it, or stay stuck


def load_bucket(
    limit: float | None, capacity: float | None, interval: float, cols: Row, now: float
) -> TokenBucket | None:
    """This process's view of one stored bucket.

    With a limit of its own, the process uses its own capacity and rate on
    the shared level; without one, the capacity and rate a server taught
    (any process) are used, if any.
    """
    level, stamp, learnt_capacity, rate = cols
    bucket = make_bucket(limit, capacity, interval, now)
    if bucket is not None:
        if level is not None and stamp is not None:
            bucket.level, bucket.stamp = min(level, bucket.capacity), min(stamp, now)
        return bucket
    if level is None or stamp is None or not learnt_capacity or not rate:
        return None
    return TokenBucket(
        capacity=learnt_capacity,
        rate=rate,
        level=min(level, learnt_capacity),
        stamp=min(stamp, now),
        ceiling=rate * SERVER_LIMIT_WINDOW,
    )


def dump_bucket(bucket: TokenBucket | None, learned: bool) -> Row:
    if bucket is None:
        return (None, None, None, None)
    if learned:
        return (bucket.level, bucket.stamp, bucket.capacity, bucket.rate)
    return (bucket.level, bucket.stamp, None, None)
