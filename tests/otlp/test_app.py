"""The OTLP front end wired into a process: `logclass relay` (the regex tier: no model to load)
with ``otlp.enabled``, its receivers on free ports, exporting through its durable buffer to the
test upstream (tests/otlp/upstream.py); the metrics on the process's /metrics."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
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
from prometheus_client import CollectorRegistry

from logclass import config
from logclass.engine.metrics import Metrics
from logclass.engine.runtime import Runtime
from logclass.otlp.app import OtlpConfigError, OtlpFrontEnd
from tests.conftest import ROOT, wait_until
from tests.otlp.upstream import OtlpUpstream
from tests.relay.conftest import RelayProcess
from tests.relay.forward_peer import free_port

LINE = "User 12345 logged in."  # the regex tier's "User Action"


def _request(body: str, service: str) -> ExportLogsServiceRequest:
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    record = LogRecord(body=AnyValue(string_value=body))
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=[record])])]
    )


def _attributes(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    out = []
    for resource in request.resource_logs:
        for scope in resource.scope_logs:
            for record in scope.log_records:
                out.append({kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in record.attributes})
    return out


@pytest.fixture
def upstream() -> Iterator[OtlpUpstream]:
    with OtlpUpstream() as receiver:
        yield receiver


def _relay(tmp_path: Path, otlp: dict[str, Any]) -> RelayProcess:
    # The Forward side has an upstream nobody listens on: only OTLP traffic here.
    process = RelayProcess(tmp_path, [free_port()])
    process.config["otlp"] = otlp
    process.config_path.write_text(yaml.safe_dump(process.config))
    return process


def test_relay_runs_the_otlp_front_end(tmp_path: Path, upstream: OtlpUpstream) -> None:
    grpc_port, http_port = free_port(), free_port()
    buffer = tmp_path / "otlp-buffer"
    process = _relay(
        tmp_path,
        {
            "enabled": True,
            "grpc_listen": f"127.0.0.1:{grpc_port}",
            "http_listen": f"127.0.0.1:{http_port}",
            "upstream": {"protocol": "grpc", "endpoint": upstream.grpc_endpoint},
            "buffer": {"path": str(buffer)},
        },
    ).start()
    try:
        wait_until(lambda: "otlp listening" in process.log(), 30, process.log)
        response = httpx.post(
            f"http://127.0.0.1:{http_port}/v1/logs",
            content=_request(LINE, "web").SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            logs_service_pb2_grpc.LogsServiceStub(channel).Export(_request(LINE, "api"), timeout=30)
        assert upstream.wait_for(lambda u: sum(len(r.bodies) for r in u.received) == 2, timeout=30)
        tagged = [a for r in upstream.received for a in _attributes(r.request)]
        assert [(a["log.record.label"], a["log.record.tier"]) for a in tagged] == [("User Action", "regex")] * 2
        assert all(a["log.record.template"] != LINE and a["log.record.template.id"] for a in tagged)

        # Counted before the chunk is removed: once the buffer gauge reads 0 both are counted out.
        wait_until(lambda: process.metrics().get("logclass_otlp_buffer_chunks") == 0, 30, process.log)
        metrics = process.metrics()
        assert metrics['logclass_otlp_records_in_total{protocol="http"}'] == 1
        assert metrics['logclass_otlp_records_in_total{protocol="grpc"}'] == 1
        assert metrics["logclass_otlp_records_out_total"] == 2
        assert metrics["logclass_otlp_records_rejected_upstream_total"] == 0
        assert metrics["logclass_otlp_dead_letter_chunks_total"] == 0
        assert metrics["logclass_otlp_full_total"] == 0

        # A refusal is counted by protocol and reason.
        bad = httpx.post(
            f"http://127.0.0.1:{http_port}/v1/logs",
            content=b"\xff\xff\xff",
            headers={"content-type": "application/x-protobuf"},
            timeout=30,
        )
        assert bad.status_code == 400
        rejected = 'logclass_otlp_requests_rejected_total{protocol="http",reason="malformed"}'
        assert process.metrics()[rejected] == 1
    finally:
        assert process.stop() == 0, process.log()
    log = process.log()
    assert "otlp stopped; 0 requests (0 bytes) stay buffered" in log, log
    assert buffer.is_dir()


def test_otlp_enabled_without_an_upstream_is_refused_at_start(tmp_path: Path) -> None:
    process = _relay(tmp_path, {"enabled": True, "grpc_listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0"})
    done = subprocess.run(
        [sys.executable, "-m", "logclass.cli", "relay", "--config", str(process.config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "otlp.upstream.endpoint is null" in done.stderr


def test_a_reload_retargets_the_attribute_names(tmp_path: Path, upstream: OtlpUpstream) -> None:
    otlp = {
        "enabled": True,
        "grpc_listen": "127.0.0.1:0",
        "http_listen": None,
        "upstream": {"endpoint": upstream.grpc_endpoint},
        "buffer": {"path": str(tmp_path / "buffer")},
    }
    settings = config.load(environ={}, overrides={"router": {"tiers": ["regex"]}, "otlp": otlp})
    runtime = Runtime(settings, Metrics())
    front = OtlpFrontEnd(settings, runtime, CollectorRegistry())
    renamed = config.load(
        environ={},
        overrides={"router": {"tiers": ["regex"]}, "otlp": {**otlp, "attributes": {"label": "class"}}},
    )

    async def go() -> None:
        before = await front.tagger.tag(_request(LINE, "web"), "otlp x")
        assert "log.record.label" in _attributes(before.request)[0]
        step = front.on_swap(renamed)
        assert step is not None
        step()
        after = await front.tagger.tag(_request(LINE, "web"), "otlp x")
        assert "class" in _attributes(after.request)[0]
        assert "log.record.label" not in _attributes(after.request)[0]
        await front.stop(1.0)

    asyncio.run(go())
    with pytest.raises(OtlpConfigError, match=r"otlp\.upstream\.endpoint"):
        OtlpFrontEnd(
            config.load(environ={}, overrides={"otlp": {**otlp, "upstream": {"endpoint": None}}}),
            runtime,
            CollectorRegistry(),
        )


def test_sigterm_keeps_what_the_upstream_did_not_take(tmp_path: Path) -> None:
    """The upstream is down: the request is accepted into the buffer, and stays there after a
    clean stop."""
    grpc_port = free_port()
    buffer = tmp_path / "otlp-buffer"
    process = _relay(
        tmp_path,
        {
            "enabled": True,
            "grpc_listen": f"127.0.0.1:{grpc_port}",
            "http_listen": None,
            "upstream": {"endpoint": f"http://127.0.0.1:{free_port()}", "backoff_ms": 50, "max_elapsed_ms": 200},
            "buffer": {"path": str(buffer)},
        },
    ).start()
    try:
        wait_until(lambda: "otlp listening" in process.log(), 30, process.log)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            logs_service_pb2_grpc.LogsServiceStub(channel).Export(_request(LINE, "web"), timeout=30)
        assert process.metrics()["logclass_otlp_buffer_chunks"] == 1
    finally:
        assert process.stop(signal.SIGTERM) == 0, process.log()
    assert "otlp stopped; 1 requests" in process.log(), process.log()
    assert len(list(buffer.glob("*.chunk"))) == 1


def test_serve_and_relay_build_the_otlp_front_end_when_enabled(tmp_path: Path) -> None:
    """`logclass serve` adds it beside gRPC; `logclass relay` only with an engine to classify with."""
    from logclass.serve import front_ends
    from logclass.service.admin import AdminService
    from logclass.service.classifier import ClassifierService

    otlp = {"enabled": True, "upstream": {"endpoint": "http://127.0.0.1:4317"}, "buffer": {"path": str(tmp_path)}}
    relay = {"upstreams": [{"host": "127.0.0.1", "port": 24224}], "buffer": {"path": str(tmp_path / "relay")}}

    def build(grpc_on: bool, **overrides: Any) -> list[object]:
        settings = config.load(environ={}, overrides={"otlp": otlp, "relay": relay, **overrides})
        runtime = Runtime(settings, Metrics())
        return list(front_ends(settings, runtime, AdminService(ClassifierService(runtime)), grpc=grpc_on))

    async def go() -> None:
        served = build(True)
        assert [type(f).__name__ for f in served] == ["GrpcFrontEnd", "HttpFrontEnd", "OtlpFrontEnd"]
        assert "OTLP/gRPC on 127.0.0.1:4317" in served[-1].describe()  # type: ignore[attr-defined]
        assert [type(f).__name__ for f in build(False)] == ["RelayFrontEnd", "OtlpFrontEnd"]
        with pytest.raises(OtlpConfigError, match=r"relay\.classify"):
            build(False, relay={**relay, "classify": False})
        without = build(True, otlp={**otlp, "enabled": False})
        assert [type(f).__name__ for f in without] == ["GrpcFrontEnd", "HttpFrontEnd"]

    asyncio.run(go())  # the gRPC front end's server is made on a running loop
