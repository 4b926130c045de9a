"""Prometheus metrics of executors: one collector, one line to register.

:func:`register_metrics` adds an executor, under a name, to the registry's
:class:`ExecutorCollector`; each scrape reads ``executor.metrics.snapshot()``
of every executor registered there, labelled ``executor="<name>"``. Nothing
is counted twice and nothing runs between scrapes.

The collector holds executors by weak reference: an executor dropped
without ``shutdown()`` (a notebook cell run again) still ends its threads,
and its series leave the next scrape. Registering a name again (the cell
re-run) replaces the executor behind it instead of failing with
prometheus_client's "duplicated timeseries".

Series (every one labelled ``executor``):

==========================================  =======  ==========================================
``apiexec_calls_total{status}``             counter  calls ended: completed, failed, cancelled
``apiexec_retries_total``                   counter  attempts beyond each call's first
``apiexec_responses_total``                 counter  HTTP responses seen
``apiexec_rate_limited_total``              counter  429 responses among them
``apiexec_tokens_reserved_total``           counter  tokens reserved at admission
``apiexec_tokens_used_total``               counter  tokens the responses reported using
``apiexec_admission_wait_seconds``          summary  waits for admission (rate limits): ``_count``
                                                     calls admitted, ``_sum`` seconds, recent 0.5, 0.99
``apiexec_in_flight``                       gauge    calls admitted and not yet ended
``apiexec_queue_depth``                     gauge    calls waiting in the queue
``apiexec_latency_seconds{quantile}``       gauge    0.5, 0.9 and 0.99 of recent call durations
``apiexec_available_requests``              gauge    requests the rate limiter has now
``apiexec_available_tokens``                gauge    tokens the rate limiter has now
==========================================  =======  ==========================================

A quantile with no sample yet, and an available level without a limit, are
left out. Any other figure a snapshot carries (a gauge added with
``metrics.gauge(name, read)``) is exported as ``apiexec_<name>``.

``prometheus_client`` is optional (``pip install 'apiexec[prometheus]'``)
and imported only by this module.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> from apiexec.execution.executor import Executor
    >>> registry = CollectorRegistry()
    >>> with Executor() as ex:
    ...     _ = register_metrics(ex, name="openai", registry=registry)
    ...     ex.submit(pow, 2, 10).result()
    1024
    >>> b'apiexec_calls_total{executor="openai",status="completed"} 1.0' in generate_latest(registry)
    True
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from apiexec.errors import ConfigError

logger = logging.getLogger(__name__)

PREFIX: Final = "apiexec"

#: Snapshot figures exported as counters: key -> (series name, help).
COUNTERS: Final = {
    "retries": ("retries", "Attempts beyond each call's first."),
    "responses": ("responses", "HTTP responses seen."),
    "rate_limited": ("rate_limited", "HTTP 429 responses seen."),
    "tokens_reserved": ("tokens_reserved", "Tokens reserved at admission."),
    "tokens_used": ("tokens_used", "Tokens the responses reported using."),
}

#: Snapshot figures exported as plain gauges.
GAUGES: Final = {
    "in_flight": "Calls admitted and not yet ended.",
    "queue_depth": "Calls waiting in the queue.",
}

#: Quantiles of the admission-wait summary: label -> snapshot key.
WAIT_QUANTILES: Final = {"0.5": "admission_wait_p50", "0.99": "admission_wait_p99"}

#: Percentile gauges: series -> (help, {quantile label: snapshot key}).
QUANTILES: Final = {
    "latency_seconds": (
        "Recent call durations (s), by quantile.",
        {"0.5": "latency_p50", "0.9": "latency_p90", "0.99": "latency_p99"},
    ),
}

#: Rate-limiter levels read from the executor: series -> (attribute, help).
LEVELS: Final = {
    "available_requests": ("available_request", "Requests the rate limiter has now."),
    "available_tokens": ("available_token", "Tokens the rate limiter has now."),
}

STATUSES: Final = ("completed", "failed", "cancelled")

_KNOWN: Final = frozenset(
    {*COUNTERS, *GAUGES, *STATUSES, "admission_wait_total", *WAIT_QUANTILES.values(),
     *(k for _, keys in QUANTILES.values() for k in keys.values())}
)


class ExecutorCollector(Collector):
    """Exports the metrics of every executor added to it, by name.

    Example:
        >>> collector = ExecutorCollector()
        >>> collector.names()
        []
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executors: dict[str, weakref.ref[Any]] = {}

    def add(self, executor: Any, name: str) -> None:
        """Export ``executor`` as ``executor="<name>"`` (replacing one of that name)."""
        ref = weakref.ref(executor)
        with self._lock:
            self._executors[name] = ref

    def remove(self, name: str) -> bool:
        """Stop exporting the executor of that name; False if there was none."""
        with self._lock:
            return self._executors.pop(name, None) is not None

    def names(self) -> list[str]:
        """Names of the executors exported (live ones only), sorted."""
        return [name for name, _ in self._live()]

    def _live(self) -> list[tuple[str, Any]]:
        with self._lock:
            pairs = [(name, ref()) for name, ref in self._executors.items()]
            for name, executor in pairs:
                if executor is None:  # dropped: its series go away
                    del self._executors[name]
        return sorted((name, ex) for name, ex in pairs if ex is not None)

    def describe(self) -> Iterator[Metric]:
        """The series this collector owns (so prometheus_client can check clashes)."""
        return iter(_families().values())

    def collect(self) -> Iterator[Metric]:
        """One family per series, one sample per executor (and label)."""
        families = _families()
        extras: dict[str, GaugeMetricFamily] = {}
        for name, executor in self._live():
            try:
                snapshot = executor.metrics.snapshot()
            except Exception:  # one broken executor must not break the scrape
                logger.exception("reading the metrics of executor %r failed", name)
                continue
            _add_snapshot(families, extras, name, snapshot)
            _add_levels(families, name, executor)
        yield from families.values()
        yield from extras.values()


