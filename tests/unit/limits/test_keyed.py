"""Limits per key: the configuration (JSON/TOML files) and one limiter per key."""

import json
import sqlite3

import pytest

from apiexec.errors import ConfigError
from apiexec.limits.bucket import ServerLimits
from apiexec.limits.keyed import DEFAULT_LIMIT_KEY, KeyedLimiter, KeyedLimits, memory_backends, storage_backends
from apiexec.limits.rate_limits import RateLimits
from apiexec.limits.sqlite_row import TABLE
from tests.helpers import FakeClock


def test_entries_become_rate_limits_per_minute():
    limits = KeyedLimits.from_mapping({
        "gpt-4o": {"requests_per_minute": 500, "tokens_per_minute": 30_000, "burst": 5, "token_burst": 2000},
        "*": {"requests_per_minute": 60},
    })
    assert limits.for_key("gpt-4o") == RateLimits.per_minute(requests=500, tokens=30_000, burst=5, token_burst=2000)
    assert limits.for_key("unknown") == RateLimits.per_minute(requests=60)
    assert KeyedLimits.from_mapping({"a": {}}).for_key("b") is None  # no default: nothing configured


@pytest.mark.parametrize(("data", "message"), [
    ([], "limits: must map model names to limits, got list"),
    ({"m": 5}, "limits[m]: must be a table of limits, got int"),
    ({"m": {"rpm": 5}}, "limits[m].rpm: unknown setting"),
    ({"m": {"requests_per_minute": -1}}, "limits[m].requests_per_minute: must be a finite number > 0, got -1"),
    ({"m": {"tokens_per_minute": True}}, "limits[m].tokens_per_minute: must be a finite number > 0"),
    ({"m": {"burst": "10"}}, "limits[m].burst: must be a finite number > 0, got '10'"),
    ({" ": {}}, "limits: keys must be non-empty model names"),
])
def test_bad_entries_name_the_key_and_setting(data, message):
    with pytest.raises(ConfigError) as info:
        KeyedLimits.from_mapping(data)
    assert message in str(info.value)


def test_json_and_toml_files_load_alike(tmp_path):
    data = {"gpt-4o": {"requests_per_minute": 500}, "*": {"tokens_per_minute": 10_000}}
    (tmp_path / "l.json").write_text(json.dumps(data))
    (tmp_path / "l.toml").write_text('["gpt-4o"]\nrequests_per_minute = 500\n\n["*"]\ntokens_per_minute = 10_000\n')
    (tmp_path / "limits").write_text('["gpt-4o"]\nrequests_per_minute = 500\n\n["*"]\ntokens_per_minute = 10_000\n')
    loaded = [KeyedLimits.load(tmp_path / name) for name in ("l.json", "l.toml", "limits")]
    assert loaded[0] == loaded[1] == loaded[2] == KeyedLimits.from_mapping(data)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("l.json", "{nope", "is not valid JSON"),
    ("l.toml", "[a\nb = ", "is not valid TOML"),
    ("l.toml", "[m]\nrequests_per_minute = 0\n", "limits l.toml[m].requests_per_minute: must be"),
])
def test_bad_files_are_one_clear_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        KeyedLimits.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        KeyedLimits.load(tmp_path / "absent.json")


def test_one_limiter_per_key_each_with_its_own_limits():
    clock = FakeClock()
    keyed = KeyedLimiter(
        KeyedLimits({"slow": RateLimits(requests=1, interval=60.0)}), open_backend=memory_backends(clock.now)
    )
    slow, fast = keyed.limiter("slow"), keyed.limiter("fast")
    assert keyed.limiter("slow") is slow and slow is not fast
    assert slow.try_acquire() and not slow.try_acquire()
    assert all(fast.try_acquire() for _ in range(1000))  # no limit configured for it
    assert sorted(keyed.keys()) == ["fast", "slow"]


def test_a_key_without_limits_learns_its_own_and_pauses_alone():
    clock = FakeClock()
    keyed = KeyedLimiter(KeyedLimits(), open_backend=memory_backends(clock.now))
    a, b = keyed.limiter("a"), keyed.limiter("b")
    a.backend.sync(ServerLimits(limit_requests=60, remaining_requests=0, reset_requests=1.0))
    assert not a.try_acquire()
    a.pause(5.0)
    assert b.try_acquire()
    clock.advance(5.0)
    assert a.try_acquire()


def test_past_the_key_bound_later_keys_share_the_default():
    keyed = KeyedLimiter(KeyedLimits(), open_backend=memory_backends(), max_keys=2)
    keyed.limiter("a"), keyed.limiter("b")
    assert keyed.limiter("c") is keyed.limiter("d") is keyed.limiter(DEFAULT_LIMIT_KEY)


def test_with_storage_each_model_lives_under_key_colon_model(tmp_path):
    db = tmp_path / "limits.db"
    keyed = KeyedLimiter(
        KeyedLimits({"gpt-4o": RateLimits(requests=2, interval=60.0)}),
        open_backend=storage_backends(f"sqlite:///{db}", "prod"),
    )
    keyed.limiter("gpt-4o").try_acquire()
    keyed.limiter("gpt-4o-mini").try_acquire()
    other = KeyedLimiter(
        KeyedLimits({"gpt-4o": RateLimits(requests=2, interval=60.0)}),
        open_backend=storage_backends(f"sqlite:///{db}", "prod"),
    )
    assert other.limiter("gpt-4o").try_acquire()  # the second of 2, shared with the first process
    assert not other.limiter("gpt-4o").try_acquire()
    keys = {row[0] for row in sqlite3.connect(db).execute(f"SELECT key FROM {TABLE}")}
    assert {"prod:gpt-4o", "prod:gpt-4o-mini"} <= keys


def test_after_fork_makes_fresh_limiters_over_the_same_backends():
    keyed = KeyedLimiter(KeyedLimits(), open_backend=memory_backends())
    before = keyed.limiter("a")
    keyed.after_fork()
    after = keyed.limiter("a")
    assert after is not before and after.backend is before.backend


def test_a_huge_model_name_gets_a_short_distinct_key():
    opened = []

    def open_backend(key, limits):
        opened.append(key)
        return memory_backends()(key, limits)

    keyed = KeyedLimiter(KeyedLimits(), open_backend=open_backend)
    a, b = keyed.limiter("m" * 10_000 + "a"), keyed.limiter("m" * 10_000 + "b")
    assert a is not b and keyed.limiter("m" * 10_000 + "a") is a
    assert all(len(key) == 200 for key in opened) and len(set(opened)) == 2


def test_with_redis_each_model_lives_under_key_colon_model(redis_server):
    import redis

    def keyed():
        return KeyedLimiter(
            KeyedLimits({"gpt-4o": RateLimits(requests=1, interval=60.0)}),
            open_backend=storage_backends(redis_server.url, "redis-fleet"),
        )

    first, second = keyed(), keyed()
    assert first.limiter("gpt-4o").try_acquire()
    assert not second.limiter("gpt-4o").try_acquire()  # one a minute, for both processes
    assert second.limiter("gpt-4o-mini").try_acquire()  # another model: its own buckets
    names = {k.decode() for k in redis.Redis.from_url(redis_server.url).keys("*redis-fleet*")}
    assert any(name.endswith("redis-fleet:gpt-4o") for name in names)
