"""Prometheus metrics of the OTLP front end, registered in the registry they are served from
(the process's, as the relay's are): ``logclass serve``'s server.metrics_listen, or
``logclass relay``'s relay.metrics_listen."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

PROTOCOLS = ("grpc", "http")
# Why a request was refused: malformed (400 / INVALID_ARGUMENT), too_large (413 /
# RESOURCE_EXHAUSTED), full (the buffer; 429 / RESOURCE_EXHAUSTED, retried), unavailable (the
# buffer could not write it; 503 / UNAVAILABLE, retried), and OTLP/HTTP's own: not_found,
# method, content_type.
REASONS = ("malformed", "too_large", "full", "unavailable")


class OtlpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.records_in = Counter(
            "logclass_otlp_records_in",
            "Log records of the OTLP requests taken (answered success), by protocol (grpc, http)",
            ["protocol"],
            registry=r,
        )
        self.requests_rejected = Counter(
            "logclass_otlp_requests_rejected",
            "OTLP requests answered with an error, by protocol and reason (malformed, too_large, full, "
            "unavailable; http: unauthenticated, not_found, method, content_type)",
            ["protocol", "reason"],
            registry=r,
        )
        self.records_out = Counter(
            "logclass_otlp_records_out", "Log records the OTLP upstream took (exported from the buffer)", registry=r
        )
        self.records_rejected_upstream = Counter(
            "logclass_otlp_records_rejected_upstream",
            "Log records the OTLP upstream rejected in a partial success (not retried)",
            registry=r,
        )
        self.dead_letter_chunks = Counter(
            "logclass_otlp_dead_letter_chunks",
            "Buffered OTLP requests refused for good or unreadable, moved to the buffer's dead-letter folder",
            registry=r,
        )
        self.full = Counter(
            "logclass_otlp_full",
            "OTLP requests that found the buffer full (otlp.buffer.max_bytes; the sender is told to retry)",
            registry=r,
        )
        self.buffer_bytes = Gauge(
            "logclass_otlp_buffer_bytes", "Bytes of OTLP requests on disk for the upstream", registry=r
        )
        self.buffer_chunks = Gauge(
            "logclass_otlp_buffer_chunks", "OTLP requests (chunk files) queued for the upstream", registry=r
        )
        # Exported at 0 from the start: a rate() of a missing series is no rate.
        for protocol in PROTOCOLS:
            self.records_in.labels(protocol)
            for reason in REASONS:
                self.requests_rejected.labels(protocol, reason)
