"""`logclass bench --server ADDR`: replay records through a sidecar over N concurrent streams.

Each stream sends one request at a time on ``ClassifyStream`` and waits for its response, so
latency is per request and throughput comes from concurrency, as with real shippers.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.client import to_request
from logclass.core.decision import LogRecord


@dataclass
class LoadResult:
    records: int
    seconds: float
    latencies: list[float]

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else 0.0

    def line(self, name: str) -> str:
        return (
            f"{name:<34}{self.records_per_second:>12,.0f} rec/s   p50 {self.percentile(50):8.1f} ms"
            f"   p99 {self.percentile(99):8.1f} ms"
        )


async def replay(
    target: str, records: Sequence[LogRecord], request_size: int, streams: int, timeout: float = 120.0
) -> LoadResult:
    requests = [to_request(records[i : i + request_size]) for i in range(0, len(records), request_size)]
    queue: asyncio.Queue[object] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []

    async def stream_worker(stub: pb_grpc.LogClassifierStub) -> None:
        if queue.empty():
            return
        call = stub.ClassifyStream(timeout=timeout)
        while not queue.empty():
            request = queue.get_nowait()
            started = time.perf_counter()
            await call.write(request)
            response = await call.read()
            latencies.append(time.perf_counter() - started)
            if len(response.results) != len(request.records):  # type: ignore[attr-defined]
                raise RuntimeError("the server returned a different number of results than records sent")
        await call.done_writing()

    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
        await wait_ready(stub, timeout)
        started = time.perf_counter()
        await asyncio.gather(*(stream_worker(stub) for _ in range(streams)))
        elapsed = time.perf_counter() - started
    return LoadResult(len(records), elapsed, latencies)


async def wait_ready(stub: pb_grpc.LogClassifierStub, timeout: float) -> None:
    """Waits out a sidecar that is still loading its models (it answers UNAVAILABLE meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout, wait_for_ready=True)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def bench_records(limit: int = 0) -> list[LogRecord]:
    """The benchmark mix: the seed set then the Loghub samples, as shipped in a checkout."""
    from benchmarks.common import LOGHUB_DIR, SEED_CSV

    paths = [SEED_CSV, *sorted(LOGHUB_DIR.glob("*_2k.log_structured.csv"))]
    records = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run from a checkout of the logclass repository")
        # A few Loghub lines are not valid UTF-8; the pipeline must take them anyway.
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            for row in csv.DictReader(fh):
                source = row.get("source") or path.name.split("_")[0]
                records.append(LogRecord(source, row.get("log_message") or row.get("Content") or ""))
    return records[:limit] if limit else records


def run(
    target: str,
    records: Sequence[LogRecord],
    request_sizes: Sequence[int],
    streams: int,
    report: Callable[[str], None] = print,
) -> dict[str, LoadResult]:
    """Cold then warm for each request size. Cold is only cold for the first size: the server's
    caches fill on the first pass, so later sizes are measured warm only."""
    results: dict[str, LoadResult] = {}
    for n, size in enumerate(request_sizes):
        passes = ("cold", "warm") if n == 0 else ("warm",)
        for label in passes:
            result = asyncio.run(replay(target, records, size, streams))
            results[f"{label} {size}-record requests"] = result
            report(result.line(f"{label}, {size}-record requests"))
    return results