def _families() -> dict[str, Any]:
    """Empty families of every known series, keyed by series name."""
    families: dict[str, Any] = {
        "calls": CounterMetricFamily(f"{PREFIX}_calls", "Calls ended, by status.", labels=["executor", "status"]),
    }
    for series, doc in COUNTERS.values():
        families[series + "_total"] = CounterMetricFamily(f"{PREFIX}_{series}", doc, labels=["executor"])
    for key, doc in GAUGES.items():
        families[key] = GaugeMetricFamily(f"{PREFIX}_{key}", doc, labels=["executor"])
    families["admission_wait_seconds"] = SummaryMetricFamily(
        f"{PREFIX}_admission_wait_seconds", "Seconds calls waited for admission (rate limits).", labels=["executor"]
    )
    for series, (doc, _) in QUANTILES.items():
        families[series] = GaugeMetricFamily(f"{PREFIX}_{series}", doc, labels=["executor", "quantile"])
    for series, (_, doc) in LEVELS.items():
        families[series] = GaugeMetricFamily(f"{PREFIX}_{series}", doc, labels=["executor"])
    return families


def _add_snapshot(families: dict[str, Any], extras: dict[str, GaugeMetricFamily], name: str,
                  snapshot: dict[str, Any]) -> None:
    for status in STATUSES:
        families["calls"].add_metric([name, status], _number(snapshot.get(status)) or 0.0)
    for key, (series, _) in COUNTERS.items():
        families[series + "_total"].add_metric([name], _number(snapshot.get(key)) or 0.0)
    for key in GAUGES:
        value = _number(snapshot.get(key))
        if value is not None:
            families[key].add_metric([name], value)
    _add_wait_summary(families["admission_wait_seconds"], name, snapshot)
    for series, (_, keys) in QUANTILES.items():
        for quantile, key in keys.items():
            value = _number(snapshot.get(key))
            if value is not None:
                families[series].add_metric([name, quantile], value)
    for key, raw in snapshot.items():  # gauges added by metrics.gauge(...)
        value = _number(raw)
        if key in _KNOWN or value is None or not key.isidentifier():
            continue
        family = extras.get(key)
        if family is None:
            family = extras[key] = GaugeMetricFamily(f"{PREFIX}_{key}", f"Executor figure {key!r}.", labels=["executor"])
        family.add_metric([name], value)


def _add_wait_summary(family: SummaryMetricFamily, name: str, snapshot: dict[str, Any]) -> None:
    """Admission waits as a summary: count (calls admitted), sum, recent quantiles."""
    admitted = int(sum(_number(snapshot.get(k)) or 0.0 for k in ("in_flight", "completed", "failed")))
    family.add_metric([name], admitted, _number(snapshot.get("admission_wait_total")) or 0.0)
    for quantile, key in WAIT_QUANTILES.items():
        value = _number(snapshot.get(key))
        if value is not None:
            family.add_sample(family.name, {"executor": name, "quantile": quantile}, value)


def _add_levels(families: dict[str, Any], name: str, executor: Any) -> None:
    """Rate-limiter levels, for executors that have them (shared storage may fail)."""
    for series, (attribute, _) in LEVELS.items():
        try:
            value = _number(getattr(executor, attribute, None))
        except Exception as exc:  # e.g. Redis down: the scrape goes on without it
            logger.warning("executor %r: %s not read: %s", name, attribute, exc)
            continue
        if value is not None:
            families[series].add_metric([name], value)


def _number(value: Any) -> float | None:
    """A finite int/float as float; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ExecutorCollector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def register_metrics(executor: Any, name: str = "default", registry: CollectorRegistry | None = None) -> ExecutorCollector:
    """Export an executor's metrics to Prometheus, labelled ``executor=name``.

    Args:
        executor: Any apiexec executor (it has ``.metrics``).
        name: Its label value; registering the same name again replaces the
            executor behind it (e.g. a notebook cell run twice).
        registry: Where to register; default prometheus_client's global
            ``REGISTRY`` (what ``start_http_server`` and the WSGI app serve).

    Returns:
        The registry's collector (shared by every executor registered there).

    Raises:
        TypeError: ``executor`` has no ``metrics``.
        ConfigError: ``name`` is not a non-empty string (a ``ValueError``).
        ValueError: Another collector of the registry already owns
            ``apiexec_*`` series (prometheus_client's "duplicated timeseries").

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from apiexec.execution.executor import Executor
        >>> registry, ex = CollectorRegistry(), Executor()
        >>> register_metrics(ex, name="anthropic", registry=registry).names()
        ['anthropic']
    """
    if not hasattr(executor, "metrics"):
        raise TypeError(f"executor: {type(executor).__name__} has no metrics to export")
    if not isinstance(name, str) or not name:
        raise ConfigError("name", f"must be a non-empty string, not {name!r}")
    target = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(target)
        if collector is None:
            collector = ExecutorCollector()
            target.register(collector)  # raises ValueError on a clash with another collector
            _collectors[target] = collector
    collector.add(executor, name)
    return collector


def unregister_metrics(name: str, registry: CollectorRegistry | None = None) -> bool:
    """Stop exporting the executor registered as ``name``.

    Returns:
        True if one was registered under that name.
    """
    target = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(target)
    return collector.remove(name) if collector is not None else False
