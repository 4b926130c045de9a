"""IdSet: a set of strings kept on disk, so memory stays flat at any size.

``apiexec run`` must remember every ``custom_id`` it has seen (to report
duplicates) and every one already answered (to resume). Held in a Python
set, that costs about 150 bytes per line: 150 MB for a million lines. An
:class:`IdSet` keeps them in a private temporary SQLite database instead
(deleted when closed), with a page cache of ``CACHE_KIB`` (256 KiB) whatever
the count.

A SQLite call releases the GIL, and the reading thread that makes it then
waits for a busy worker to give the GIL back: two calls per line made the
reader the run's bottleneck. So a fixed-size Bloom filter (``BLOOM_BYTES``,
1 MiB) answers first: an item it has never seen is certainly new (the usual
case), is remembered in memory and written to SQLite with others in one
transaction; only an item the filter may have seen (a real duplicate, or
about one in a hundred at a million items) asks SQLite.

Example:
    >>> ids = IdSet()
    >>> ids.add("a"), ids.add("a"), "a" in ids, "b" in ids
    (True, False, True, False)
    >>> ids.close()
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from typing import Final

#: SQLite page cache per set, in KiB.
CACHE_KIB: Final = 256
#: Size of the Bloom filter in front of SQLite (about 2% false "maybe" at 1M items).
BLOOM_BYTES: Final = 1 << 20
_BLOOM_MASK: Final = BLOOM_BYTES * 8 - 1  # 23 bits: five positions from one 128-bit digest
#: New items written to SQLite together.
FLUSH_AT: Final = 1024


def _positions(item: str) -> tuple[int, int, int, int, int]:
    """The filter's five bit positions for ``item``: 23-bit slices of one 128-bit digest."""
    digest = hashlib.blake2b(item.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    h = int.from_bytes(digest, "little")
    mask = _BLOOM_MASK
    return (h & mask, (h >> 23) & mask, (h >> 46) & mask, (h >> 69) & mask, (h >> 92) & mask)


def _all_set(bits: bytearray, positions: tuple[int, ...]) -> bool:
    """Whether the filter has every bit of ``positions`` (the item may have been added)."""
    return all(bits[p >> 3] & (1 << (p & 7)) for p in positions)


class IdSet:
    """A set of strings on disk. Use from one thread (the one that made it)."""

    def __init__(self) -> None:
        # "" opens a private temporary on-disk database, removed on close.
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        # SQLite's default page cache (2 MiB per connection) fills slowly as ids
        # accumulate, so a run's memory crept up for hundreds of thousands of
        # lines; a small cache keeps it flat (the pages live in the OS cache).
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self._count = 0
        self._bits: bytearray | None = None  # the filter, made at the first add: an empty set costs nothing
        self._pending: list[tuple[str]] = []  # certainly new, not yet in SQLite

    def add(self, item: str) -> bool:
        """Add ``item``; True if it was not there before."""
        positions = _positions(item)
        bits = self._bits
        if bits is None:
            bits = self._bits = bytearray(BLOOM_BYTES)
        if _all_set(bits, positions):  # maybe seen: SQLite decides
            self._flush()
            added = self._db.execute("INSERT OR IGNORE INTO ids VALUES (?)", (item,)).rowcount == 1
        else:
            added = True
            self._pending.append((item,))
            if len(self._pending) >= FLUSH_AT:
                self._flush()
        if added:
            for p in positions:
                bits[p >> 3] |= 1 << (p & 7)
            self._count += 1
        return added

    def update(self, items: Iterable[str]) -> None:
        """Add many items."""
        for item in items:
            self.add(item)
        self._flush()

    def _flush(self) -> None:
        """Write the items known to be new, in one transaction."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT INTO ids VALUES (?)", pending)
        finally:
            self._db.execute("COMMIT")

    def __contains__(self, item: object) -> bool:
        if not self._count or not isinstance(item, str):
            return False  # empty (a run that starts afresh): no lookup per line
        bits = self._bits
        if bits is None or not _all_set(bits, _positions(item)):
            return False  # never added: no SQLite call
        self._flush()
        return self._db.execute("SELECT 1 FROM ids WHERE id = ?", (item,)).fetchone() is not None

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Drop the database. Safe twice."""
        self._pending = []
        self._db.close()
