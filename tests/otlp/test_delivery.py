"""The durable buffer of the OTLP front end (otlp/buffered.py on delivery/store.py) against the
real receiving OTLP server (tests/otlp/upstream.py): a request accepted is on disk, survives a
restart of the sink and arrives once; an upstream that is down keeps the chunks until it is back;
a refusal for good and an unreadable chunk go to the dead letters with their reason; a full
buffer answers Full with the retry delay; partial success is acked and counted.

Waits are gated on the sink's counters (``wait_until``) and the upstream's condition; nothing
sleeps to let something happen."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logclass import config
from logclass.config.settings import OtlpBufferSettings
from logclass.delivery.store import DEAD_LETTER, REASON_SUFFIX, SUFFIX, ChunkStore, StoreError
from logclass.otlp.buffered import BufferSink
from logclass.otlp.exporter import OtlpExporter
from logclass.otlp.receiver import Accepted, Full
from tests.otlp.upstream import OtlpUpstream

BASE = config.load().otlp


def _request(*bodies: str) -> ExportLogsServiceRequest:
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="billing"))])
    records = [LogRecord(body=AnyValue(string_value=b)) for b in bodies]
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


def _buffer(path: Path, **changes: Any) -> OtlpBufferSettings:
    return dataclasses.replace(BASE.buffer, path=str(path), **changes)


@asynccontextmanager
async def _sink(
    upstream: OtlpUpstream, path: Path, protocol: str = "http", start: bool = True, **changes: Any
) -> AsyncIterator[BufferSink]:
    endpoint = upstream.http_endpoint if protocol == "http" else upstream.grpc_endpoint
    settings = dataclasses.replace(
        BASE.upstream,
        protocol=protocol,
        endpoint=endpoint,
        timeout_ms=2000,
        retries=2,
        backoff_ms=20,
        max_backoff_ms=50,
        max_elapsed_ms=200,
    )
    exporter = OtlpExporter(settings)
    sink = BufferSink(_buffer(path, **changes), exporter)
    sink.open()
    if start:
        sink.start()
    try:
        yield sink
    finally:
        await sink.stop()
        await exporter.close()


def _chunks(path: Path) -> list[Path]:
    return sorted(path.glob(f"*{SUFFIX}"))


def _dead(path: Path) -> list[Path]:
    return sorted((path / DEAD_LETTER).glob(f"*{SUFFIX}"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_accepted_request_survives_a_restart_and_arrives_once(tmp_path: Path, protocol: str) -> None:
    async def go() -> None:
        with OtlpUpstream() as upstream:
            # The first process accepts and stops before exporting (killed, as far as the buffer knows).
            async with _sink(upstream, tmp_path, protocol, start=False) as first:
                assert await first.accept(_request("before the restart")) == Accepted()
            assert len(_chunks(tmp_path)) == 1
            assert upstream.bodies() == []
            async with _sink(upstream, tmp_path, protocol) as second:
                assert await second.wait_until(lambda s: s.delivered == 1)
                assert second.store.queued_chunks == 0
            assert upstream.bodies() == ["before the restart"]
            assert _chunks(tmp_path) == []
            async with _sink(upstream, tmp_path, protocol) as third:
                assert third.store.queued_chunks == 0
            assert upstream.bodies() == ["before the restart"]

    asyncio.run(go())


def test_an_upstream_that_is_down_keeps_the_chunks_until_it_is_back(tmp_path: Path) -> None:
    async def go() -> None:
        upstream = OtlpUpstream().start()
        upstream.stop()  # its ports are kept for the restart
        try:
            async with _sink(upstream, tmp_path) as sink:
                for body in ("one", "two", "three"):
                    assert await sink.accept(_request(body)) == Accepted()
                assert await sink.wait_until(lambda s: s.retry_later >= 2)
                assert sink.store.queued_chunks == 3
                assert len(_chunks(tmp_path)) == 3
                upstream.start()
                assert await sink.wait_until(lambda s: s.delivered == 3)
                assert _chunks(tmp_path) == []
            assert upstream.bodies() == ["one", "two", "three"]  # oldest first, none lost, none twice
            assert sink.stats.dead_letters == 0
        finally:
            upstream.stop()

    asyncio.run(go())


def test_a_refusal_for_good_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    async def go() -> None:
        with OtlpUpstream() as upstream:
            upstream.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, message="bad field in record 0")
            async with _sink(upstream, tmp_path) as sink:
                assert await sink.accept(_request("refused")) == Accepted()
                assert await sink.accept(_request("taken")) == Accepted()
                assert await sink.wait_until(lambda s: s.delivered == 1 and s.dead_letters == 1)
            assert upstream.bodies() == ["taken"]
            (dead,) = _dead(tmp_path)
            reason = dead.with_name(dead.name + REASON_SUFFIX).read_text()
            assert "bad field in record 0" in reason and "HTTP 400" in reason
            assert ExportLogsServiceRequest.FromString(
                dead.read_bytes()[-len(_request("refused").SerializeToString()) :]
            ) == (_request("refused"))
            # Dead letters stay counted, and are not exported again after a restart.
            async with _sink(upstream, tmp_path) as again:
                assert again.store.queued_chunks == 0
                assert again.store.dead_letter_bytes == dead.stat().st_size
            assert upstream.bodies() == ["taken"]

    asyncio.run(go())


def test_a_full_buffer_answers_full_with_the_retry_delay(tmp_path: Path) -> None:
    async def go() -> None:
        request = _request("x" * 200)
        room = ChunkStore.cost(len(request.SerializeToString()))
        with OtlpUpstream() as upstream:
            async with _sink(upstream, tmp_path, start=False, max_bytes=room + 10, retry_after_s=7.0) as sink:
                assert await sink.accept(request) == Accepted()
                full = await sink.accept(request)
                assert isinstance(full, Full) and full.retry_after_s == 7.0
                assert "otlp.buffer.max_bytes" in full.message
                assert sink.stats.full == 1 and len(_chunks(tmp_path)) == 1
                sink.start()
                assert await sink.wait_until(lambda s: s.delivered == 1)
                assert await sink.accept(request) == Accepted()  # room again once delivered
                assert await sink.wait_until(lambda s: s.delivered == 2)
            assert len(upstream.bodies()) == 2

    asyncio.run(go())


def test_a_partial_success_is_acked_and_its_rejected_records_counted(tmp_path: Path) -> None:
    async def go() -> None:
        with OtlpUpstream() as upstream:
            upstream.partial(1, "one record too old")
            async with _sink(upstream, tmp_path) as sink:
                assert await sink.accept(_request("a", "b", "c")) == Accepted()
                assert await sink.wait_until(lambda s: s.delivered == 1)
                assert sink.stats.rejected_records == 1 and sink.stats.delivered_records == 2
                assert sink.store.queued_chunks == 0 and sink.stats.retry_later == 0
            assert upstream.bodies() == ["a", "b", "c"] and _chunks(tmp_path) == []

    asyncio.run(go())


def test_corrupt_and_truncated_chunk_files_are_moved_aside_not_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        with OtlpUpstream() as upstream:
            async with _sink(upstream, tmp_path, start=False) as first:
                for body in ("truncated", "kept"):
                    assert await first.accept(_request(body)) == Accepted()
            truncated, _kept = _chunks(tmp_path)
            truncated.write_bytes(truncated.read_bytes()[:-5])
            (tmp_path / "0000000000000009.chunk").write_bytes(b"not a chunk at all")
            (tmp_path / "garbage-name.chunk").write_bytes(b"")
            (tmp_path / "0000000000000010.chunk.tmp").write_bytes(b"half a write")
            with caplog.at_level(logging.ERROR):
                async with _sink(upstream, tmp_path) as sink:
                    assert await sink.wait_until(lambda s: s.delivered == 1)
                    assert sink.stats.dead_letters == 0  # moved aside while opening, before any export
            assert upstream.bodies() == ["kept"]
            assert [p.name for p in _dead(tmp_path)] == sorted(
                [truncated.name, "0000000000000009.chunk", "garbage-name.chunk"]
            )
            assert "truncated" in (tmp_path / DEAD_LETTER / (truncated.name + REASON_SUFFIX)).read_text()
            assert not list(tmp_path.glob("*.tmp"))
            messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any("is unreadable" in m and truncated.name in m for m in messages)

    asyncio.run(go())


def test_a_chunk_corrupted_while_buffered_is_dead_lettered_once(tmp_path: Path) -> None:
    async def go() -> None:
        with OtlpUpstream() as upstream:
            async with _sink(upstream, tmp_path, start=False) as sink:
                assert await sink.accept(_request("flipped")) == Accepted()
                assert await sink.accept(_request("fine")) == Accepted()
                (flipped, _) = _chunks(tmp_path)
                data = bytearray(flipped.read_bytes())
                data[-1] ^= 0xFF
                flipped.write_bytes(bytes(data))
                sink.start()
                assert await sink.wait_until(lambda s: s.delivered == 1 and s.dead_letters == 1)
            assert upstream.bodies() == ["fine"]
            (dead,) = _dead(tmp_path)
            assert "checksum" in dead.with_name(dead.name + REASON_SUFFIX).read_text()

    asyncio.run(go())


def test_one_buffer_folder_belongs_to_one_process(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, 1 << 20, "otlp.buffer.path")
    store.open()
    try:
        with pytest.raises(StoreError, match=r"otlp\.buffer\.path .* in use by another process"):
            ChunkStore(tmp_path, 1 << 20, "otlp.buffer.path").open()
    finally:
        asyncio.run(store.close())


def test_chunks_after_a_restart_never_reuse_a_dead_letters_name(tmp_path: Path) -> None:
    async def go() -> None:
        with OtlpUpstream() as upstream:
            upstream.fail_next(2, grpc.StatusCode.INVALID_ARGUMENT, message="no")
            for body in ("one", "two"):  # each run's only chunk, both refused
                async with _sink(upstream, tmp_path) as sink:
                    assert await sink.accept(_request(body)) == Accepted()
                    assert await sink.wait_until(lambda s: s.dead_letters == 1)
            letters = _dead(tmp_path)
            assert len(letters) == 2
            payloads = {p.read_bytes()[-len(_request("one").SerializeToString()) :] for p in letters}
            assert payloads == {_request(b).SerializeToString() for b in ("one", "two")}

    asyncio.run(go())
