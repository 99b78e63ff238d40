"""POST /classify: a CSV upload answered as CSV, by the row rules of `logclass classify`.

The upload is read whole (to a spooled file) and checked before the answer starts, so a 200
always carries a complete CSV and a bad file gets a 400 that says which line. Rows are then
classified in chunks, a few in flight, and each chunk is written as soon as it is decided."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import IO

from logclass.core.backoff import Backoff
from logclass.core.decision import Decision, LogRecord
from logclass.engine.lanes import LaneFullError
from logclass.engine.metrics import Classify, Metrics
from logclass.jobs.csv_classify import CountingReader, CsvInputError, CsvLayout, read_chunks, read_header

# Rows handed to the engine at once. The router masks and looks up a chunk's records in one go
# on the event loop gRPC answers on (~18 us a new record): 128 rows keep that under ~3 ms, where
# 512 let a warm gRPC caller's p99 reach 33 ms during uploads (bench-lanes, CSV upload phase).
CHUNK_ROWS = 128
# Chunks classified at once: later chunks' new templates queue in the lanes while earlier ones
# are written, as in `logclass classify` (16 x 128: the same 2,048 rows in flight as its 4 x 512).
LOOKAHEAD = 16
# A batch job waits for room in a full lane instead of failing the upload halfway.
_FULL_LANE_RETRY = Backoff(0.05, 1.0)
METHOD = "POST /classify"


# A row (all its fields) may hold this many times limits.max_message_bytes characters: a message
# within the limit and the other columns kept beside it. csv's own field limit is process-wide
# (`logclass classify` lifts it), so uploads are bounded by the lines they hand the parser.
ROW_LIMIT_FACTOR = 16


class BoundedLines:
    """The lines of ``text`` for csv.reader, refusing a line, or a row of quoted lines, past
    ``limit`` characters before the parser holds it: a 50 MB field would otherwise cost the
    parser and Python some 250 MiB. A row ends at a line end with an even count of quotes so far
    (quotes inside a quoted field are doubled)."""

    def __init__(self, text: io.TextIOBase, limit: int) -> None:
        self.text = text
        self.limit = limit
        self._row = 0
        self._quotes = 0

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self._row += len(line)
        self._quotes += line.count('"')
        if self._row > self.limit:
            raise CsvInputError(
                f"a row is longer than {self.limit:,} characters ({ROW_LIMIT_FACTOR} x limits.max_message_bytes): "
                "split the field, or raise limits.max_message_bytes"
            )
        if line.endswith(("\n", "\r")) and self._quotes % 2 == 0:
            self._row = self._quotes = 0
        return line


def _reader(file: IO[bytes], encoding: str, row_limit: int) -> csv.Reader:  # type: ignore[name-defined]
    file.seek(0)
    text = io.TextIOWrapper(
        io.BufferedReader(CountingReader(file)), encoding=encoding, errors="surrogateescape", newline=""
    )
    return csv.reader(BoundedLines(text, row_limit), skipinitialspace=True)


def check_encoding(encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError as exc:
        raise CsvInputError(f"unknown encoding {encoding!r}: give a Python codec name, e.g. utf-8 or latin-1") from exc
    # zlib_codec, base64_codec, rot13...: codecs of bytes to bytes or str to str, which the text
    # reader refuses once the upload is streaming (a 500 then). Python marks them so.
    if not getattr(codec, "_is_text_encoding", True):
        raise CsvInputError(f"encoding {encoding!r} is not a text encoding: give one such as utf-8 or latin-1")
    return codec.name


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


async def _decided(classify: Classify, records: Sequence[LogRecord], owner: object, metrics: Metrics) -> list[Decision]:
    attempt = 0
    while True:
        try:
            return await classify(records, None, owner)
        except LaneFullError as exc:
            metrics.lane_rejected.labels(exc.lane).inc()
            await asyncio.sleep(_FULL_LANE_RETRY.delay(attempt))
            attempt += 1


async def classified_csv(
    file: IO[bytes],
    name: str,
    encoding: str,
    layout: CsvLayout,
    classify: Classify,
    metrics: Metrics,
    owner: object,
    row_limit: int,
) -> AsyncIterator[bytes]:
    """The output CSV, header first, then each chunk of rows once decided."""
    started = time.perf_counter()
    reader = _reader(file, encoding, row_limit)
    await asyncio.to_thread(read_header, reader, name)
    chunks = read_chunks(reader, CHUNK_ROWS, name)
    pending: deque[tuple[list[list[str]], list[bool], asyncio.Task[list[Decision]]]] = deque()
    yield _csv_bytes([layout.header])
    try:
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is not None:
                rows, malformed, records = layout.fit(chunk)
                pending.append((rows, malformed, asyncio.ensure_future(_decided(classify, records, owner, metrics))))
            while pending and (chunk is None or len(pending) > LOOKAHEAD or pending[0][2].done()):
                rows, malformed, task = pending.popleft()
                decisions = await task
                yield _csv_bytes([layout.output(r, m, d) for r, m, d in zip(rows, malformed, decisions, strict=True)])
            if chunk is None:
                break
    finally:
        # The caller went away (or the stream failed): nothing more of this upload is needed.
        for _, _, task in pending:
            task.cancel()
    metrics.request_seconds.labels(METHOD).observe(time.perf_counter() - started)
