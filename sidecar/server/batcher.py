"""Cross-request micro-batcher: concurrent requests share one router call.

Requests queue up; one worker takes everything waiting (up to ``max_batch_records``, waiting at
most ``max_wait_ms`` for more once the first arrives), runs the router once on the merged
records in a worker thread, and hands each request its slice of the results. Merging lets
concurrent callers' cache misses reach the embedding tier as one batch, and keeps the router
single-threaded, which it requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sidecar.decision import Decision, LogRecord
from sidecar.router import Router


class QueueFullError(RuntimeError):
    """The batcher holds max_queue_records already; the caller should back off and retry."""


@dataclass
class _Job:
    records: Sequence[LogRecord]
    future: asyncio.Future[list[Decision]]
    deadline: float | None  # time.monotonic() after which nobody waits for the answer


@dataclass
class BatcherStats:
    batches: int = 0
    dropped_expired: int = 0


class MicroBatcher:
    def __init__(self, router: Router, max_batch_records: int, max_wait_ms: float, max_queue_records: int) -> None:
        self.router = router
        self.max_batch_records = max_batch_records
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_records = max_queue_records
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._queued_records = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router")
        self._worker: asyncio.Task[None] | None = None
        # Called with the record count of every batch the router ran (metrics hook).
        self.on_batch: Callable[[int], None] | None = None
        # Called with the record count of every job dropped unrun: caller gone or deadline passed.
        self.on_drop: Callable[[int], None] | None = None

    @property
    def queued_records(self) -> int:
        return self._queued_records

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def classify(self, records: Sequence[LogRecord], timeout: float | None = None) -> list[Decision]:
        if not records:
            return []
        if self._queued_records + len(records) > self.max_queue_records:
            raise QueueFullError(
                f"server queue is full ({self._queued_records} records waiting, limit {self.max_queue_records}); "
                "retry with backoff"
            )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout if timeout is not None else None
        job = _Job(records, loop.create_future(), deadline)
        self._queued_records += len(records)
        self._queue.put_nowait(job)
        return await job.future

    async def _collect(self) -> list[_Job]:
        first = await self._queue.get()
        jobs, size = [first], len(first.records)
        until = time.monotonic() + self.max_wait
        while size < self.max_batch_records:
            remaining = until - time.monotonic()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                job = (
                    self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining)
                )
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            jobs.append(job)
            size += len(job.records)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            self._queued_records -= sum(len(j.records) for j in jobs)
            now = time.monotonic()
            live = []
            for job in jobs:
                expired = job.deadline is not None and job.deadline <= now
                if job.future.done() or expired:
                    # Nobody is waiting for this answer (cancelled, or past its deadline): do not
                    # spend the model on it.
                    self.stats.dropped_expired += 1
                    if not job.future.done():
                        job.future.set_exception(TimeoutError("deadline passed before the work started"))
                    if self.on_drop is not None:
                        self.on_drop(len(job.records))
                    continue
                live.append(job)
            if not live:
                continue
            merged = [r for job in live for r in job.records]
            try:
                decisions = await loop.run_in_executor(self._executor, self.router.classify, merged)
            except Exception as exc:  # a tier failed: every waiting caller hears about it
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            if self.on_batch is not None:
                self.on_batch(len(merged))
            offset = 0
            for job in live:
                n = len(job.records)
                if not job.future.done():
                    job.future.set_result(decisions[offset : offset + n])
                offset += n
