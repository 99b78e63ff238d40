"""Reading LOGS for bootstrap: a CSV with ``source,log_message``, a plain log file (one line a
record), or a folder of them (recursively ``*.csv``, ``*.log``, ``*.txt``).

LOGS are untrusted and may be huge, so reading is bounded and never fails on one bad line:

- a folder holds at most ``max_files`` such files and all of LOGS at most ``max_bytes``: past
  either, a clear error before anything is read;
- a file with a NUL byte in its first 8 KiB is binary: an error naming it (a log file renamed
  ``.log`` by mistake is better moved than half-read);
- a line that is not UTF-8, longer than ``limits.max_message_bytes``, or whose source is longer
  than ``limits.max_source_bytes``, is skipped and counted by reason; the counts are reported;
- no record at all is an error.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from logclass.core.decision import LogRecord
from logclass.training.bootstrap.errors import BootstrapError

SUFFIXES = (".csv", ".log", ".txt")
CSV_COLUMNS = ("source", "log_message")
BINARY_PROBE = 8192
# A CSV row holds other columns beside the message: it may be this many times the message limit
# (the same factor as `logclass classify`'s row bound).
CSV_ROW_FACTOR = 16
# Skip reasons, as reported.
NOT_UTF8, TOO_LONG, SOURCE_TOO_LONG, MALFORMED = "not_utf8", "too_long", "source_too_long", "malformed_csv"
NUL_BYTE = "nul_byte"


@dataclass(frozen=True)
class InputOptions:
    max_message_bytes: int
    max_source_bytes: int
    source: str | None = None
    # Searched in each plain line; its group ``source`` names the record's source, and an
    # optional group ``message`` the message (default: the whole line).
    source_regex: re.Pattern[str] | None = None
    max_files: int = 10_000
    max_bytes: int = 2 << 30


@dataclass
class ReadStats:
    files: int = 0
    bytes: int = 0
    records: int = 0
    blank: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    # Plain lines the source regex did not match: they got the default source.
    regex_misses: int = 0


def compile_source_regex(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise BootstrapError(f"--source-regex {pattern!r} is not a valid regular expression: {exc}") from exc
    if "source" not in regex.groupindex:
        raise BootstrapError(f"--source-regex {pattern!r} needs a named group (?P<source>...) for the source")
    return regex


def find_files(logs: Path, options: InputOptions) -> list[Path]:
    """The files LOGS names, bounded in count and total size."""
    if logs.is_file():
        files = [logs]
    elif logs.is_dir():
        files = _walk(logs, options.max_files)
        if not files:
            raise BootstrapError(f"{logs} holds no {', '.join('*' + s for s in SUFFIXES)} file: give a log file or CSV")
    else:
        raise BootstrapError(f"{logs} does not exist: give a log file, a CSV with source,log_message, or a folder")
    total = sum(f.stat().st_size for f in files)
    if total > options.max_bytes:
        raise BootstrapError(
            f"{logs}: {_size(total)} in {len(files)} file(s), over --max-bytes {_size(options.max_bytes)}: "
            "give a sample (e.g. the first 100,000 lines of each file) or raise --max-bytes"
        )
    return files


def _walk(folder: Path, max_files: int) -> list[Path]:
    # os.walk without following links: a link loop or a link to / cannot make the walk endless.
    found: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix.lower() in SUFFIXES and path.is_file():
                found.append(path)
                if len(found) > max_files:
                    raise BootstrapError(
                        f"{folder} holds more than --max-files {max_files} log files: point at a sub-folder, "
                        "or raise --max-files"
                    )
    return found


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def read_records(files: list[Path], options: InputOptions, stats: ReadStats, progress: bool) -> Iterator[LogRecord]:
    """Every record of ``files`` in order; skipped lines counted in ``stats``."""
    total = sum(f.stat().st_size for f in files)
    bar: tqdm[Any]
    with tqdm(total=total, unit="B", unit_scale=True, desc="reading", disable=not progress) as bar:
        for path in files:
            stats.files += 1
            with _open(path) as fh:
                lines = _Lines(fh, stats, bar)
                if path.suffix.lower() == ".csv":
                    yield from _csv_records(lines, path, options, stats)
                else:
                    yield from _plain_records(lines, path, options, stats)


def _open(path: Path) -> IO[bytes]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise BootstrapError(f"cannot read {path}: {exc.strerror or exc}; check the path and its permissions") from exc
    nul = fh.read(BINARY_PROBE).find(b"\x00")
    if nul >= 0:
        fh.close()
        raise BootstrapError(
            f"{path} looks binary (a NUL byte at offset {nul}): bootstrap reads UTF-8 text logs; "
            "move it out of LOGS (or decompress or convert it first)"
        )
    fh.seek(0)
    return fh


class _Lines:
    """Decoded lines of a file, each at most ``limit`` bytes; longer and non-UTF-8 lines are
    skipped (counted in ``stats``) without ever holding more than ``limit`` bytes of them."""

    def __init__(self, fh: IO[bytes], stats: ReadStats, bar: tqdm[Any]) -> None:
        self.fh, self.stats, self.bar = fh, stats, bar
        self.first = True

    def read(self, limit: int) -> Iterator[str]:
        while True:
            raw = self.fh.readline(limit + 1)
            if not raw:
                return
            self._count(raw)
            if len(raw) > limit:
                self._drain(raw)
                self.stats.skipped[TOO_LONG] += 1
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.stats.skipped[NOT_UTF8] += 1
                continue
            if self.first:
                line, self.first = line.removeprefix("\ufeff"), False
            yield line

    def _count(self, raw: bytes) -> None:
        self.stats.bytes += len(raw)
        self.bar.update(len(raw))

    def _drain(self, raw: bytes) -> None:
        # The rest of an overlong line, read in bounded pieces.
        while raw and not raw.endswith(b"\n"):
            raw = self.fh.readline(1 << 16)
            self._count(raw)


def _plain_records(lines: _Lines, path: Path, options: InputOptions, stats: ReadStats) -> Iterator[LogRecord]:
    default = options.source if options.source is not None else path.stem
    # A line's terminator (\r\n) on top of the message limit.
    for line in lines.read(options.max_message_bytes + 2):
        text = line.rstrip("\r\n")
        source, message = default, text
        if options.source_regex is not None:
            match = options.source_regex.search(text)
            if match is None:
                stats.regex_misses += 1
            else:
                source = match.group("source") or default
                if "message" in options.source_regex.groupindex and match.group("message"):
                    message = match.group("message")
        record = _record(source.strip(), message.strip(), options, stats)
        if record is not None:
            yield record


def _csv_records(lines: _Lines, path: Path, options: InputOptions, stats: ReadStats) -> Iterator[LogRecord]:
    limit = CSV_ROW_FACTOR * options.max_message_bytes
    rows = _BoundedRows(lines.read(limit), limit, path)
    reader = csv.reader(rows)
    header = _header(reader, path)
    if header is None:
        return
    at_source, at_message = header.index("source"), header.index("log_message")
    while True:
        rows.mark()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            stats.skipped[MALFORMED] += 1
            continue
        if not row:
            continue
        if len(row) <= max(at_source, at_message):
            stats.skipped[MALFORMED] += 1
            continue
        record = _record(row[at_source].strip(), row[at_message].strip(), options, stats)
        if record is not None:
            yield record


def _header(reader: Iterator[list[str]], path: Path) -> list[str] | None:
    """The CSV's header, None for an empty file; an error when it lacks the columns."""
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        header = [cell.strip() for cell in row]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise BootstrapError(
                f"{path}: missing column(s) {missing} in the header {header[:10]}; a CSV needs a header with "
                f"{', '.join(CSV_COLUMNS)} (for plain log lines, name the file .log or .txt)"
            )
        return header
    return None


