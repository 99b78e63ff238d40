"""Prometheus metrics for the sidecar, served on their own port (prometheus-client)."""

from __future__ import annotations

from collections import Counter as Counter_
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sidecar.address import split_host_port
from sidecar.decision import Decision, LogRecord
from sidecar.router import RouterStats
from sidecar.tiers.llm.circuit import CircuitBreaker, State

Classify = Callable[[Sequence[LogRecord]], Awaitable[list[Decision]]]

# Latency buckets from 0.5 ms (a warm cache hit) to 30 s (a cold LLM call).
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# logclass_llm_circuit_state: one number per state, worse is higher, so max() across pods or
# over time shows the worst state any pod was in.
CIRCUIT_STATE_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter("logclass_records", "Records classified", ["tier", "label"], registry=r)
        self.errors = Counter("logclass_errors", "Records or requests that failed, by kind", ["kind"], registry=r)
        self.request_seconds = Histogram(
            "logclass_request_seconds", "gRPC request latency", ["method"], buckets=_LATENCY, registry=r
        )
        self.request_records = Histogram("logclass_request_records", "Records per request", buckets=_SIZES, registry=r)
        self.tier_seconds = Histogram(
            "logclass_tier_seconds", "Time a tier spends on one call", ["tier"], buckets=_LATENCY, registry=r
        )
        self.tier_records = Counter("logclass_tier_records", "Records sent to a model tier", ["tier"], registry=r)
        self.batch_records = Histogram(
            "logclass_batch_records", "Records per micro-batch (merged requests)", buckets=_SIZES, registry=r
        )
        self.dropped_records = Counter(
            "logclass_dropped_records",
            "Queued records not computed: the caller left or its deadline passed",
            registry=r,
        )
        self.queue_records = Gauge("logclass_queue_records", "Records waiting in the micro-batcher", registry=r)
        self.cache_hits = Counter("logclass_cache_hits", "Records answered by a cache", ["cache"], registry=r)
        self.cache_misses = Counter("logclass_cache_misses", "Templates decided by the model tiers", registry=r)
        self.llm_calls = Counter(
            "logclass_llm_calls",
            "LLM backend calls by outcome (answered, unavailable, invalid_output)",
            ["outcome"],
            registry=r,
        )
        self.llm_seconds = Histogram("logclass_llm_seconds", "LLM backend call latency", buckets=_LATENCY, registry=r)
        self._router_seen: dict[str, int] = {}
        self.cache_hit_ratio = Gauge("logclass_cache_hit_ratio", "Share of records answered by the caches", registry=r)
        # Registered by watch_llm_circuit only: absent means no circuit (no LLM tier, or llama.cpp).
        self.llm_circuit_state: Gauge | None = None

    def observe_decisions(self, decisions: Sequence[Decision]) -> None:
        # Counted first, then one increment per distinct key: labels().inc() takes a lock and
        # costs microseconds, which per record would be a visible share of a warm request.
        counts = Counter_((d.tier, d.label, d.error) for d in decisions)
        for (tier, label, error), n in counts.items():
            self.records.labels(tier, label).inc(n)
            if error:
                self.errors.labels(error).inc(n)

    def counting(self, classify: Classify) -> Classify:
        """``classify`` with its decisions counted like gRPC's (logclass_records_total, errors):
        the relay classifies through the batcher directly, and its records would go uncounted."""

        async def classify_and_count(records: Sequence[LogRecord]) -> list[Decision]:
            decisions = await classify(records)
            self.observe_decisions(decisions)
            return decisions

        return classify_and_count

    def observe_router(self, stats: RouterStats) -> None:
        """Moves the cache counters by what the router counted since the last call (its counts are
        cumulative; Prometheus counters only go up by increments)."""
        now = {"exact": stats.exact_hits, "template": stats.template_hits, "miss": stats.template_misses}
        for key, value in now.items():
            delta = value - self._router_seen.get(key, 0)
            if delta:
                if key == "miss":
                    self.cache_misses.inc(delta)
                else:
                    self.cache_hits.labels(key).inc(delta)
        self._router_seen = now

    def observe_llm_call(self, outcome: str, seconds: float) -> None:
        # Records the LLM missed its budget for are counted as logclass_records_total{tier="llm_pending"}.
        self.llm_calls.labels(outcome).inc()
        self.llm_seconds.observe(seconds)

    def watch_llm_circuit(self, circuit: CircuitBreaker) -> None:
        """Exports the LLM server's circuit breaker as logclass_llm_circuit_state, read at scrape
        time: the breaker changes state on its own clock (open turns half-open when the cooldown
        ends), with no call to hook."""
        self.llm_circuit_state = Gauge(
            "logclass_llm_circuit_state",
            "LLM server circuit breaker: 0 closed, 1 half-open (one probe allowed), 2 open (calls refused)",
            registry=self.registry,
        )
        self.llm_circuit_state.set_function(lambda: CIRCUIT_STATE_VALUES[circuit.state])

    def observe_tier(self, tier: str, records: int, seconds: float) -> None:
        self.tier_seconds.labels(tier).observe(seconds)
        self.tier_records.labels(tier).inc(records)


def serve_metrics(metrics: Metrics, listen: str, setting: str = "server.metrics_listen") -> None:
    host, port = split_host_port(listen, setting)
    start_http_server(port, addr=host, registry=metrics.registry)
