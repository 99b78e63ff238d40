"""The OTLP front end through faults, as senders and the upstream see it: a real `logclass relay`
process with ``otlp.enabled`` (the regex tier), the test upstream (tests/otlp/upstream.py) and
real OTLP/HTTP and OTLP/gRPC clients. Every record carries a unique ``seq`` attribute and is
counted end to end: none lost; after a SIGKILL of the relay with nothing exported yet, none
duplicated; after the upstream dies mid-stream, duplicates are allowed (at-least-once) and
reported."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.conftest import wait_until
from tests.otlp.upstream import OtlpUpstream
from tests.relay.conftest import RelayProcess
from tests.relay.forward_peer import free_port

LINES = [
    ("User User{} logged in.", "User Action"),
    ("System reboot initiated by user User{}.", "System Notification"),
    ("Backup completed successfully. {}", "System Notification"),
]
LABEL = "log.record.label"
PER_REQUEST = 10


def _request(prefix: str, start: int) -> ExportLogsServiceRequest:
    records = [
        LogRecord(
            body=AnyValue(string_value=LINES[i % 3][0].format(i)),
            attributes=[KeyValue(key="seq", value=AnyValue(string_value=f"{prefix}-{i}"))],
        )
        for i in range(start, start + PER_REQUEST)
    ]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="web"))])
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


class Relay:
    """`logclass relay` with OTLP on both receivers, exporting over OTLP/``protocol`` to
    ``upstream`` (which may be down), with short retry waits."""

    def __init__(self, tmp_path: Path, upstream: OtlpUpstream, protocol: str = "grpc") -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.buffer = tmp_path / "otlp-buffer"
        # The Forward side has an upstream nobody listens on: only OTLP traffic here.
        self.process = RelayProcess(tmp_path, [free_port()])
        self.process.config["otlp"] = {
            "enabled": True,
            "grpc_listen": f"127.0.0.1:{self.grpc_port}",
            "http_listen": f"127.0.0.1:{self.http_port}",
            "upstream": {
                "protocol": protocol,
                "endpoint": upstream.grpc_endpoint if protocol == "grpc" else upstream.http_endpoint,
                "timeout_ms": 2000,
                "backoff_ms": 50,
                "max_backoff_ms": 200,
                "max_elapsed_ms": 300,
            },
            "buffer": {"path": str(self.buffer)},
        }
        self.process.config_path.write_text(yaml.safe_dump(self.process.config))

    def start(self) -> Relay:
        self.process.start()
        starts = self.process.starts
        wait_until(lambda: self.process.log().count("otlp listening") >= starts, 30, self.process.log)
        return self

    def chunks(self) -> list[Path]:
        return sorted(self.buffer.glob("*.chunk"))

    def send(self, prefix: str, requests: int) -> list[str]:
        """``requests`` requests of PER_REQUEST records, alternately over OTLP/HTTP and OTLP/gRPC,
        each answered with success before the next; the seqs sent."""
        sent: list[str] = []
        with (
            httpx.Client(timeout=30) as http,
            grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel,
        ):
            stub = logs_service_pb2_grpc.LogsServiceStub(channel)
            for r in range(requests):
                request = _request(prefix, r * PER_REQUEST)
                if r % 2:
                    stub.Export(request, timeout=30)
                else:
                    response = http.post(
                        f"http://127.0.0.1:{self.http_port}/v1/logs",
                        content=request.SerializeToString(),
                        headers={"content-type": "application/x-protobuf"},
                    )
                    assert response.status_code == 200, response.text
                sent += [f"{prefix}-{i}" for i in range(r * PER_REQUEST, (r + 1) * PER_REQUEST)]
        return sent


def _received(upstream: OtlpUpstream) -> list[dict[str, Any]]:
    """Every record the upstream took, as its attributes."""
    with upstream._cond:
        requests = [r.request for r in upstream.received]
    return [
        {kv.key: kv.value.string_value for kv in record.attributes}
        for request in requests
        for resource in request.resource_logs
        for scope in resource.scope_logs
        for record in scope.log_records
    ]


def _all_arrived(upstream: OtlpUpstream, sent: list[str]) -> bool:
    return set(sent) <= {a.get("seq") for a in _received(upstream)}


def _check(what: str, sent: list[str], upstream: OtlpUpstream) -> int:
    """Asserts no loss and every copy tagged; prints and returns the duplicates count."""
    received = _received(upstream)
    counts = Counter(a["seq"] for a in received)
    assert set(counts) == set(sent), f"lost: {sorted(set(sent) - set(counts))[:10]}"
    untagged = [a["seq"] for a in received if not a.get(LABEL)]
    assert not untagged, f"untagged: {untagged[:10]}"
    labels = {a["seq"]: a[LABEL] for a in received}
    assert {labels[s] for s in sent if s.endswith("-0")} == {"User Action"}
    assert {labels[s] for s in sent if s.endswith("-1")} == {"System Notification"}
    duplicates = sum(counts.values()) - len(counts)
    print(f"{what}: {len(sent)} sent, {len(counts)} distinct received, {duplicates} duplicates")
    return duplicates


def test_sigkill_with_everything_buffered_then_restart_delivers_each_record_once(tmp_path: Path) -> None:
    upstream = OtlpUpstream(grpc_port=free_port(), http_port=free_port())  # not started: down
    relay = Relay(tmp_path, upstream).start()
    try:
        # Accepted while the upstream is down: each request durably buffered, none exported.
        sent = relay.send("kill", 20)
        assert len(relay.chunks()) == 20
        metrics = relay.process.metrics()
        assert metrics['logclass_otlp_records_in_total{protocol="http"}'] == 100
        assert metrics['logclass_otlp_records_in_total{protocol="grpc"}'] == 100
        relay.process.kill()

        # Restarted on the same buffer, then the upstream comes up: everything, exactly once.
        relay.start()
        upstream.start()
        assert upstream.wait_for(lambda u: _all_arrived(u, sent), timeout=60), relay.process.log()
        wait_until(lambda: not relay.chunks(), 30, relay.process.log)
        assert _check("SIGKILL with everything buffered, restart", sent, upstream) == 0
        assert len(_received(upstream)) == 200
        assert relay.process.metrics()["logclass_otlp_dead_letter_chunks_total"] == 0
    finally:
        upstream.stop()
        relay.process.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_upstream_killed_mid_stream_and_restarted_loses_nothing(tmp_path: Path, protocol: str) -> None:
    upstream = OtlpUpstream().start()
    relay = Relay(tmp_path, upstream, protocol).start()
    sent: list[str] = []
    try:
        # Senders keep sending while the relay exports; the upstream is stopped (its in-flight
        # calls aborted) once it has taken a few requests.
        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(relay.send, "mid-a", 60)
            assert upstream.wait_for(lambda u: len(u.received) >= 3, timeout=30), relay.process.log()
            upstream.stop()
            taken_before = len(_received(upstream))
            sender_was_running = not sending.done()
            sent += sending.result(timeout=60)
        sent += relay.send("mid-b", 5)  # accepted into the buffer while the upstream is down
        assert relay.chunks(), "requests sent while the upstream is down stay buffered"

        upstream.start()
        assert upstream.wait_for(lambda u: _all_arrived(u, sent), timeout=60), relay.process.log()
        wait_until(lambda: not relay.chunks(), 30, relay.process.log)
        print(f"upstream stopped after {taken_before} records; sender still running then: {sender_was_running}")
        # At-least-once: a request the upstream took but whose answer was lost is sent again.
        _check(f"upstream ({protocol}) killed mid-stream and restarted", sent, upstream)
        assert relay.process.metrics()["logclass_otlp_dead_letter_chunks_total"] == 0
    finally:
        upstream.stop()
        assert relay.process.stop() == 0, relay.process.log()
