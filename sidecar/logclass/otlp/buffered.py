"""At-least-once delivery of tagged OTLP requests: ``BufferSink`` (a ``receiver.Sink``) writes
each request into the durable buffer (``otlp.buffer``, a ``delivery.store.ChunkStore``) and
answers ``Accepted`` only once it is fsync'd there; its delivery loop exports the buffered
requests to the upstream (``OtlpExporter``), oldest first, one at a time:

- delivered, or partial success: the chunk is deleted (the rejected records are counted and
  logged by the exporter: the upstream will not take them resent);
- retry later (the exporter spent its retries and ``max_elapsed_ms``): the chunk stays first in
  line and the loop waits the delay the exporter answered (the upstream's ask, or the backoff);
- refused for good (dead letter), or a chunk that does not read back: moved to
  ``dead-letter/`` with the reason beside it and an error log.

A buffer at ``max_bytes`` answers ``Full(retry_after_s)``: RESOURCE_EXHAUSTED / 429 with
Retry-After. Chunks a stopped process left are exported once the next one starts: a request
the upstream took but whose ack was lost is sent again (duplicates, never losses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from logclass.config.settings import OtlpBufferSettings
from logclass.delivery.store import ChunkStore, CorruptChunk, Signal, StoredChunk
from logclass.otlp.exporter import OtlpExporter, Outcome, record_count
from logclass.otlp.metrics import OtlpMetrics
from logclass.otlp.receiver import Accepted, Full

log = logging.getLogger("logclass.otlp.buffer")

SETTING = "otlp.buffer.path"
# Shortest wait after a retry-later, whatever the exporter answered: the loop never spins.
MIN_RETRY_WAIT_S = 0.05


def default_buffer_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "logclass" / "otlp"


@dataclass(slots=True)
class DeliveryStats:
    accepted: int = 0  # requests answered Accepted
    full: int = 0  # requests answered Full
    delivered: int = 0  # chunks the upstream took (partial success included)
    delivered_records: int = 0
    rejected_records: int = 0  # records a partial success rejected
    retry_later: int = 0  # exports answered retry-later (the chunk kept)
    dead_letters: int = 0  # chunks moved to dead-letter/, unreadable ones included


class BufferSink:
    """``open`` (blocking, once), ``start`` from the event loop, ``accept`` from the receivers,
    ``stop`` at the end (a chunk in flight stays in the buffer: it is exported again next time)."""

    def __init__(
        self,
        settings: OtlpBufferSettings,
        exporter: OtlpExporter,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        metrics: OtlpMetrics | None = None,
    ) -> None:
        """``metrics``: counted there too (the process's registry), besides ``stats``."""
        self.settings = settings
        self.exporter = exporter
        path = Path(settings.path) if settings.path is not None else default_buffer_path()
        self.store = ChunkStore(path, settings.max_bytes, SETTING)
        self.stats = DeliveryStats()
        self.metrics = metrics
        if metrics is not None:
            metrics.buffer_bytes.set_function(lambda: self.store.used_bytes)
            metrics.buffer_chunks.set_function(lambda: self.store.queued_chunks)
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._changed: Signal | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def open(self) -> int:
        """Locks the buffer folder; returns the requests a previous run left (exported after ``start``)."""
        left = self.store.open()
        if left:
            log.info("%s %s: %d requests left by a previous run, exported again", SETTING, self.store.path, len(left))
        return len(left)

    def start(self) -> None:
        self._changed = Signal()
        self._task = asyncio.get_running_loop().create_task(self._deliver(), name="otlp-buffer-delivery")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    async def wait_until(self, predicate: Callable[[DeliveryStats], bool], timeout: float = 10.0) -> bool:
        """Waits (at most ``timeout`` seconds) until ``predicate(self.stats)`` holds (tests, shutdown)."""
        assert self._changed is not None, "BufferSink.start() first"
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.stats):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    # -- the receivers' side -----------------------------------------------------------------------

    async def accept(self, request: ExportLogsServiceRequest) -> Accepted | Full:
        """Accepted once the request is durable in the buffer; Full when the buffer has no room.
        A write that fails raises (the receivers answer UNAVAILABLE / 503: the sender retries)."""
        payload = request.SerializeToString()
        chunk = await self.store.put(payload, record_count(request))
        if chunk is None:
            self.stats.full += 1
            if self.metrics is not None:
                self.metrics.full.inc()
            self._notify()
            return Full(
                self.settings.retry_after_s,
                f"the logclass buffer ({SETTING} {self.store.path}) is full: otlp.buffer.max_bytes "
                f"{self.settings.max_bytes} reached while the upstream catches up",
            )
        self.stats.accepted += 1
        self._notify()
        return Accepted()

    # -- the delivery loop -------------------------------------------------------------------------

    async def _deliver(self) -> None:
        while True:
            chunk = await self.store.take()
            try:
                await self._deliver_one(chunk)
            except asyncio.CancelledError:
                self.store.give_back(chunk)  # exported again next time: at least once
                raise
            except Exception:  # the loop must outlive any one chunk, or the buffer only grows
                log.exception("exporting buffered chunk %s failed; retried", chunk.path)
                self.store.give_back(chunk)
                await self._sleep(max(self.exporter.settings.backoff_ms / 1000.0, MIN_RETRY_WAIT_S))
            self._notify()

    async def _deliver_one(self, chunk: StoredChunk) -> None:
        try:
            request = ExportLogsServiceRequest.FromString(await self.store.read(chunk))
        except (OSError, CorruptChunk, DecodeError) as exc:
            target = await self.store.dead_letter(chunk, f"unreadable buffered request: {exc}")
            self._dead_lettered()
            log.error("buffered OTLP request %s is unreadable (%s); moved to %s, not exported", chunk.path, exc, target)
            return
        result = await self.exporter.export(request)
        if result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL):
            # Counted before the chunk is removed: whoever sees the buffer empty sees them counted.
            if self.metrics is not None:
                self.metrics.records_out.inc(result.records - result.rejected)
                self.metrics.records_rejected_upstream.inc(result.rejected)
            await self.store.ack(chunk)
            self.stats.delivered += 1
            self.stats.delivered_records += result.records - result.rejected
            self.stats.rejected_records += result.rejected
        elif result.outcome is Outcome.RETRY_LATER:
            self.store.give_back(chunk)
            self.stats.retry_later += 1
            self._notify()
            await self._sleep(max(result.delay_s, MIN_RETRY_WAIT_S))
        else:
            endpoint = self.exporter.settings.endpoint
            reason = f"the upstream {endpoint} refused it for good ({result.status}): {result.message}"
            target = await self.store.dead_letter(chunk, reason)
            self._dead_lettered()
            log.error("%d OTLP records refused for good; moved to %s (%s)", result.records, target, reason)

    def _dead_lettered(self) -> None:
        self.stats.dead_letters += 1
        if self.metrics is not None:
            self.metrics.dead_letter_chunks.inc()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.fire()
