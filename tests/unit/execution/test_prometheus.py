"""The Prometheus exporter of executor metrics (apiexec.execution.prometheus).

Every test scrapes a private CollectorRegistry with ``generate_latest`` and
reads the text back with prometheus_client's own parser.
"""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from apiexec import Event, RateLimitedExecutor
from apiexec.errors import ConfigError, StorageError
from apiexec.execution.executor import Executor
from apiexec.execution.prometheus import ExecutorCollector, register_metrics, unregister_metrics


def scrape(registry):
    """{(sample name, frozenset(labels)): value} of one scrape."""
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def boom():
    raise ValueError("context length exceeded")


def test_counts_by_status_and_every_series_labelled_by_executor():
    registry = CollectorRegistry()
    with Executor() as ex:
        register_metrics(ex, name="openai", registry=registry)
        for i in range(3):
            ex.submit(pow, 2, i).result()
        assert isinstance(ex.submit(boom).exception(timeout=5), ValueError)
        samples = scrape(registry)
    assert value(samples, "apiexec_calls_total", executor="openai", status="completed") == 3
    assert value(samples, "apiexec_calls_total", executor="openai", status="failed") == 1
    assert value(samples, "apiexec_calls_total", executor="openai", status="cancelled") == 0
    assert value(samples, "apiexec_in_flight", executor="openai") == 0
    assert value(samples, "apiexec_queue_depth", executor="openai") == 0
    assert value(samples, "apiexec_admission_wait_seconds_count", executor="openai") == 4
    assert value(samples, "apiexec_admission_wait_seconds_sum", executor="openai") >= 0
    assert value(samples, "apiexec_latency_seconds", executor="openai", quantile="0.99") >= 0
    assert all(dict(labels)["executor"] == "openai" for _, labels in samples)
    # A plain executor has no rate limiter: no level series.
    assert not any(name.startswith("apiexec_available") for name, _ in samples)


def test_rate_limited_executor_exports_tokens_and_levels():
    registry = CollectorRegistry()
    with RateLimitedExecutor(limit_requests=600, limit_tokens=10_000, interval=60.0) as ex:
        register_metrics(ex, name="anthropic", registry=registry)
        ex.submit(Event(abs, args=(-1,), tokens=250)).result()
        expected_tokens = ex.available_token
        expected_requests = ex.available_request
        samples = scrape(registry)
    assert value(samples, "apiexec_tokens_reserved_total", executor="anthropic") == 250
    assert value(samples, "apiexec_tokens_used_total", executor="anthropic") == 0
    # Levels move only by refill between the two reads (10,000 tokens a minute).
    assert abs(value(samples, "apiexec_available_tokens", executor="anthropic") - expected_tokens) <= 20
    assert abs(value(samples, "apiexec_available_requests", executor="anthropic") - expected_requests) <= 2


def test_quantiles_without_samples_are_left_out():
    registry = CollectorRegistry()
    ex = Executor()
    register_metrics(ex, name="idle", registry=registry)
    samples = scrape(registry)
    assert value(samples, "apiexec_calls_total", executor="idle", status="completed") == 0
    assert value(samples, "apiexec_admission_wait_seconds_count", executor="idle") == 0
    assert not any(dict(labels).get("quantile") for _, labels in samples)


def test_several_executors_share_one_collector():
    registry = CollectorRegistry()
    with Executor() as a, Executor() as b:
        first = register_metrics(a, name="openai", registry=registry)
        second = register_metrics(b, name="anthropic", registry=registry)
        a.submit(pow, 2, 2).result()
        samples = scrape(registry)
    assert first is second and first.names() == ["anthropic", "openai"]
    assert value(samples, "apiexec_calls_total", executor="openai", status="completed") == 1
    assert value(samples, "apiexec_calls_total", executor="anthropic", status="completed") == 0


def test_registering_a_name_again_replaces_it():
    registry = CollectorRegistry()
    with Executor() as old:
        register_metrics(old, name="svc", registry=registry)
        old.submit(pow, 2, 2).result()
    with Executor() as new:  # the notebook cell, run again
        register_metrics(new, name="svc", registry=registry)
        samples = scrape(registry)
    assert value(samples, "apiexec_calls_total", executor="svc", status="completed") == 0


def test_the_collector_does_not_keep_a_dropped_executor_alive():
    registry = CollectorRegistry()
    ex = Executor()
    ex.start()
    collector = register_metrics(ex, name="dropped", registry=registry)
    del ex
    gc.collect()
    assert collector.names() == []
    assert not any(dict(labels).get("executor") == "dropped" for _, labels in scrape(registry))


def test_unregister_stops_exporting():
    registry = CollectorRegistry()
    ex = Executor()
    register_metrics(ex, name="gone", registry=registry)
    assert unregister_metrics("gone", registry=registry) is True
    assert unregister_metrics("gone", registry=registry) is False
    assert unregister_metrics("never", registry=CollectorRegistry()) is False
    assert not any(dict(labels).get("executor") == "gone" for _, labels in scrape(registry))


def test_gauges_added_to_the_metrics_are_exported():
    registry = CollectorRegistry()
    ex = Executor()
    ex.metrics.gauge("open_connections", lambda: 7)
    register_metrics(ex, name="svc", registry=registry)
    assert value(scrape(registry), "apiexec_open_connections", executor="svc") == 7


def test_a_failing_executor_or_storage_does_not_break_the_scrape(monkeypatch):
    registry = CollectorRegistry()
    broken, limited = Executor(), RateLimitedExecutor(limit_requests=60)
    register_metrics(broken, name="broken", registry=registry)
    register_metrics(limited, name="limited", registry=registry)

    def fail():
        raise RuntimeError("metrics unavailable")

    def storage_down():
        raise StorageError("redis://cache:6379/0 unreachable")

    monkeypatch.setattr(broken.metrics, "snapshot", fail)
    monkeypatch.setattr(limited.limiter.backend, "levels", storage_down)
    samples = scrape(registry)
    assert value(samples, "apiexec_calls_total", executor="limited", status="completed") == 0
    assert not any(dict(labels).get("executor") == "broken" for _, labels in samples)
    assert not any(name == "apiexec_available_requests" for name, _ in samples)


def test_a_clash_with_another_collector_is_a_clear_error():
    registry = CollectorRegistry()
    Counter("apiexec_calls", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="apiexec_calls"):
        register_metrics(Executor(), name="x", registry=registry)


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_bad_name_is_refused(name):
    with pytest.raises(ConfigError, match="^name: must be a non-empty string"):
        register_metrics(Executor(), name=name, registry=CollectorRegistry())


def test_an_object_without_metrics_is_refused():
    with pytest.raises(TypeError, match="executor"):
        register_metrics(object(), name="x", registry=CollectorRegistry())


def test_the_default_registry_is_prometheus_clients_global_one():
    from prometheus_client import REGISTRY

    ex = Executor()
    collector = register_metrics(ex, name="global-test")
    try:
        assert "global-test" in collector.names()
        assert b'executor="global-test"' in generate_latest(REGISTRY)
    finally:
        assert unregister_metrics("global-test")


def test_describe_names_the_series_without_reading_executors():
    names = {family.name for family in ExecutorCollector().describe()}
    assert {"apiexec_calls", "apiexec_in_flight", "apiexec_admission_wait_seconds"} <= names
