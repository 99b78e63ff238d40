"""The CSV row rules every CSV job follows (`logclass classify`, HTTP uploads, the report):
the columns read and added, what a malformed row becomes, cells a spreadsheet would run, and
the bounds on what the csv parser is handed."""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from logclass.core.decision import Decision, LogRecord
from logclass.errors import LogclassError

INPUT_COLUMNS = ("source", "log_message")
OUTPUT_COLUMNS = ("target_label", "tier", "confidence", "error")
ERROR_MALFORMED = "malformed_row"
# csv's default field limit (128 KiB) would abort the whole file on one huge line; lines this
# large are read and flagged by the router's own size limit instead.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class CsvInputError(LogclassError):
    pass


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
