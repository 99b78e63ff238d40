"""`logclass classify`: stream a CSV of logs through the router in chunks, in constant memory.

Input needs ``source`` and ``log_message`` columns (other columns are kept); output adds
``target_label``, ``tier``, ``confidence`` and ``error`` (empty unless the row could not be
classified or was malformed). Undecodable bytes are carried through to the output unchanged.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TextIO, TypeVar

from tqdm import tqdm

from logclass.core.decision import Decision, LogRecord
from logclass.errors import LogclassError


class BatchClassifier(Protocol):
    """The engine in-process (``BlockingEngine``), or a client of a remote sidecar."""

    def classify(self, records: Sequence[LogRecord]) -> list[Decision]: ...

    def submit(self, records: Sequence[LogRecord]) -> concurrent.futures.Future[list[Decision]]: ...

    def queued(self) -> dict[str, int]:
        """Templates waiting per model lane (empty when not known), for the progress bar."""
        ...

    def close(self) -> None: ...


# Chunks classified at once: later chunks' new templates queue in the lanes while earlier ones
# are answered, so the LLM lane keeps llm.max_concurrency questions in flight across chunks.
LOOKAHEAD_CHUNKS = 4
T = TypeVar("T")


def pipelined(
    classifier: BatchClassifier,
    batches: Iterable[tuple[T, Sequence[LogRecord]]],
    *,
    lookahead: int = LOOKAHEAD_CHUNKS,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[tuple[T, list[Decision]]]:
    """Each batch's decisions, in input order, with up to ``lookahead`` batches in flight.
    ``on_wait`` is called about twice a second while the oldest batch is still out (progress)."""
    inflight: deque[tuple[T, concurrent.futures.Future[list[Decision]]]] = deque()

    def oldest() -> tuple[T, list[Decision]]:
        tag, future = inflight.popleft()
        while True:
            try:
                return tag, future.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                if on_wait is not None:
                    on_wait()

    for tag, records in batches:
        inflight.append((tag, classifier.submit(records)))
        while len(inflight) > lookahead or (inflight and inflight[0][1].done()):
            yield oldest()
    while inflight:
        yield oldest()


INPUT_COLUMNS = ("source", "log_message")
OUTPUT_COLUMNS = ("target_label", "tier", "confidence", "error")
ERROR_MALFORMED = "malformed_row"
# csv's default field limit (128 KiB) would abort the whole file on one huge line; lines this
# large are read and flagged by the router's own size limit instead.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class CsvInputError(LogclassError):
    pass


@dataclass
class ClassifySummary:
    rows: int = 0
    by_tier: Counter[str] = field(default_factory=Counter)
    by_label: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cache_hit_ratio: float = 0.0
    renamed_columns: dict[str, str] = field(default_factory=dict)

    def format(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.rows} rows in {self.seconds:.1f}s ({rate:,.0f} rows/s), cache hit ratio {self.cache_hit_ratio:.3f}"
        ]
        lines.append("by tier:  " + ", ".join(f"{t} {n}" for t, n in self.by_tier.most_common()))
        lines.append("by label: " + ", ".join(f"{t} {n}" for t, n in self.by_label.most_common()))
        if self.errors:
            lines.append("flagged:  " + ", ".join(f"{t} {n}" for t, n in self.errors.most_common()))
            if self.errors.get("invalid_utf8"):
                lines.append("  rows with invalid_utf8 were not classified; if the file is not UTF-8, pass --encoding")
        for old, new in self.renamed_columns.items():
            lines.append(f"note: the input's own {old!r} column is kept as {new!r}")
        return "\n".join(lines)


class CountingReader(io.RawIOBase):
    """A readable raw stream over any binary file object (Python 3.10's SpooledTemporaryFile
    lacks the io methods TextIOWrapper needs), counting bytes pulled for a progress bar."""

    def __init__(self, raw: IO[bytes], bar: tqdm[Any] | None = None) -> None:
        self._raw = raw
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if self._bar is not None:
            self._bar.update(n)
        return n


def read_header(reader: Iterator[list[str]], path: Path | str) -> list[str]:
    for row in reader:
        if row:
            return [name.strip() for name in row]
    raise CsvInputError(f"{path} is empty: expected a header with columns {list(INPUT_COLUMNS)}")


def _fit_row(row: list[str], width: int) -> tuple[list[str], bool]:
    """Pad short rows; fold surplus fields into the last one (usually an unquoted comma)."""
    if len(row) == width:
        return row, False
    if len(row) < width:
        return row + [""] * (width - len(row)), True
    return [*row[: width - 1], ",".join(row[width - 1 :])], True


TEMPLATE_ID_COLUMN = "template_id"
# A cell starting so is a formula to a spreadsheet (=cmd|' /C calc'!A0): written after a quote,
# as OWASP's CSV-injection advice has it. Log lines are attacker-chosen, and the output CSV is
# what the console offers for download.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


@dataclass(frozen=True)
class CsvLayout:
    """The row rules of every CSV front end (`logclass classify`, HTTP POST /classify): where the
    input columns are, what a malformed row becomes, and the output header. Input columns named
    like an output column are kept, renamed ``input_<name>``."""

    width: int
    source: int
    message: int
    header: list[str]
    renamed: dict[str, str]
    template_id: bool = False

    @classmethod
    def of(cls, header: list[str], where: Path | str, *, template_id: bool = False) -> CsvLayout:
        missing = [c for c in INPUT_COLUMNS if c not in header]
        if missing:
            raise CsvInputError(
                f"{where}: missing column(s) {missing}; the input needs {list(INPUT_COLUMNS)} (found {header})"
            )
        added = [*OUTPUT_COLUMNS, *([TEMPLATE_ID_COLUMN] if template_id else [])]
        out_header, renamed = list(header), {}
        for i, name in enumerate(header):
            if name in added:
                out_header[i] = renamed[name] = f"input_{name}"
        out_header = [spreadsheet_safe(name) for name in out_header]
        return cls(
            len(header), header.index("source"), header.index("log_message"), out_header + added, renamed, template_id
        )

    def fit(self, rows: Sequence[list[str]]) -> tuple[list[list[str]], list[bool], list[LogRecord]]:
        """The rows at the header's width, which of them were malformed, and their records."""
        fitted, malformed = [], []
        for row in rows:
            fixed, bad = _fit_row(row, self.width)
            fitted.append(fixed)
            malformed.append(bad)
        return fitted, malformed, [LogRecord(r[self.source].strip(), r[self.message].strip()) for r in fitted]

    def output(self, row: list[str], malformed: bool, decision: Decision) -> list[str]:
        cells = [spreadsheet_safe(cell) for cell in row]
        out = [*cells, decision.label, decision.tier, f"{decision.confidence:.4f}", row_error(decision, malformed)]
        if self.template_id:
            out.append(decision.template_id)
        return out


