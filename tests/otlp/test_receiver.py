"""The OTLP receivers (gRPC and HTTP) with a fake engine and an in-memory sink: records arrive
tagged, one engine call per request, opt-out and bodiless records untouched, malformed and
oversized requests refused with clear errors, a full sink answered RESOURCE_EXHAUSTED / 429 with
the retry delay; and once end to end through ExporterSink to a real receiving OTLP server.

The clients are grpc.aio and httpx with requests built from opentelemetry-proto (the
OpenTelemetry SDK's exporters are not in the lock). Nothing sleeps: every call is awaited."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
import grpc.aio
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logclass import config
from logclass.config.settings import OtlpSettings
from logclass.core.decision import TIER_PENDING, Decision
from logclass.core.decision import LogRecord as EngineRecord
from logclass.engine.lanes import LaneFullError
from logclass.engine.metrics import Metrics
from logclass.engine.pipeline import build_engine, masker_of
from logclass.engine.runtime import Runtime
from logclass.otlp.codec import encode_json
from logclass.otlp.exporter import OtlpExporter, _retry_info, _status_message
from logclass.otlp.receiver import Accepted, ExporterSink, Full, OtlpGrpcReceiver, OtlpHttpReceiver, Sink
from logclass.otlp.tagger import FALLBACK_TIER, Tagger
from logclass.service.classifier import Budgets
from tests.otlp.upstream import OtlpUpstream

BASE = config.load().otlp
SETTINGS = dataclasses.replace(BASE, max_request_bytes=64 * 1024, max_records_per_request=100)
NAMES = SETTINGS.attributes
FALLBACK = "Unclassified"
BUDGETS = Budgets(0.05, 0.0, 1.0)
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MASKER = masker_of(config.load().templates)


# -- the fakes ------------------------------------------------------------------------------------


@dataclass
class FakeEngine:
    """Decides "login failed ..." as Security Alert; "slow ..." is left pending (its template not
    decided within the budget); ``fail`` raises instead."""

    calls: list[tuple[list[EngineRecord], float | None, Hashable]] = field(default_factory=list)
    fail: Exception | None = None

    async def __call__(
        self, records: Sequence[EngineRecord], budget_s: float | None, owner: Hashable | None = None
    ) -> list[Decision]:
        self.calls.append((list(records), budget_s, owner))
        if self.fail is not None:
            raise self.fail
        return [self._decide(r) for r in records]

    @staticmethod
    def _decide(record: EngineRecord) -> Decision:
        if record.message.startswith("slow"):
            return Decision(FALLBACK, 0.0, TIER_PENDING, "tslow", "v1")
        return Decision("Security Alert", 0.93, "regex", "t" + str(len(record.message)), "v1")


@dataclass
class MemorySink:
    accepted: list[ExportLogsServiceRequest] = field(default_factory=list)
    full: Full | None = None

    async def accept(self, request: ExportLogsServiceRequest) -> Accepted | Full:
        if self.full is not None:
            return self.full
        copy = ExportLogsServiceRequest()
        copy.CopyFrom(request)
        self.accepted.append(copy)
        return Accepted()


def _tagger(engine: FakeEngine, settings: OtlpSettings = SETTINGS) -> Tagger:
    template = MASKER.template
    return Tagger(settings, engine, BUDGETS, fallback_label=lambda: FALLBACK, template_of=lambda: template)


@dataclass
class Running:
    engine: FakeEngine
    sink: Any
    grpc_port: int
    http_port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/logs"

    def stub(self, channel: grpc.aio.Channel) -> logs_service_pb2_grpc.LogsServiceStub:
        return logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]


@asynccontextmanager
async def receivers(sink: Sink | None = None, settings: OtlpSettings = SETTINGS) -> AsyncIterator[Running]:
    engine = FakeEngine()
    sink = sink if sink is not None else MemorySink()
    tagger = _tagger(engine, settings)
    g = OtlpGrpcReceiver(settings, tagger, sink, address="127.0.0.1:0")
    h = OtlpHttpReceiver(settings, tagger, sink, address="127.0.0.1:0")
    grpc_port = await g.start()
    http_port = await h.start()
    try:
        yield Running(engine, sink, grpc_port, http_port)
    finally:
        await h.stop(1.0)
        await g.stop(1.0)


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _resource(attributes: dict[str, str], *records: LogRecord) -> ResourceLogs:
    return ResourceLogs(
        resource=Resource(attributes=[_kv(k, v) for k, v in attributes.items()]),
        scope_logs=[ScopeLogs(log_records=list(records))],
    )


def _request(*bodies: str | None, service: str = "billing") -> ExportLogsServiceRequest:
    records = [LogRecord(body=AnyValue(string_value=b)) if b is not None else LogRecord() for b in bodies]
    return ExportLogsServiceRequest(resource_logs=[_resource({"service.name": service}, *records)])


def _mixed() -> ExportLogsServiceRequest:
    """Two records to classify, one opted out (its pod's annotation), one without a body."""
    request = _request("login failed for user alice", "slow path taken", None)
    opted = _resource(
        {"service.name": "private", "k8s.pod.annotations.logclass.io/classify": "False"},
        LogRecord(body=AnyValue(string_value="login failed for user bob")),
    )
    request.resource_logs.append(opted)
    return request


def _attrs(record: LogRecord) -> dict[str | None, Any]:
    out: dict[str | None, Any] = {}
    for pair in record.attributes:
        kind = pair.value.WhichOneof("value")
        out[pair.key] = getattr(pair.value, kind) if kind else None
    return out


def _records(request: ExportLogsServiceRequest) -> list[LogRecord]:
    return [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def _check_mixed(running: Running) -> None:
    """What every transport's copy of ``_mixed`` looks like at the sink."""
    assert len(running.engine.calls) == 1, "one engine call per request"
    records, budget, owner = running.engine.calls[0]
    assert [(r.source, r.message) for r in records] == [
        ("billing", "login failed for user alice"),
        ("billing", "slow path taken"),
    ]
    assert budget == pytest.approx(0.05)
    assert owner == "otlp 127.0.0.1"
    [request] = running.sink.accepted
    known, slow, bodiless, opted = _records(request)
    a = _attrs(known)
    assert a[NAMES.label] == "Security Alert"
    assert a[NAMES.tier] == "regex"
    assert a[NAMES.confidence] == pytest.approx(0.93)
    assert a[NAMES.template_id] == "t27"
    assert NAMES.template in a
    b = _attrs(slow)
    assert (b[NAMES.label], b[NAMES.tier]) == (FALLBACK, TIER_PENDING)
    assert list(bodiless.attributes) == []
    assert list(opted.attributes) == []
    assert opted.body.string_value == "login failed for user bob"


# -- gRPC -----------------------------------------------------------------------------------------


async def _grpc_call(running: Running, request: ExportLogsServiceRequest, **kwargs: Any) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        return await running.stub(channel).Export(request, timeout=10, **kwargs)


async def _grpc_raw(running: Running, body: bytes) -> Any:
    """Sends ``body`` as the request's bytes, as a broken sender would."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            request_serializer=None,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        return await call(body, timeout=10)


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip])
def test_grpc_records_arrive_tagged(compression: Any) -> None:
    async def go() -> None:
        async with receivers() as running:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
                # No deadline: the inline budget.
                response = await running.stub(channel).Export(_mixed(), compression=compression)
            assert response == ExportLogsServiceResponse()
            _check_mixed(running)

    asyncio.run(go())


def test_the_senders_deadline_cuts_the_budget() -> None:
    async def go() -> None:
        engine = FakeEngine()
        tagger = Tagger(SETTINGS, engine, Budgets(5.0, 0.5, 10.0), fallback_label=lambda: FALLBACK)
        # A sender with a 2 s deadline: at most 2 s less the margin, never the 5 s inline budget.
        await tagger.tag(_request("login failed"), "otlp x", time_remaining=2.0)
        assert engine.calls[-1][1] == pytest.approx(1.5)
        # No deadline (HTTP): the inline budget.
        await tagger.tag(_request("login failed"), "otlp x")
        assert engine.calls[-1][1] == pytest.approx(5.0)

    asyncio.run(go())


def test_grpc_malformed_is_invalid_argument() -> None:
    async def go() -> None:
        async with receivers() as running:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _grpc_raw(running, b"\x0a\xff\xff\xff")
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid OTLP ExportLogsServiceRequest in protobuf" in (err.value.details() or "")
            assert running.sink.accepted == [] and running.engine.calls == []

    asyncio.run(go())


def test_grpc_oversized_is_resource_exhausted() -> None:
    async def go() -> None:
        async with receivers() as running:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _grpc_call(running, _request("x" * (SETTINGS.max_request_bytes + 10)))
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _grpc_call(running, _request(*["a"] * (SETTINGS.max_records_per_request + 1)))
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "otlp.max_records_per_request" in (err.value.details() or "")
            # Compressed small, past the bound once inflated.
            bomb = _request("x" * (SETTINGS.max_request_bytes * 4))
            with pytest.raises(grpc.aio.AioRpcError) as bomb_err:
                await _grpc_call(running, bomb, compression=grpc.Compression.Gzip)
            assert bomb_err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            # Retried unchanged it fails the same: no RetryInfo, so an exporter does not retry it.
            assert _retry_info(err.value) is None
            assert running.sink.accepted == []

    asyncio.run(go())


def test_grpc_full_sink_is_resource_exhausted_with_retry_info() -> None:
    async def go() -> None:
        async with receivers(MemorySink(full=Full(2.5, "buffer full"))) as running:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _grpc_call(running, _request("login failed"))
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == "buffer full"
            assert _retry_info(err.value) == pytest.approx(2.5)

    asyncio.run(go())


# -- HTTP -----------------------------------------------------------------------------------------


def _body(request: ExportLogsServiceRequest, content_type: str) -> bytes:
    return request.SerializeToString() if content_type == PROTOBUF else encode_json(request)


async def _post(running: Running, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(running.http_url, content=body, headers={"content-type": content_type, **headers})


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
@pytest.mark.parametrize("gzipped", [False, True])
def test_http_records_arrive_tagged(content_type: str, gzipped: bool) -> None:
    async def go() -> None:
        async with receivers() as running:
            body = _body(_mixed(), content_type)
            headers = {"content-encoding": "gzip"} if gzipped else {}
            response = await _post(running, gzip.compress(body) if gzipped else body, content_type, **headers)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == content_type
            if content_type == PROTOBUF:
                assert ExportLogsServiceResponse.FromString(response.content) == ExportLogsServiceResponse()
            else:
                assert response.json() == {}
            _check_mixed(running)

    asyncio.run(go())


def _status_of(response: httpx.Response) -> tuple[int, str]:
    """The google.rpc.Status of an error answer, in the request's content type."""
    if response.headers["content-type"] == PROTOBUF:
        status: Any = _status_message()
        status.ParseFromString(response.content)
        return status.code, status.message
    document = response.json()
    return document["code"], document["message"]


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_http_malformed_is_400(content_type: str) -> None:
    async def go() -> None:
        async with receivers() as running:
            bad = b"\x0a\xff\xff\xff" if content_type == PROTOBUF else b'{"resourceLogs": "nope"}'
            response = await _post(running, bad, content_type)
            assert response.status_code == 400
            code, message = _status_of(response)
            assert code == 3
            assert ("protobuf" if content_type == PROTOBUF else "resourceLogs is an array") in message
            not_gzip = await _post(running, b"plain", content_type, **{"content-encoding": "gzip"})
            assert not_gzip.status_code == 400
            assert "not valid gzip" in _status_of(not_gzip)[1]
            assert running.sink.accepted == []

    asyncio.run(go())


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_http_oversized_is_413(content_type: str) -> None:
    async def go() -> None:
        async with receivers() as running:
            big = _body(_request("x" * (SETTINGS.max_request_bytes + 10)), content_type)
            response = await _post(running, big, content_type)
            assert response.status_code == 413
            assert "otlp.max_request_bytes" in _status_of(response)[1]
            # A gzip bomb: small on the wire, past the bound once inflated.
            bomb = gzip.compress(b"\x00" * (SETTINGS.max_request_bytes * 4))
            response = await _post(running, bomb, content_type, **{"content-encoding": "gzip"})
            assert response.status_code == 413
            assert "inflates past otlp.max_request_bytes" in _status_of(response)[1]
            many = _body(_request(*["a"] * (SETTINGS.max_records_per_request + 1)), content_type)
            response = await _post(running, many, content_type)
            assert response.status_code == 413
            assert "otlp.max_records_per_request" in _status_of(response)[1]
            assert running.sink.accepted == []

    asyncio.run(go())


def test_http_wrong_type_method_path() -> None:
    async def go() -> None:
        async with receivers() as running, httpx.AsyncClient(timeout=10) as client:
            response = await client.post(running.http_url, content=b"hi", headers={"content-type": "text/plain"})
            assert response.status_code == 415
            assert "application/x-protobuf or application/json" in response.json()["message"]
            response = await client.post(
                running.http_url, content=b"{}", headers={"content-type": JSON, "content-encoding": "br"}
            )
            assert response.status_code == 415
            assert "Content-Encoding 'br'" in response.json()["message"]
            response = await client.get(running.http_url)
            assert response.status_code == 405
            assert response.headers["allow"] == "POST"
            response = await client.post(running.http_url.replace("/v1/logs", "/v1/traces"), content=b"{}")
            assert response.status_code == 404
            assert running.sink.accepted == []

    asyncio.run(go())


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_http_full_sink_is_429_with_retry_after(content_type: str) -> None:
    async def go() -> None:
        async with receivers(MemorySink(full=Full(2.5, "buffer full"))) as running:
            response = await _post(running, _body(_request("login failed"), content_type), content_type)
            assert response.status_code == 429
            assert response.headers["retry-after"] == "3"
            assert _status_of(response) == (8, "buffer full")

    asyncio.run(go())


# -- the tagger's fallbacks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(LaneFullError("llm", 10, 10), "queue_full"), (RuntimeError("tier broke"), "internal")],
)
def test_engine_failure_tags_fallback_and_delivers(failure: Exception, reason: str) -> None:
    async def go() -> None:
        async with receivers() as running:
            running.engine.fail = failure
            await _grpc_call(running, _request("login failed", "slow one"))
            [request] = running.sink.accepted
            for record in _records(request):
                a = _attrs(record)
                assert (a[NAMES.label], a[NAMES.tier], a[NAMES.confidence]) == (FALLBACK, FALLBACK_TIER, 0.0)
                assert NAMES.template_id not in a

    asyncio.run(go())


def test_engine_that_never_answers_tags_fallback_within_the_budget() -> None:
    release = asyncio.Event()

    async def never(records: Sequence[EngineRecord], budget_s: float | None, owner: Hashable | None = None) -> Any:
        await release.wait()
        raise AssertionError("not reached")

    async def go() -> None:
        tagger = Tagger(SETTINGS, never, Budgets(0.0, 0.0, 0.01), fallback_label=lambda: FALLBACK)
        tagged = await tagger.tag(_request("login failed"), "otlp x")
        assert tagged.fallback == "timeout"
        assert _attrs(_records(tagged.request)[0])[NAMES.tier] == FALLBACK_TIER

    asyncio.run(go())


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_end_to_end_to_the_upstream(protocol: Literal["grpc", "http"]) -> None:
    with OtlpUpstream() as upstream:
        endpoint = upstream.grpc_endpoint if protocol == "grpc" else upstream.http_endpoint
        settings = dataclasses.replace(
            SETTINGS, upstream=dataclasses.replace(SETTINGS.upstream, protocol=protocol, endpoint=endpoint)
        )

        async def go() -> None:
            exporter = OtlpExporter(settings.upstream)
            try:
                async with receivers(ExporterSink(exporter), settings) as running:
                    await _grpc_call(running, _mixed())
                    body = json.dumps(json.loads(encode_json(_request("login failed for user carol")))).encode()
                    response = await _post(running, body, JSON)
                    assert response.status_code == 200
            finally:
                await exporter.close()

        asyncio.run(go())
        assert len(upstream.received) == 2
        first, second = (received.request for received in upstream.received)
        known, slow, bodiless, opted = _records(first)
        assert _attrs(known)[NAMES.label] == "Security Alert"
        assert _attrs(slow)[NAMES.tier] == TIER_PENDING
        assert list(bodiless.attributes) == list(opted.attributes) == []
        assert _attrs(_records(second)[0])[NAMES.label] == "Security Alert"


def test_end_to_end_upstream_down_is_retry_later() -> None:
    """The upstream refuses with a retryable answer: the sender is told to come back (429)."""
    with OtlpUpstream() as upstream:
        settings = dataclasses.replace(
            SETTINGS,
            upstream=dataclasses.replace(
                SETTINGS.upstream, protocol="http", endpoint=upstream.http_endpoint, retries=0, backoff_ms=2000
            ),
        )
        upstream.fail_next(1, grpc.StatusCode.UNAVAILABLE, message="down for a moment")

        async def go() -> None:
            exporter = OtlpExporter(settings.upstream)
            try:
                async with receivers(ExporterSink(exporter), settings) as running:
                    response = await _post(running, _request("login failed").SerializeToString(), PROTOBUF)
                    assert response.status_code == 429
                    assert int(response.headers["retry-after"]) >= 1
                    assert "down for a moment" in _status_of(response)[1]
            finally:
                await exporter.close()

        asyncio.run(go())


# -- on the process's runtime ---------------------------------------------------------------------


def test_tagger_on_the_runtime_with_a_real_engine() -> None:
    """``Tagger.of_runtime``: fallback while the models load, then the engine's decisions, with
    the template its own masker makes."""
    settings = config.load(environ={}, overrides={"router": {"tiers": ["regex"]}})
    runtime = Runtime(settings, Metrics())
    tagger = Tagger.of_runtime(SETTINGS, runtime)

    async def go() -> None:
        loading = await tagger.tag(_request("User 12345 logged in."), "otlp x")
        assert loading.fallback == "unavailable"
        a = _attrs(_records(loading.request)[0])
        assert (a[NAMES.label], a[NAMES.tier]) == (settings.router.fallback_label, FALLBACK_TIER)
        engine = build_engine(settings)
        runtime.attach(engine, None)
        tagged = await tagger.tag(_request("User 12345 logged in."), "otlp x")
        assert tagged.fallback is None and tagged.classified == 1
        a = _attrs(_records(tagged.request)[0])
        assert (a[NAMES.label], a[NAMES.tier]) == ("User Action", "regex")
        assert a[NAMES.template_id]
        assert a[NAMES.template] == engine.router.masker.template("User 12345 logged in.")
        assert a[NAMES.template] != "User 12345 logged in."
        await runtime.close()

    asyncio.run(go())
