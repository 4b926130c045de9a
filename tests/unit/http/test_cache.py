"""Response cache: keys, TTL, LRU, copies, threads, and its use by Endpoint."""

import threading

import pytest
import responses

from apiexec import APIStatusError, Endpoint, EndpointConfig
from apiexec.call_context import call_context
from apiexec.http.cache import ResponseCache, cache_key

KEY = "apiexec-test-credential-0123456789"
BASE = "https://api.example.com/v1"
URL = f"{BASE}/chat/completions"


class FakeClock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def make(**kw):
    base = {"provider": "test", "endpoint": "chat/completions", "base_url": BASE, "api_key": KEY, "max_retries": 0}
    base.update(kw)
    return Endpoint(EndpointConfig(**base), sleep=lambda s: None)


# -- cache_key --------------------------------------------------------------------------


def test_key_independent_of_dict_order():
    a = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    b = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert cache_key("POST", URL, a) == cache_key("POST", URL, b)


@pytest.mark.parametrize(
    "other",
    [
        ("GET", URL, {"a": 1}),
        ("POST", f"{BASE}/embeddings", {"a": 1}),
        ("POST", URL, {"a": 2}),
        ("POST", URL, {"a": 1, "b": None}),
        ("POST", URL, [{"a": 1}]),
    ],
)
def test_key_differs_on_method_url_or_body(other):
    assert cache_key("POST", URL, {"a": 1}) != cache_key(*other)


def test_key_is_an_opaque_digest():
    key = cache_key("POST", URL, {"prompt": "secret-ish text"})
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert "secret-ish" not in key


# -- ResponseCache ---------------------------------------------------------------------------


