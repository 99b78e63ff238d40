"""Prometheus metrics of the engine and its front ends, served on their own port (prometheus-client)."""

from __future__ import annotations

import functools
from collections import Counter as Counter_
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from logclass.core.learnt import DROP_REASONS, ORIGINS
from logclass.engine import metrics_server
from logclass.engine.lanes import Lane
from logclass.engine.router import RouterStats
from logclass.store.base import LATENCY_BUCKETS, SharedStore

if TYPE_CHECKING:
    from logclass.engine.engine import Engine


# Latency buckets from 0.5 ms (a warm cache hit) to 30 s (a cold LLM call).
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counters a live view polls, read from the same series Prometheus scrapes."""

    records: dict[tuple[str, str], float]  # (tier, label) -> records since start
    cache: dict[str, float]  # exact / template hits, miss
    lanes: dict[str, tuple[float, float]]  # lane -> (templates queued, running)
    inflight: float
    errors: dict[str, float]


def _values(metric: Any, suffix: str = "") -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in metric.collect()
        for sample in family.samples
        if sample.name == family.name + suffix
    ]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "logclass_request_seconds",
            "Request latency (gRPC method, or HTTP verb and path)",
            ["method"],
            buckets=_LATENCY,
            registry=r,
        )
        self.request_records = Histogram("logclass_request_records", "Records per request", buckets=_SIZES, registry=r)
        self.tier_seconds = Histogram(
            "logclass_tier_seconds", "Time a model tier spends on one call", ["tier"], buckets=_LATENCY, registry=r
        )
        self.tier_records = Counter("logclass_tier_records", "Templates sent to a model tier", ["tier"], registry=r)
        self.batch_records = Histogram(
            "logclass_batch_records", "Templates per call of a model lane", ["lane"], buckets=_SIZES, registry=r
        )
        self.lane_queue = Gauge(
            "logclass_lane_queue_templates", "Templates waiting in a model lane", ["lane"], registry=r
        )
        self.lane_running = Gauge(
            "logclass_lane_running_templates", "Templates a model lane's tier is working on", ["lane"], registry=r
        )
        self.lane_rejected = Counter(
            "logclass_lane_rejected_requests", "Requests refused because a model lane was full", ["lane"], registry=r
        )
        self.inflight = Gauge(
            "logclass_inflight_templates", "Templates on their way through the model lanes", registry=r
        )
        self.cache_hit_ratio = Gauge("logclass_cache_hit_ratio", "Share of records answered by the caches", registry=r)
        self.reloads = Counter(
            "logclass_reloads", "Hot reloads (SIGHUP, the file watch, Admin.Reload), by part and outcome",
            ["part", "outcome"], registry=r,
        )  # fmt: skip
        # Every series from the start, at 0: a dashboard's rate() and "no refusals" alerts see them.
        for part in ("rules", "config", "bundle"):
            for outcome in ("ok", "refused", "restart_required"):
                self.reloads.labels(part, outcome)
        self.model_info = Gauge(
            "logclass_model_info", "The model bundle version serving (always 1)", ["version"], registry=r
        )
        self.memory_templates = Gauge(
            "logclass_memory_templates",
            "Templates the memory tier answers: from the training data (trained) or taught at runtime (learnt)",
            ["kind"],
            registry=r,
        )
        self._engine: Engine | None = None
        # Requests refused, by kind (the gRPC code's name): records' errors are the engines'.
        self.request_errors: Counter_[str] = Counter_()
        # The router counts decisions and cache hits once; these series read its counts, which
        # start from zero in each new engine, so a retired engine's counts are kept: the last
        # one's live (calls in progress finish on it), older ones folded into totals.
        self._retired = _Totals()
        self._retiring: RouterStats | None = None
        r.register(_DecisionCounter(self))
        r.register(_LearntCounter(self))

    def watch_engine(self, engine: Engine) -> None:
        """Gauges read at scrape time, and each tier's own metrics: called again after a hot
        reload swapped engines, so the gauges read the active one (the tiers' ``register_metrics``
        must tolerate a second call on one registry)."""
        if self._engine is not None and self._engine is not engine:
            if self._retiring is not None:
                self._retired.add(self._retiring)
            self._retiring = self._engine.stats
        self._engine = engine
        self.model_info.clear()
        self.model_info.labels(engine.model_version).set(1)
        # A lane the new engine lacks would otherwise keep reading the retired engine's lane.
        self.lane_queue.clear()
        self.lane_running.clear()
        for positioned in engine.lanes:
            lane = positioned.lane
            self.lane_queue.labels(lane.name).set_function(functools.partial(_waiting, lane))
            self.lane_running.labels(lane.name).set_function(functools.partial(_running, lane))
        self.inflight.set_function(lambda: engine.inflight)
        self.cache_hit_ratio.set_function(lambda: engine.stats.cache_hit_ratio)
        for kind in ("trained", "learnt"):
            self.memory_templates.labels(kind).set_function(functools.partial(_memory_templates, engine, kind))
        for tier in engine.tiers:
            tier.register_metrics(self.registry)

    def watch_store(self, store: SharedStore) -> None:
        """The shared store's calls, failures, lookups and claims, read at scrape time."""
        self.registry.register(_StoreCounter(store))

    def count_error(self, kind: str) -> None:
        """A refused request (records' own errors are counted by the engine)."""
        self.request_errors[kind] += 1

    def totals(self) -> _Totals:
        """Decisions and cache counts since start, over every engine this process has served."""
        totals = _Totals()
        totals.merge(self._retired)
        for stats in (self._retiring, self._engine.stats if self._engine is not None else None):
            if stats is not None:
                totals.add(stats)
        return totals

    def snapshot(self) -> Snapshot:
        totals = self.totals()
        running = {labels["lane"]: value for labels, value in _values(self.lane_running)}
        return Snapshot(
            records={key: float(n) for key, n in totals.records().items()},
            cache={"exact": totals.exact, "template": totals.template, "miss": totals.miss},
            lanes={lb["lane"]: (value, running.get(lb["lane"], 0.0)) for lb, value in _values(self.lane_queue)},
            inflight=sum(value for _, value in _values(self.inflight)),
            errors={kind: float(n) for kind, n in self.errors().items()},
        )

    def errors(self) -> Counter_[str]:
        """Records not classified by error, and requests refused by kind."""
        out = self.totals().errors()
        out.update(self.request_errors)
        return out

    def observe_lane(self, lane: str, items: int, seconds: float) -> None:
        self.tier_seconds.labels(lane).observe(seconds)
        self.tier_records.labels(lane).inc(items)
        self.batch_records.labels(lane).observe(items)


