"""Budget stores (memory, SQLite, Redis): atomic reserve, settle, release, reset."""

import multiprocessing
import os
import threading

import pytest

from apiexec.errors import ConfigError, StorageError
from apiexec.limits.budget import BudgetView, MemoryBudget, budget_from_url, from_nanos, to_nanos
from apiexec.limits.budget_sqlite import SQLiteBudget


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryBudget()
    elif request.param == "sqlite":
        budget = budget_from_url(f"sqlite:///{tmp_path}/budget.db", key="k")
        yield budget
        budget.close()
    else:
        server = request.getfixturevalue("redis_server")
        budget = budget_from_url(server.url, key=f"k-{request.node.name}-{os.getpid()}")
        budget.reset()
        yield budget
        budget.reset()
        budget.close()


def test_to_nanos_rounds_up_and_exactly():
    assert to_nanos(0.1) == 100_000_000
    assert to_nanos(1e-10) == 1
    assert to_nanos(0) == 0
    assert from_nanos(to_nanos(5.0)) == 5.0
    for bad in (-1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ConfigError, match="cost"):
            to_nanos(bad)


def test_reserve_grants_up_to_the_cap_exactly(store):
    assert store.reserve(60, cap=100).granted
    assert store.reserve(40, cap=100).granted  # 100 <= 100
    refused = store.reserve(1, cap=100)
    assert not refused.granted and refused.view == BudgetView(spent=0, reserved=100)
    assert store.view() == BudgetView(0, 100)


def test_settle_trues_up_and_release_refunds(store):
    store.reserve(60, cap=100)
    store.reserve(30, cap=100)
    store.settle(60, 10)  # a call reserved 60 and cost 10
    assert store.view() == BudgetView(spent=10, reserved=30)
    store.release(30)
    assert store.view() == BudgetView(spent=10, reserved=0)
    assert store.reserve(90, cap=100).granted
    assert not store.reserve(1, cap=100).granted


def test_a_call_may_cost_more_than_it_reserved(store):
    store.reserve(10, cap=100)
    store.settle(10, 25)
    assert store.view() == BudgetView(spent=25, reserved=0)


def test_reserved_never_goes_negative(store):
    store.release(50)
    assert store.view() == BudgetView(0, 0)


def test_reset_forgets_everything(store):
    store.reserve(10, cap=100)
    store.settle(10, 10)
    store.reset()
    assert store.view() == BudgetView(0, 0)


def test_amounts_must_be_whole_nanos(store):
    with pytest.raises(ConfigError, match="amount"):
        store.reserve(-1, cap=10)
    with pytest.raises(ConfigError, match="spent"):
        store.settle(0, 1.5)


def test_threads_racing_for_the_last_dollars_never_cross_the_cap(store):
    granted = []
    start = threading.Barrier(8)

    def grab():
        start.wait()
        for _ in range(25):
            if store.reserve(7, cap=500).granted:
                granted.append(7)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(granted) == store.view().reserved <= 500
    assert sum(granted) > 500 - 7


def test_budget_from_url_schemes_and_errors(tmp_path):
    assert isinstance(budget_from_url("memory://"), MemoryBudget)
    budget = budget_from_url(f"sqlite:///{tmp_path}/b.db?timeout=2", key="team")
    assert isinstance(budget, SQLiteBudget) and budget.key == "team"
    budget.close()
    with pytest.raises(ConfigError, match="storage"):
        budget_from_url("postgres://x")
    with pytest.raises(ConfigError, match="key"):
        budget_from_url("memory://", key=" padded ")


def test_sqlite_keys_are_separate_budgets_in_one_file(tmp_path):
    url = f"sqlite:///{tmp_path}/b.db"
    a, b = budget_from_url(url, key="a"), budget_from_url(url, key="b")
    a.reserve(10, cap=10)
    assert b.reserve(10, cap=10).granted
    assert a.view() == b.view() == BudgetView(0, 10)


def test_sqlite_budget_persists_across_opens(tmp_path):
    url = f"sqlite:///{tmp_path}/b.db"
    first = budget_from_url(url, key="k")
    first.reserve(10, cap=100)
    first.settle(10, 7)
    first.close()
    assert budget_from_url(url, key="k").view() == BudgetView(spent=7, reserved=0)


def test_sqlite_missing_directory_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        SQLiteBudget(tmp_path / "nope" / "b.db", key="k")


def test_sqlite_file_removed_mid_run_fails_instead_of_starting_afresh(tmp_path):
    path = tmp_path / "b.db"
    budget = SQLiteBudget(path, key="k")
    budget.reserve(5, cap=10)
    path.unlink()
    with pytest.raises(StorageError, match="removed"):
        budget.reserve(5, cap=10)


def _grab_in_child(url, results):
    budget = budget_from_url(url, key="shared")
    total = 0
    for _ in range(40):
        if budget.reserve(3, cap=200).granted:
            total += 3
    results.put(total)


def test_sqlite_processes_sharing_a_budget_never_cross_the_cap(tmp_path):
    url = f"sqlite:///{tmp_path}/b.db"
    budget_from_url(url, key="shared").close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = [context.Process(target=_grab_in_child, args=(url, results)) for _ in range(3)]
    for child in children:
        child.start()
    totals = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)
    assert sum(totals) == budget_from_url(url, key="shared").view().reserved
    assert 200 - 3 < sum(totals) <= 200


def test_redis_budget_lives_under_its_own_prefix(redis_server):
    import redis

    budget = budget_from_url(redis_server.url, key="prefix-check")
    budget.reset()
    budget.reserve(4, cap=10)
    budget.settle(4, 3)
    client = redis.Redis.from_url(redis_server.url)
    assert client.hgetall("apiexec:budget:prefix-check") == {b"spent": b"3", b"reserved": b"0"}
    assert client.ttl("apiexec:budget:prefix-check") == -1  # a budget does not expire
    budget.reset()


def test_redis_down_is_a_storage_error_without_the_password(start_redis):
    server = start_redis(password="s3cret-pw")
    url = server.url
    server.stop()
    with pytest.raises(StorageError) as caught:
        budget_from_url(url, key="k")
    assert "s3cret-pw" not in str(caught.value)