class _BoundedRows:
    """Lines for csv.reader, refusing a row longer than ``limit`` characters (an unbalanced quote
    would otherwise pull the rest of the file into one field). ``mark`` before each row: the
    reader pulls lines only as far as the row it returns, so what was pulled since is the row."""

    def __init__(self, lines: Iterator[str], limit: int, path: Path) -> None:
        self.lines, self.limit, self.path = lines, limit, path
        self.row = 0

    def mark(self) -> None:
        self.row = 0

    def __iter__(self) -> _BoundedRows:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.row += len(line)
        if self.row > self.limit:
            raise BootstrapError(
                f"{self.path}: a CSV row runs past {self.limit:,} characters, probably an unbalanced quote; "
                "fix the quoting (or give the lines as a plain .log file)"
            )
        return line


def _record(source: str, message: str, options: InputOptions, stats: ReadStats) -> LogRecord | None:
    if not message:
        stats.blank += 1
        return None
    if len(message.encode("utf-8")) > options.max_message_bytes:
        stats.skipped[TOO_LONG] += 1
        return None
    if len(source.encode("utf-8")) > options.max_source_bytes:
        stats.skipped[SOURCE_TOO_LONG] += 1
        return None
    if "\x00" in message or "\x00" in source:
        stats.skipped[NUL_BYTE] += 1
        return None
    stats.records += 1
    return LogRecord(source, message)