@dataclass(slots=True)
class _Totals:
    """RouterStats' counts summed over engines."""

    decided: Counter_[tuple[str, str, str]] = field(default_factory=Counter_)
    exact: int = 0
    template: int = 0
    miss: int = 0

    def add(self, stats: RouterStats) -> None:
        self.decided.update(stats.decided)
        self.exact += stats.exact_hits
        self.template += stats.template_hits
        self.miss += stats.template_misses

    def merge(self, other: _Totals) -> None:
        self.decided.update(other.decided)
        self.exact += other.exact
        self.template += other.template
        self.miss += other.miss

    def records(self) -> Counter_[tuple[str, str]]:
        out: Counter_[tuple[str, str]] = Counter_()
        for (tier, label, _), n in self.decided.items():
            out[tier, label] += n
        return out

    def errors(self) -> Counter_[str]:
        out: Counter_[str] = Counter_()
        for (_, _, error), n in self.decided.items():
            if error:
                out[error] += n
        return out


class _DecisionCounter(Collector):
    """logclass_records, logclass_errors and the cache counters, read at scrape time from the
    engines' own counts (``Metrics.totals``): each decision is counted once, by the router."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        metrics = self._metrics
        totals = metrics.totals()
        records = CounterMetricFamily("logclass_records", "Records classified", labels=["tier", "label"])
        for (tier, label), n in sorted(totals.records().items()):
            records.add_metric([tier, label], n)
        yield records
        errors = CounterMetricFamily("logclass_errors", "Records or requests that failed, by kind", labels=["kind"])
        for kind, n in sorted(metrics.errors().items()):
            errors.add_metric([kind], n)
        yield errors
        hits = CounterMetricFamily("logclass_cache_hits", "Records answered by a cache", labels=["cache"])
        hits.add_metric(["exact"], totals.exact)
        hits.add_metric(["template"], totals.template)
        yield hits
        yield CounterMetricFamily("logclass_cache_misses", "Templates decided by the model tiers", value=totals.miss)


class _StoreCounter(Collector):
    """logclass_store_*: what the shared store did for this process (``SharedStore.stats``)."""

    def __init__(self, store: SharedStore) -> None:
        self._store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        stats = self._store.stats
        yield CounterMetricFamily("logclass_store_calls", "Calls made to the shared store", value=stats.calls)
        seconds = HistogramMetricFamily(
            "logclass_store_seconds", "Time of a store call that answered, by operation", labels=["operation"]
        )
        for operation, latency in sorted(stats.latency.items()):
            running, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latency.counts, strict=True):
                running += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", float(running)))
            seconds.add_metric([operation], buckets, latency.total_s)
        yield seconds
        lessons = CounterMetricFamily(
            "logclass_store_lessons",
            "Lessons (LLM answers, corrections, drops) published to the store, received from it, or "
            "refused as not a lesson",
            labels=["direction"],
        )
        lessons.add_metric(["published"], stats.lessons_published)
        lessons.add_metric(["received"], stats.lessons_received)
        lessons.add_metric(["refused"], stats.lessons_refused)
        yield lessons
        yield CounterMetricFamily(
            "logclass_store_resyncs",
            "Times this node read the store's whole lesson set (start, a gap in the log, the store back)",
            value=stats.resyncs,
        )
        yield CounterMetricFamily(
            "logclass_store_failures",
            "Store calls that failed or timed out (the node decided locally)",
            value=stats.failures,
        )
        yield CounterMetricFamily(
            "logclass_store_skipped", "Store calls not tried while its circuit was open", value=stats.skipped
        )
        lookups = CounterMetricFamily(
            "logclass_store_lookups", "Templates looked up in the store, by result", labels=["result"]
        )
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        yield lookups
        claims = CounterMetricFamily(
            "logclass_store_claims",
            "Claims on new templates: won (this node decides) or held (another node is deciding)",
            labels=["outcome"],
        )
        claims.add_metric(["won"], stats.claims_won)
        claims.add_metric(["held"], stats.claims_held)
        yield claims
        yield GaugeMetricFamily(
            "logclass_store_circuit_open",
            "1 while store calls are skipped (the store was found down), else 0",
            value=float(self._store.circuit_open),
        )


class _LearntCounter(Collector):
    """logclass_learnt_total, read at scrape time from the engine's learnt store: the store
    counts its lessons and outlives engine swaps, so the count only goes up."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "logclass_learnt", "Templates learnt since start, by origin (llm answer, human feedback)", labels=["origin"]
        )
        engine = self._metrics._engine
        learnt = engine.learnt if engine is not None else None
        counts = learnt.counts if learnt is not None else {}
        for origin in ORIGINS:
            family.add_metric([origin], counts.get(origin, 0))
        yield family
        dropped = CounterMetricFamily(
            "logclass_learnt_dropped",
            "Lessons lost, by reason: evicted (over memory.learnt_max_lessons), refused (the store is full of "
            "corrections), bad_line (unreadable in the learnt file at start), unwritable (a line too long to write)",
            labels=["reason"],
        )
        lost = learnt.dropped if learnt is not None else {}
        for reason in DROP_REASONS:
            dropped.add_metric([reason], lost.get(reason, 0))
        yield dropped


def _memory_templates(engine: Engine, kind: str) -> float:
    return engine.memory_templates()[kind]


def _waiting(lane: Lane) -> float:
    return lane.waiting


def _running(lane: Lane) -> float:
    return lane.load - lane.waiting


def serve_metrics(
    metrics: Metrics,
    listen: str,
    setting: str = "server.metrics_listen",
    *,
    token: str | None = None,
    tls: tuple[str, str] | None = None,
) -> None:
    """``metrics`` on ``listen``, behind ``token`` and ``tls`` (cert_file, key_file) when given."""
    metrics_server.serve_metrics(metrics.registry, listen, setting, token=token, tls=tls)
