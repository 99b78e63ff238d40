"""Prometheus metrics of the relay, registered in the registry they are served from: the gRPC
server's when the relay runs inside ``logclass serve``, its own under ``logclass relay``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From a warm in-memory ack (~1 ms with the fsync) to a sender held back by a full buffer.
HOLD_OUTCOMES = ("labelled", "pending", "hold_full")
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.records_in = Counter(
            "logclass_relay_records_in", "Records received from senders, by Forward mode", ["mode"], registry=r
        )
        self.records_out = Counter("logclass_relay_records_out", "Records acknowledged by an upstream", registry=r)
        self.fallback_records = Counter(
            "logclass_relay_fallback_records",
            "Records forwarded with relay.fallback_label, by reason (timeout, queue_full, internal, missing_message)",
            ["reason"],
            registry=r,
        )
        self.skipped_records = Counter(
            "logclass_relay_skipped_records",
            "Records forwarded untouched because they match relay.opt_out (never sent to the pipeline)",
            registry=r,
        )
        self.connections = Gauge("logclass_relay_connections", "Open sender connections", registry=r)
        self.split_chunks = Counter(
            "logclass_relay_split_chunks",
            "Chunks an upstream kept refusing while it took others, split in two (relay.forward.dead_letter_after)",
            registry=r,
        )
        self.dead_letter_chunks = Counter(
            "logclass_relay_dead_letter_chunks",
            "Single-record chunks an upstream kept refusing, moved to the buffer's dead-letter folder",
            registry=r,
        )
        self.protocol_errors = Counter(
            "logclass_relay_protocol_errors",
            "Sender connections closed for a protocol error, by kind (malformed, invalid, too_large, auth; "
            "connections: refused over relay.max_connections)",
            ["kind"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            "logclass_relay_ack_seconds",
            "From a request's arrival to its ack to the sender (classified and durably queued)",
            buckets=_LATENCY,
            registry=r,
        )
        self.backpressure = Counter(
            "logclass_relay_backpressure",
            "Requests that found the buffer full (outcome: waited, refused: closed unacknowledged)",
            ["outcome"],
            registry=r,
        )
        self.buffer_chunks = Gauge("logclass_relay_buffer_chunks", "Chunk files queued for the upstream", registry=r)
        self.buffer_bytes = Gauge("logclass_relay_buffer_bytes", "Bytes queued on disk for the upstream", registry=r)
        self.buffer_limit_bytes = Gauge("logclass_relay_buffer_limit_bytes", "relay.buffer.max_bytes", registry=r)
        self.upstream_errors = Counter(
            "logclass_relay_upstream_errors",
            "Upstream failures, by upstream and kind (connect, handshake, ack_timeout, closed, protocol)",
            ["upstream", "kind"],
            registry=r,
        )
        self.upstream_connected = Gauge(
            "logclass_relay_upstream_connected", "1 for the upstream the relay is sending to", ["upstream"], registry=r
        )
        self.upstream_ack_seconds = Histogram(
            "logclass_relay_upstream_ack_seconds",
            "From sending a batch of chunks to the upstream's last ack",
            buckets=_LATENCY,
            registry=r,
        )
        self.held_records = Gauge(
            "logclass_relay_held_records",
            "Records held in the buffer until their template's label lands (relay.hold)",
            registry=r,
        )
        self.held_bytes = Gauge("logclass_relay_held_bytes", "Bytes of held chunks (relay.hold.max_bytes)", registry=r)
        self.hold_seconds = Histogram(
            "logclass_relay_hold_seconds",
            "How long a held chunk waited for its records' labels",
            buckets=(*_LATENCY, 120, 300),
            registry=r,
        )
        self.hold_records = Counter(
            "logclass_relay_hold_records",
            "Records of new templates the hold dealt with, by outcome: labelled (released with their label), "
            "pending (released pending at relay.hold.max_s), hold_full (not held: relay.hold.max_bytes reached)",
            ["outcome"],
            registry=r,
        )
        for outcome in HOLD_OUTCOMES:  # exported at 0 from the start: a rate() of a missing series is no rate
            self.hold_records.labels(outcome)
        self.delivery_seconds = Histogram(
            "logclass_relay_delivery_seconds",
            "From a chunk file's durable write to the upstream's ack (time spent queued and in flight)",
            buckets=_LATENCY,
            registry=r,
        )
