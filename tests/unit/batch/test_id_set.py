

def test_page_cache_is_capped_so_memory_stays_flat():
    from apiexec.batch.id_set import CACHE_KIB, IdSet

    ids = IdSet()
    try:
        ids.update(f"request-{i}" for i in range(20_000))
        assert ids._db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
        assert len(ids) == 20_000 and "request-19999" in ids and "request-20000" not in ids
    finally:
        ids.close()
