"""POST /classify: a CSV upload answered as CSV, by the row rules of `logclass classify`.

The upload is read whole (to a spooled file) and checked before the answer starts, so a 200
always carries a complete CSV and a bad file gets a 400 that says which line. Rows are then
classified in chunks through the runtime, a few in flight (the batch jobs' chunk pipeline), and
each chunk is written as soon as it is decided."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator, Sequence
from typing import IO

from logclass.core.decision import Decision, LogRecord
from logclass.engine.runtime import Runtime
from logclass.jobs.chunks import pipelined_async
from logclass.jobs.rows import BoundedLines, CountingReader, CsvLayout, read_chunks, read_header

# Rows handed to the engine at once. The router masks and looks up a chunk's records in one go
# on the event loop gRPC answers on (~18 us a new record): 128 rows keep that under ~3 ms, where
# 512 let a warm gRPC caller's p99 reach 33 ms during uploads (bench-lanes, CSV upload phase).
# Never more than server.max_records_per_request, the bound of any one call.
CHUNK_ROWS = 128
# Chunks classified at once: later chunks' new templates queue in the lanes while earlier ones
# are written, as in `logclass classify` (16 x 128: the same 2,048 rows in flight as its 4 x 512).
LOOKAHEAD = 16
METHOD = "POST /classify"


def _reader(file: IO[bytes], encoding: str, row_limit: int) -> csv.Reader:  # type: ignore[name-defined]
    file.seek(0)
    text = io.TextIOWrapper(
        io.BufferedReader(CountingReader(file)), encoding=encoding, errors="surrogateescape", newline=""
    )
    return csv.reader(BoundedLines(text, row_limit), skipinitialspace=True)


def inspect_upload(
    file: IO[bytes], name: str, encoding: str, template_id: bool, row_limit: int
) -> tuple[CsvLayout, int]:
    """The upload's layout and row count; CsvInputError names the first unreadable line."""
    reader = _reader(file, encoding, row_limit)
    layout = CsvLayout.of(read_header(reader, name), name, template_id=template_id)
    rows = sum(len(chunk) for chunk in read_chunks(reader, 4096, name))
    return layout, rows


def _csv_bytes(rows: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    # Undecodable input bytes (kept as surrogates) go back out as they came in.
    return out.getvalue().encode("utf-8", "surrogateescape")


Fitted = tuple[list[list[str]], list[bool]]


async def _fitted_chunks(
    reader: csv.Reader,  # type: ignore[name-defined]
    layout: CsvLayout,
    name: str,
    rows: int,
) -> AsyncIterator[tuple[Fitted, list[LogRecord]]]:
    """The upload's chunks, read on a worker thread (the event loop answers other calls)."""
    chunks = read_chunks(reader, rows, name)
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        fitted, malformed, records = layout.fit(chunk)
        yield (fitted, malformed), records


async def classified_csv(
    file: IO[bytes],
    name: str,
    encoding: str,
    layout: CsvLayout,
    runtime: Runtime,
    owner: object,
    row_limit: int,
) -> AsyncIterator[bytes]:
    """The output CSV, header first, then each chunk of rows once decided. A full lane is
    waited out (``Runtime.classify_all``): an upload is a batch job."""
    started = time.perf_counter()
    reader = _reader(file, encoding, row_limit)
    await asyncio.to_thread(read_header, reader, name)
    chunk_rows = min(CHUNK_ROWS, runtime.settings.server.max_records_per_request)

    async def classify(records: Sequence[LogRecord]) -> list[Decision]:
        return await runtime.classify_all(records, owner)

    yield _csv_bytes([layout.header])
    decided = pipelined_async(classify, _fitted_chunks(reader, layout, name, chunk_rows), lookahead=LOOKAHEAD)
    try:
        async for (rows, malformed), decisions in decided:
            yield _csv_bytes([layout.output(r, m, d) for r, m, d in zip(rows, malformed, decisions, strict=True)])
    finally:
        # The caller went away (or the stream failed): nothing more of this upload is needed.
        await decided.aclose()
    runtime.metrics.request_seconds.labels(METHOD).observe(time.perf_counter() - started)
