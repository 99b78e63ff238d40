"""`logclass classify`: stream a CSV of logs through the router in chunks, in constant memory.

Input needs ``source`` and ``log_message`` columns (other columns are kept); output adds
``target_label``, ``tier``, ``confidence`` and ``error`` (empty unless the row could not be
classified or was malformed). Undecodable bytes are carried through to the output unchanged.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from logclass.core.decision import Decision, LogRecord
from logclass.jobs.chunks import BatchClassifier, pipelined
from logclass.jobs.rows import CountingReader, CsvInputError, CsvLayout, read_chunks, read_header, row_error


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
