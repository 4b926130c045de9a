"""IdSet: a set of strings kept on disk, so memory stays flat at any size.

``apiexec run`` must remember every ``custom_id`` it has seen (to report
duplicates) and every one already answered (to resume). Held in a Python
set, that costs about 150 bytes per line: 150 MB for a million lines. An
:class:`IdSet` keeps them in a private temporary SQLite database instead
(deleted when closed): a page cache of ``CACHE_KIB`` (256 KiB) whatever the count, at
a few microseconds per operation.

Example:
    >>> ids = IdSet()
    >>> ids.add("a"), ids.add("a"), "a" in ids, "b" in ids
    (True, False, True, False)
    >>> ids.close()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

#: SQLite page cache per set, in KiB.
CACHE_KIB: Final = 256


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

    def add(self, item: str) -> bool:
        """Add ``item``; True if it was not there before."""
        added = self._db.execute("INSERT OR IGNORE INTO ids VALUES (?)", (item,)).rowcount == 1
        self._count += added
        return added

    def update(self, items: Iterable[str]) -> None:
        """Add many items in one transaction."""
        self._db.execute("BEGIN")
        try:
            for item in items:
                self.add(item)
        finally:
            self._db.execute("COMMIT")

    def __contains__(self, item: object) -> bool:
        if not self._count or not isinstance(item, str):
            return False  # empty (a run that starts afresh): no SQLite lookup per line
        return self._db.execute("SELECT 1 FROM ids WHERE id = ?", (item,)).fetchone() is not None

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Drop the database. Safe twice."""
        self._db.close()
