"""The OTLP exporter against a real receiving OTLP server (tests/otlp/upstream.py), over gRPC and
HTTP: delivery, the retryable and non-retryable failures the OTLP spec names, partial_success,
an upstream that is down or never answers, the bearer token, and TLS with a client certificate.

Waits between retries are recorded by an injected ``sleep`` (the delay is asserted, not slept)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logclass import config
from logclass.config.settings import OtlpUpstreamSettings
from logclass.otlp.exporter import ExportResult, OtlpExporter, OtlpExporterError, Outcome, retry_after
from tests.certs import make_certs
from tests.conftest import free_port
from tests.otlp.upstream import OtlpUpstream

BASE = config.load().otlp.upstream
PROTOCOLS = ("grpc", "http")


def _settings(protocol: str, endpoint: str | None, **changes: Any) -> OtlpUpstreamSettings:
    changes.setdefault("backoff_ms", 100)
    changes.setdefault("timeout_ms", 5000)
    return dataclasses.replace(BASE, protocol=protocol, endpoint=endpoint, **changes)


def _request(*bodies: str, service: str = "billing") -> ExportLogsServiceRequest:
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    records = [LogRecord(body=AnyValue(string_value=b)) for b in bodies]
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


def _export(
    settings: OtlpUpstreamSettings, request: ExportLogsServiceRequest, sleeps: list[float] | None = None
) -> ExportResult:
    waits = sleeps if sleeps is not None else []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    async def go() -> ExportResult:
        exporter = OtlpExporter(settings, sleep=sleep)
        try:
            return await exporter.export(request)
        finally:
            await exporter.close()

    return asyncio.run(go())


def _endpoint(upstream: OtlpUpstream, protocol: str) -> str:
    return upstream.grpc_endpoint if protocol == "grpc" else upstream.http_endpoint


@pytest.fixture
def upstream() -> Any:
    with OtlpUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("otlp-certs")
    make_certs(d)
    return d


# -- delivery --------------------------------------------------------------------------------------


def test_grpc_delivers_the_request_as_sent(upstream: OtlpUpstream) -> None:
    request = _request("disk full on /var", "user 7 logged in", "backup done")
    result = _export(_settings("grpc", upstream.grpc_endpoint), request)
    assert result == ExportResult(Outcome.DELIVERED, records=3, attempts=1)
    assert result.done
    (got,) = upstream.received
    assert got.protocol == "grpc"
    assert got.request == request


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_http_delivers_protobuf_to_v1_logs(upstream: OtlpUpstream, compression: str) -> None:
    request = _request("a line", "another line")
    result = _export(_settings("http", upstream.http_endpoint + "/", compression=compression), request)
    assert result.outcome is Outcome.DELIVERED
    (got,) = upstream.received
    assert got.request == request
    assert got.headers["content-type"] == "application/x-protobuf"
    assert got.headers.get("content-encoding") == ("gzip" if compression == "gzip" else None)


def test_grpc_gzip_and_headers_reach_the_upstream(upstream: OtlpUpstream) -> None:
    settings = _settings("grpc", upstream.grpc_endpoint, compression="gzip", headers={"X-Scope-OrgID": "tenant-1"})
    assert _export(settings, _request("x")).outcome is Outcome.DELIVERED
    assert upstream.received[0].headers["x-scope-orgid"] == "tenant-1"


# -- retryable failures ----------------------------------------------------------------------------


def test_grpc_unavailable_is_retried_with_backoff_then_delivered(upstream: OtlpUpstream) -> None:
    upstream.fail_next(2, grpc.StatusCode.UNAVAILABLE)
    sleeps: list[float] = []
    result = _export(_settings("grpc", upstream.grpc_endpoint, backoff_ms=100), _request("x"), sleeps)
    assert result.outcome is Outcome.DELIVERED
    assert result.attempts == 3
    assert upstream.calls == 3
    assert len(upstream.received) == 1
    # 100 ms then 200 ms, each with jitter in [0.5, 1.5).
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] < 0.15
    assert 0.1 <= sleeps[1] < 0.3


def test_http_503_retry_after_is_honoured(upstream: OtlpUpstream) -> None:
    upstream.fail_next(1, http_status=503, retry_after="7")
    sleeps: list[float] = []
    result = _export(_settings("http", upstream.http_endpoint), _request("x"), sleeps)
    assert result.outcome is Outcome.DELIVERED
    assert result.attempts == 2
    assert sleeps == [7.0]


def test_http_429_without_retry_after_backs_off(upstream: OtlpUpstream) -> None:
    upstream.fail_next(1, http_status=429)
    sleeps: list[float] = []
    result = _export(_settings("http", upstream.http_endpoint, backoff_ms=1000), _request("x"), sleeps)
    assert result.outcome is Outcome.DELIVERED
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] < 1.5


def test_grpc_resource_exhausted_with_retry_info_waits_as_asked(upstream: OtlpUpstream) -> None:
    upstream.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, retry_info_s=2.5)
    sleeps: list[float] = []
    result = _export(_settings("grpc", upstream.grpc_endpoint), _request("x"), sleeps)
    assert result.outcome is Outcome.DELIVERED
    assert sleeps == [2.5]


def test_grpc_unavailable_with_retry_info_waits_as_asked(upstream: OtlpUpstream) -> None:
    upstream.fail_next(1, grpc.StatusCode.UNAVAILABLE, retry_info_s=0.25)
    sleeps: list[float] = []
    assert _export(_settings("grpc", upstream.grpc_endpoint), _request("x"), sleeps).outcome is Outcome.DELIVERED
    assert sleeps == [0.25]


def test_grpc_resource_exhausted_without_retry_info_is_not_retried(upstream: OtlpUpstream) -> None:
    upstream.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, message="message larger than max")
    result = _export(_settings("grpc", upstream.grpc_endpoint), _request("x"))
    assert result.outcome is Outcome.DEAD_LETTER
    assert result.status == "RESOURCE_EXHAUSTED"
    assert "message larger than max" in result.message
    assert upstream.calls == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retries_are_bounded_then_retry_later(upstream: OtlpUpstream, protocol: str) -> None:
    upstream.fail_next(10, grpc.StatusCode.UNAVAILABLE, message="overloaded")
    sleeps: list[float] = []
    result = _export(_settings(protocol, _endpoint(upstream, protocol), retries=2), _request("x", "y"), sleeps)
    assert result.outcome is Outcome.RETRY_LATER
    assert not result.done
    assert result.attempts == 3
    assert upstream.calls == 3
    assert len(sleeps) == 2
    assert result.delay_s > 0
    assert result.records == 2
    assert result.status == ("UNAVAILABLE" if protocol == "grpc" else "HTTP 503")
    assert "overloaded" in result.message
    assert upstream.received == []


def test_a_wait_past_max_elapsed_ends_the_call(upstream: OtlpUpstream) -> None:
    upstream.fail_next(5, http_status=503, retry_after="5")
    sleeps: list[float] = []
    settings = _settings("http", upstream.http_endpoint, retries=10, max_elapsed_ms=3000)
    result = _export(settings, _request("x"), sleeps)
    assert result.outcome is Outcome.RETRY_LATER
    assert result.attempts == 1
    assert sleeps == []
    assert result.delay_s == 5.0


def test_an_upstream_delay_is_capped(upstream: OtlpUpstream) -> None:
    upstream.fail_next(1, http_status=503, retry_after="86400")
    result = _export(_settings("http", upstream.http_endpoint, retries=0), _request("x"))
    assert result.outcome is Outcome.RETRY_LATER
    assert result.delay_s == 300.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nothing_listening_is_retry_later_after_bounded_attempts(protocol: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    sleeps: list[float] = []
    started = time.monotonic()
    result = _export(_settings(protocol, endpoint, retries=2), _request("x"), sleeps)
    assert result.outcome is Outcome.RETRY_LATER
    assert result.attempts == 3
    assert len(sleeps) == 2
    assert result.status == ("UNAVAILABLE" if protocol == "grpc" else "connect")
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_upstream_restarted_on_its_port_takes_the_batch(protocol: str) -> None:
    upstream = OtlpUpstream().start()
    try:
        settings = _settings(protocol, _endpoint(upstream, protocol), retries=0)
        upstream.stop()
        assert _export(settings, _request("held")).outcome is Outcome.RETRY_LATER
        upstream.start()
        assert _export(settings, _request("held")).outcome is Outcome.DELIVERED
        assert upstream.bodies() == ["held"]
    finally:
        upstream.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timeout_is_honoured_against_an_upstream_that_never_answers(upstream: OtlpUpstream, protocol: str) -> None:
    upstream.hang = True
    started = time.monotonic()
    result = _export(_settings(protocol, _endpoint(upstream, protocol), timeout_ms=300, retries=1), _request("x"))
    elapsed = time.monotonic() - started
    assert upstream.hanging.is_set()
    assert result.outcome is Outcome.RETRY_LATER
    assert result.attempts == 2
    assert result.status == ("DEADLINE_EXCEEDED" if protocol == "grpc" else "timeout")
    assert elapsed < 5  # two attempts of 0.3 s, not the upstream's 30 s hold
    assert upstream.received == []


# -- non-retryable failures and partial success ----------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "fault", "status"),
    [
        ("grpc", {"code": grpc.StatusCode.INVALID_ARGUMENT}, "INVALID_ARGUMENT"),
        ("http", {"http_status": 400}, "HTTP 400"),
        ("http", {"http_status": 500}, "HTTP 500"),
    ],
)
def test_non_retryable_is_dead_letter(
    upstream: OtlpUpstream, protocol: str, fault: dict[str, Any], status: str
) -> None:
    upstream.fail_next(1, message="field 3 is not a LogRecord", **fault)
    sleeps: list[float] = []
    result = _export(_settings(protocol, _endpoint(upstream, protocol)), _request("x"), sleeps)
    assert result.outcome is Outcome.DEAD_LETTER
    assert result.done
    assert result.status == status
    assert "field 3 is not a LogRecord" in result.message  # the google.rpc.Status message
    assert upstream.calls == 1
    assert sleeps == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_success_is_reported_not_retried(upstream: OtlpUpstream, protocol: str) -> None:
    upstream.partial(2, "2 records had timestamps too old")
    result = _export(_settings(protocol, _endpoint(upstream, protocol)), _request("a", "b", "c"))
    assert result.outcome is Outcome.PARTIAL
    assert result.done
    assert result.rejected == 2
    assert result.records == 3
    assert result.message == "2 records had timestamps too old"
    assert upstream.calls == 1


# -- authentication and TLS ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bearer_token_from_file(tmp_path: Path, protocol: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    with OtlpUpstream(token="s3cret") as upstream:
        endpoint = _endpoint(upstream, protocol)
        assert _export(_settings(protocol, endpoint, token_file=str(token_file)), _request("x")).outcome is (
            Outcome.DELIVERED
        )
        assert upstream.received[0].headers["authorization"] == "Bearer s3cret"
        refused = _export(_settings(protocol, endpoint), _request("x"))
        assert refused.outcome is Outcome.DEAD_LETTER
        assert refused.status == ("UNAUTHENTICATED" if protocol == "grpc" else "HTTP 401")
        assert upstream.unauthorized == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mtls_with_the_test_ca(certs: Path, protocol: str) -> None:
    tls = (str(certs / "server.pem"), str(certs / "server.key"), str(certs / "ca.pem"))
    with OtlpUpstream(tls=tls) as upstream:
        endpoint = _endpoint(upstream, protocol)
        assert endpoint.startswith("https://")
        client = dataclasses.replace(
            BASE.tls,
            ca_file=str(certs / "ca.pem"),
            cert_file=str(certs / "client.pem"),
            key_file=str(certs / "client.key"),
        )
        assert _export(_settings(protocol, endpoint, tls=client), _request("over tls")).outcome is Outcome.DELIVERED
        assert upstream.bodies() == ["over tls"]
        # Without the client certificate the handshake fails: retryable, nothing delivered.
        no_cert = dataclasses.replace(client, cert_file=None, key_file=None)
        result = _export(_settings(protocol, endpoint, tls=no_cert, retries=0), _request("refused"))
        assert result.outcome is Outcome.RETRY_LATER
        assert upstream.bodies() == ["over tls"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unknown_ca_is_refused(certs: Path, tmp_path: Path, protocol: str) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_certs(other)
    tls = (str(certs / "server.pem"), str(certs / "server.key"), None)
    with OtlpUpstream(tls=tls) as upstream:
        wrong_ca = dataclasses.replace(BASE.tls, ca_file=str(other / "ca.pem"))
        result = _export(_settings(protocol, _endpoint(upstream, protocol), tls=wrong_ca, retries=0), _request("x"))
        assert result.outcome is Outcome.RETRY_LATER
        assert upstream.calls == 0


# -- settings --------------------------------------------------------------------------------------


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OtlpExporterError, match="endpoint is null"):
        OtlpExporter(_settings("grpc", None))
    with pytest.raises(OtlpExporterError, match="https://"):
        OtlpExporter(_settings("grpc", "http://127.0.0.1:4317", tls=dataclasses.replace(BASE.tls, ca_file="ca.pem")))
    with pytest.raises(OtlpExporterError, match="both cert_file and key_file"):
        OtlpExporter(_settings("http", "https://h:4318", tls=dataclasses.replace(BASE.tls, cert_file="c.pem")))
    with pytest.raises(OtlpExporterError, match="header name"):
        OtlpExporter(_settings("http", "http://h:4318", headers={"bad name": "x"}))
    with pytest.raises(OtlpExporterError, match="line break"):
        OtlpExporter(_settings("http", "http://h:4318", headers={"x-a": "1\r\nx-b: 2"}))
    with pytest.raises(OtlpExporterError, match="token_file"):
        OtlpExporter(_settings("http", "http://h:4318", token_file=str(tmp_path / "absent")))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(OtlpExporterError, match="empty"):
        OtlpExporter(_settings("http", "http://h:4318", token_file=str(empty)))


def test_defaults_have_no_upstream() -> None:
    assert BASE.endpoint is None
    assert BASE.protocol == "grpc"
    assert BASE.headers == {}


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after("120", now) == 120.0
    assert retry_after(" 3 ", now) == 3.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # already past: now
    assert retry_after("soon", now) is None
    assert retry_after("-5", now) is None
    assert retry_after(None, now) is None