def test_put_get_and_counters():
    cache = ResponseCache(max_size=4, ttl=60.0)
    assert cache.get("k") is None
    assert cache.get("k", "dflt") == "dflt"
    cache.put("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    assert (cache.hits, cache.misses) == (1, 2)
    assert len(cache) == 1


def test_falsy_values_are_cached():
    cache = ResponseCache(max_size=4, ttl=60.0)
    cache.put("empty", {})
    cache.put("zero", 0)
    assert cache.get("empty", "miss") == {}
    assert cache.get("zero", "miss") == 0


def test_ttl_expiry_with_injected_clock():
    clock = FakeClock(100.0)
    cache = ResponseCache(max_size=4, ttl=10.0, clock=clock)
    cache.put("k", {"v": 1})
    clock.now = 109.99
    assert cache.get("k") == {"v": 1}
    clock.now = 110.0
    assert cache.get("k") is None
    assert len(cache) == 0


def test_put_refreshes_ttl():
    clock = FakeClock()
    cache = ResponseCache(max_size=4, ttl=10.0, clock=clock)
    cache.put("k", 1)
    clock.now = 8.0
    cache.put("k", 2)
    clock.now = 15.0
    assert cache.get("k") == 2


def test_lru_eviction():
    cache = ResponseCache(max_size=2, ttl=60.0)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now most recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") == 1
    assert cache.get("c") == 3


def test_size_zero_disables():
    cache = ResponseCache(max_size=0, ttl=60.0)
    cache.put("a", 1)
    assert cache.get("a") is None
    assert len(cache) == 0


def test_clear():
    cache = ResponseCache(max_size=2, ttl=60.0)
    cache.put("a", 1)
    cache.clear()
    assert cache.get("a") is None


@pytest.mark.parametrize(("kw", "field"), [({"max_size": -1}, "max_size"), ({"ttl": 0}, "ttl"), ({"ttl": -5}, "ttl")])
def test_invalid_arguments_raise_value_error(kw, field):
    args = {"max_size": 2, "ttl": 1.0, **kw}
    with pytest.raises(ValueError, match=field):
        ResponseCache(**args)


def test_values_are_independent_copies():
    cache = ResponseCache(max_size=2, ttl=60.0)
    original = {"choices": [{"text": "a"}]}
    cache.put("k", original)
    original["choices"].append("mutated after put")
    first = cache.get("k")
    first["choices"][0]["text"] = "mutated by caller"
    second = cache.get("k")
    assert second == {"choices": [{"text": "a"}]}
    assert first is not second


def test_thread_safe_and_bounded():
    cache = ResponseCache(max_size=50, ttl=60.0)
    n = 16
    barrier = threading.Barrier(n)
    errors = []

    def worker(i):
        barrier.wait()
        try:
            for j in range(200):
                cache.put(f"{i}-{j}", {"i": i, "j": j})
                value = cache.get(f"{i}-{j}")
                assert value is None or value == {"i": i, "j": j}
        except Exception as exc:  # noqa: BLE001 - a thread reports its failure here
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert errors == []
    assert len(cache) == 50


# -- Endpoint with cache_control -----------------------------------------------------------


@responses.activate
def test_hit_costs_no_request():
    responses.post(URL, json={"id": "r1"})
    ep = make()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert ep.call(body, cache_control=True) == {"id": "r1"}
    with call_context() as ctx:
        assert ep.call(body, cache_control=True) == {"id": "r1"}
    assert len(responses.calls) == 1
    assert ctx.attempts == 0


@responses.activate
def test_no_cache_without_cache_control():
    responses.post(URL, json={"id": "r1"})
    ep = make()
    ep.call({"a": 1})
    ep.call({"a": 1})
    ep.call({"a": 1}, cache_control=True)
    assert len(responses.calls) == 3
    ep.call({"a": 1}, cache_control=True)
    assert len(responses.calls) == 3


@responses.activate
def test_uncached_call_does_not_fill_cache():
    responses.post(URL, json={"id": "r1"})
    ep = make()
    ep.call({"a": 1})
    assert len(ep.cache) == 0


@responses.activate
def test_different_body_misses():
    responses.post(URL, json={})
    ep = make()
    ep.call({"a": 1}, cache_control=True)
    ep.call({"a": 2}, cache_control=True)
    assert len(responses.calls) == 2


@responses.activate
def test_hit_independent_of_dict_order_and_headers():
    responses.post(URL, json={"ok": True})
    ep = make()
    ep.call({"a": 1, "b": 2}, cache_control=True, headers={"X-Trace": "1"})
    ep.call({"b": 2, "a": 1}, cache_control=True, headers={"X-Trace": "2"})
    assert len(responses.calls) == 1


@responses.activate
def test_key_does_not_depend_on_api_key():
    responses.post(URL, json={"ok": True})
    a = make(api_key="sk-AAAAAAAA")
    b = make(api_key="sk-BBBBBBBB", auth_type="x-api-key", default_headers={"X-Org": "o"})
    body = {"q": 1}
    a.call(body, cache_control=True)
    b.call(body, cache_control=True)
    expected = cache_key("POST", URL, body)
    assert a.cache.get(expected) == {"ok": True}
    assert b.cache.get(expected) == {"ok": True}
    for key in list(a.cache._entries) + list(b.cache._entries):
        assert key == expected
        assert "sk-" not in key


@responses.activate
def test_api_key_never_in_cache_keys():
    responses.post(URL, json={"ok": True})
    ep = make()
    ep.call({"q": 1}, cache_control=True)
    for key, (_, text) in ep.cache._entries.items():
        assert KEY not in key
        assert KEY not in text


@responses.activate
def test_returned_values_are_independent_copies():
    responses.post(URL, json={"choices": [{"text": "a"}]})
    ep = make()
    first = ep.call({"q": 1}, cache_control=True)
    first["choices"][0]["text"] = "changed"
    second = ep.call({"q": 1}, cache_control=True)
    second["choices"].clear()
    third = ep.call({"q": 1}, cache_control=True)
    assert third == {"choices": [{"text": "a"}]}
    assert len(responses.calls) == 1


@responses.activate
def test_errors_are_not_cached():
    responses.post(URL, json={"error": "bad"}, status=400)
    ep = make()
    for _ in range(2):
        with pytest.raises(APIStatusError):
            ep.call({"q": 1}, cache_control=True)
    assert len(responses.calls) == 2
    assert len(ep.cache) == 0


@responses.activate
def test_empty_body_is_not_cached():
    responses.post(URL, body=b"")
    ep = make()
    assert ep.call({"q": 1}, cache_control=True) is None
    assert ep.call({"q": 1}, cache_control=True) is None
    assert len(responses.calls) == 2


@responses.activate
def test_ttl_expiry_through_endpoint():
    responses.post(URL, json={"ok": True})
    clock = FakeClock()
    ep = make()
    ep.cache = ResponseCache(max_size=8, ttl=5.0, clock=clock)
    ep.call({"q": 1}, cache_control=True)
    clock.now = 4.0
    ep.call({"q": 1}, cache_control=True)
    assert len(responses.calls) == 1
    clock.now = 5.0
    ep.call({"q": 1}, cache_control=True)
    assert len(responses.calls) == 2


@responses.activate
def test_cache_size_from_config_bounds_the_cache():
    responses.post(URL, json={"ok": True})
    ep = make(cache_size=2)
    for i in range(5):
        ep.call({"q": i}, cache_control=True)
    assert len(ep.cache) == 2


@responses.activate
def test_get_requests_cached_by_params():
    url = f"{BASE}/models"
    responses.get(url, json={"data": []})
    ep = make(endpoint="models", method="GET")
    ep.call({"limit": 1}, cache_control=True)
    ep.call({"limit": 1}, cache_control=True)
    ep.call({"limit": 2}, cache_control=True)
    assert len(responses.calls) == 2
