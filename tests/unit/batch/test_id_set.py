

def test_page_cache_is_capped_so_memory_stays_flat():
    from apiexec.batch.id_set import CACHE_KIB, IdSet

    ids = IdSet()
    try:
        ids.update(f"request-{i}" for i in range(20_000))
        assert ids._db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
        assert len(ids) == 20_000 and "request-19999" in ids and "request-20000" not in ids
    finally:
        ids.close()


def test_duplicates_found_exactly_across_flushes():
    from apiexec.batch.id_set import FLUSH_AT, IdSet

    ids = IdSet()
    try:
        n = FLUSH_AT * 3 + 7
        assert all(ids.add(f"id-{i}") for i in range(n))
        assert not any(ids.add(f"id-{i}") for i in range(0, n, 97))  # old and still-pending ones alike
        assert len(ids) == n and all(f"id-{i}" in ids for i in range(0, n, 13))
        assert "id-x" not in ids and 5 not in ids
    finally:
        ids.close()


def test_a_filter_that_always_says_maybe_still_answers_exactly(monkeypatch):
    """Every lookup goes to SQLite when the filter cannot tell: same answers."""
    from apiexec.batch import id_set

    monkeypatch.setattr(id_set, "_positions", lambda item: (1, 2, 3, 4, 5))
    ids = id_set.IdSet()
    try:
        assert ids.add("a") and ids.add("b") and not ids.add("a")
        ids.update(["c", "b"])
        assert len(ids) == 3 and "c" in ids and "d" not in ids
    finally:
        ids.close()


def test_an_empty_set_allocates_no_filter():
    from apiexec.batch.id_set import BLOOM_BYTES, IdSet

    ids = IdSet()
    try:
        assert "x" not in ids and ids._bits is None  # a fresh run's empty "done" set: no MiB spent
        ids.add("x")
        assert ids._bits is not None and len(ids._bits) == BLOOM_BYTES and "x" in ids
    finally:
        ids.close()