def row_error(decision: Decision, malformed: bool) -> str:
    return decision.error or (ERROR_MALFORMED if malformed else "")


class _TableWriter:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        out.write(f"{'source':<16} {'label':<20} {'tier':<9} {'conf':>5}  message\n")
        out.write(f"{'-' * 16} {'-' * 20} {'-' * 9} {'-' * 5}  {'-' * 50}\n")

    def write(self, source: str, message: str, decision: Decision) -> None:
        text = message if len(message) <= 70 else message[:67] + "..."
        text = text.encode("utf-8", "replace").decode("utf-8")
        label = decision.label + (f" [{decision.error}]" if decision.error else "")
        self.out.write(f"{source[:16]:<16} {label[:20]:<20} {decision.tier:<9} {decision.confidence:>5.2f}  {text}\n")


def classify_csv(
    in_path: str | Path,
    out: str | Path | None,
    router: BatchClassifier,
    *,
    chunk_rows: int = 2048,
    encoding: str = "utf-8",
    progress: bool = True,
    table_out: TextIO | None = None,
) -> ClassifySummary:
    """Classify ``in_path`` into ``out`` (a path, ``-`` for stdout CSV) or, with ``out=None``,
    print a human-readable table to ``table_out``."""
    in_path = Path(in_path)
    try:
        raw = in_path.open("rb")
    except OSError as exc:
        raise CsvInputError(f"cannot read {in_path}: {exc.strerror}") from exc
    summary = ClassifySummary()
    started = time.monotonic()
    size = os.fstat(raw.fileno()).st_size
    bar: tqdm[Any] = tqdm(total=size, unit="B", unit_scale=True, desc="classifying", disable=not progress)
    with raw, bar:
        text = io.TextIOWrapper(
            io.BufferedReader(CountingReader(raw, bar)),
            encoding=encoding,
            errors="surrogateescape",
            newline="",
        )
        reader = csv.reader(text, skipinitialspace=True)
        layout = CsvLayout.of(read_header(reader, in_path), in_path)
        summary.renamed_columns.update(layout.renamed)
        sink, close = _open_sink(out)
        try:
            writer = csv.writer(sink) if sink is not None else None
            table = _TableWriter(table_out or sys.stdout) if writer is None else None
            if writer is not None:
                writer.writerow(layout.header)

            def prepared() -> Iterator[tuple[tuple[list[list[str]], list[bool]], list[LogRecord]]]:
                for chunk in read_chunks(reader, chunk_rows, in_path):
                    rows, malformed, records = layout.fit(chunk)
                    yield (rows, malformed), records

            def show_queue() -> None:
                queued = router.queued()
                if queued:
                    bar.set_postfix({"rows": summary.rows, **{f"{k} queue": v for k, v in queued.items()}})

            for (rows, malformed), decisions in pipelined(router, prepared(), on_wait=show_queue):
                for row, bad, decision in zip(rows, malformed, decisions, strict=True):
                    error = row_error(decision, bad)
                    summary.by_tier[decision.tier] += 1
                    summary.by_label[decision.label] += 1
                    if error:
                        summary.errors[error] += 1
                    if writer is not None:
                        writer.writerow(layout.output(row, bad, decision))
                    elif table is not None:
                        table.write(row[layout.source].strip(), row[layout.message].strip(), decision)
                summary.rows += len(rows)
                show_queue()
        finally:
            if close and sink is not None:
                sink.close()
            elif sink is not None:
                sink.flush()
    summary.seconds = time.monotonic() - started
    stats = getattr(router, "stats", None)  # a remote sidecar reports its own in metrics
    summary.cache_hit_ratio = stats.cache_hit_ratio if stats is not None else 0.0
    return summary


def _open_sink(out: str | Path | None) -> tuple[TextIO | None, bool]:
    if out is None:
        return None, False
    if str(out) == "-":
        return sys.stdout, False
    path = Path(out)
    try:
        return path.open("w", encoding="utf-8", errors="surrogateescape", newline=""), True
    except OSError as exc:
        raise CsvInputError(f"cannot write {path}: {exc.strerror}") from exc


def read_chunks(reader: Iterator[list[str]], size: int, path: Path | str) -> Iterator[list[list[str]]]:
    """Lists of ``size`` rows, blank lines skipped; an unreadable line raises CsvInputError."""
    chunk: list[list[str]] = []
    try:
        for row in reader:
            if not row:  # blank line
                continue
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    except csv.Error as exc:
        line = getattr(reader, "line_num", "?")
        raise CsvInputError(f"{path}: line {line}: unreadable CSV ({exc}); rows before it were written") from exc
    if chunk:
        yield chunk
