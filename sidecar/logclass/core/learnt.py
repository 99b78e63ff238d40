"""Learnt template memory: templates the running service was taught, kept across restarts.

Two teachers: the LLM (its verdict for a template no cheaper tier knew) and a human (a
correction sent for one record). Each lesson is ``(scope, template) -> label`` and is answered by
the memory tier from then on, so a template costs one LLM call in the life of a deployment, not
one per process.

Provenance decides what a lesson may answer, because any caller can make the LLM decide a line:
- an LLM lesson's scope is the source of the record it was asked about: it answers that source
  alone, and only after the operator's corrections and the trained memory (``MemoryTier``);
- a correction answers every source (scope ``""``) or, when the operator says so, its record's
  source alone; it outranks everything but the regex rules.

The file (``memory.learnt_file``) is append-only JSONL with the teacher file's keys plus
``origin``, so ``logclass train --extra`` reads it as it is. Lookups are one dict probe on the
event loop; appends go to a writer thread that writes and fsyncs in batches, because an fsync
costs milliseconds and the event loop answers known records in microseconds.

Rules, applied alike at load and at runtime (so the file replayed gives the same memory):
the last lesson of a key wins, except that an LLM answer is refused where a correction covers it
(an LLM question in flight when the correction arrives must not undo it). An operator can list
lessons and drop them (the Admin service); a drop rewrites the file at once.

Bounds, because every lesson started as a log line an attacker may have chosen:
- at most ``memory.learnt_max_lessons`` lessons; past it the least recently taught LLM lesson
  goes (corrections are an operator's: when only they are left, a new lesson is refused);
- a line over ``MAX_LINE_BYTES`` is neither written nor read;
- the file is rewritten with one line per live lesson (compacted) at start when it holds dead
  lines, and while running whenever it passes ``memory.learnt_file_max_bytes`` and twice the
  live lines' size;
- it is read line by line; a bad line anywhere is skipped and counted, and one lesson that cannot
  be written costs that lesson, not the writer.
Each is counted in ``dropped`` by reason (``logclass_learnt_dropped_total``).
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from logclass.core.decision import LogRecord, Verdict
from logclass.core.private_files import fsync_folder, make_folder, open_private
from logclass.errors import LogclassError

log = logging.getLogger("logclass.learnt")
ORIGIN_LLM, ORIGIN_FEEDBACK = "llm", "feedback"
ORIGINS = (ORIGIN_LLM, ORIGIN_FEEDBACK)
SETTING = "memory.learnt_file"
_KEYS = ("source", "template", "example", "label", "confidence", "model", "origin", "scope")
ALL_SOURCES = ""  # the scope of a correction that answers every source
Key = tuple[str, str]  # (scope, template)
# Every line starts so (``_KEYS`` order): a line glued onto a torn one is found again by it.
_LINE_START = b'{"source": '
# A lesson holds a message (limits.max_message_bytes, 64 KiB by default), its source and template:
# far below this. A longer line is hostile or corrupt; reading it whole would cost its size.
MAX_LINE_BYTES = 1 << 20
# Why lessons were lost (logclass_learnt_dropped_total{reason}).
EVICTED, REFUSED, BAD_LINE, UNWRITABLE = "evicted", "refused", "bad_line", "unwritable"
DROP_REASONS = (EVICTED, REFUSED, BAD_LINE, UNWRITABLE)
_LOGGED_BAD_LINES = 5


class LearntFileError(LogclassError):
    """``memory.learnt_file`` cannot be read or written as a learnt memory."""


@dataclass(frozen=True, slots=True)
class Lesson:
    template: str
    source: str  # the record's source it was learnt from
    example: str  # that record's message
    label: str
    confidence: float
    origin: str  # ORIGIN_LLM or ORIGIN_FEEDBACK
    model: str  # the LLM's model; empty for a human correction
    scope: str  # the source it answers; ALL_SOURCES: every source (corrections only)
    # When it was taught (epoch seconds, whole: the file keeps seconds). Between nodes sharing a
    # store, the lesson taught last wins; not part of what the lesson says (equality ignores it).
    taught: float = field(default=0.0, compare=False)

    @property
    def key(self) -> Key:
        return (self.scope, self.template)

    @property
    def detail(self) -> str:
        return "human correction" if self.origin == ORIGIN_FEEDBACK else f"learnt from llm {self.model}"

    def verdict(self) -> Verdict:
        return Verdict(self.label, self.confidence, self.detail)

    def to_line(self, when: float | None = None) -> bytes:
        """Its JSONL line; ``when`` (default: ``taught``) is written as its time."""
        entry: dict[str, object] = {key: getattr(self, key) for key in _KEYS}
        entry["time"] = time.strftime(_TIME_FORMAT, time.gmtime(self.taught if when is None else when))
        return json_line(entry)


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _taught(entry: dict[str, object]) -> float:
    """A line's time as epoch seconds; 0 when it has none or none this format reads."""
    value = entry.get("time")
    if not isinstance(value, str):
        return 0.0
    try:
        return float(calendar.timegm(time.strptime(value, _TIME_FORMAT)))
    except ValueError:
        return 0.0


def parse_lesson(raw: bytes) -> Lesson:
    """One JSONL line's lesson (the file's, or the shared store's); ValueError when it is none,
    naming why. The caller bounds ``raw``'s size first."""
    try:
        return _lesson(json.loads(raw))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from exc
    except KeyError as exc:
        raise ValueError(f"no key {exc}") from exc
    except TypeError as exc:
        raise ValueError(str(exc)) from exc
    except RecursionError as exc:  # "[[[[..." a line long: the parser's stack, not a lesson
        raise ValueError("JSON nested too deeply") from exc


def json_line(entry: dict[str, object]) -> bytes:
    """One JSONL line, UTF-8. A lone surrogate (bytes the relay kept with surrogateescape) has no
    UTF-8 form: such an entry is written with JSON escapes, which read back the same."""
    try:
        return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")


def _lesson(entry: object) -> Lesson:
    if not isinstance(entry, dict):
        raise TypeError("not a JSON object")
    origin = str(entry["origin"])
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r} is not one of {', '.join(ORIGINS)}")
    source = str(entry["source"])
    # Files written before scopes: an LLM answer was for its source, a correction for all.
    scope = entry.get("scope")
    if scope is None:
        scope = source if origin == ORIGIN_LLM else ALL_SOURCES
    if origin == ORIGIN_LLM and scope != source:
        raise ValueError(f"an llm lesson answers its own source ({source!r}), not scope {scope!r}")
    return Lesson(
        template=str(entry["template"]),
        source=source,
        example=str(entry["example"]),
        label=str(entry["label"]),
        confidence=float(entry["confidence"]),
        origin=origin,
        model=str(entry.get("model") or ""),
        scope=str(scope),
        taught=_taught(entry),
    )


class LearntStore:
    """``path`` None: in memory only (lost on restart). Mutated and read on the event loop's
    thread only; the writer thread touches nothing but the file and its own copy of the live lines."""

    def __init__(
        self, path: str | Path | None = None, *, max_lessons: int = 100_000, max_file_bytes: int = 64 << 20
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.max_lessons = max_lessons
        self.max_file_bytes = max_file_bytes
        # Insertion order is teaching order: a lesson taught again moves to the end.
        self._lessons: dict[Key, Lesson] = {}
        # Prebuilt verdicts for the hot path, apart by origin: they rank differently.
        self._corrected: dict[Key, Verdict] = {}
        self._answered: dict[Key, Verdict] = {}
        self._llm_order: dict[Key, None] = {}  # the LLM's lessons, least recently taught first
        # Lessons taken since this process started, by origin (logclass_learnt_total).
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # lessons lost, by reason (DROP_REASONS)
        self.loaded = 0
        # Called with ("put", lesson) or ("forget", lesson) for what this process was taught or
        # told to drop (not for lessons taken from elsewhere, nor evictions): the shared store's
        # sync publishes them. Called on the event loop's thread.
        self.listeners: list[Callable[[str, Lesson], None]] = []
        # ("put", lesson, when), ("drop", key) or ("forget", key): done on the writer thread, off
        # the event loop. A forgotten lesson is rewritten out of the file at once.
        self._queue: queue.SimpleQueue[tuple[str, Lesson | Key, float] | None] = queue.SimpleQueue()
        self._written = 0  # queue items the writer has finished
        self._enqueued = 0
        self._synced = threading.Condition()
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None
        self._fh: BinaryIO | None = None
        # The writer's view: key -> its live line, in teaching order, and the file's size.
        self._lines: dict[Key, bytes] = {}
        self._live_bytes = 0  # sum of the live lines' sizes, kept as they change
        self._file_bytes = 0
        if self.path is not None:
            dead = self._load(self.path)
            if dead:
                self._compact(self.path)
            self._fh = self._open(self.path)
            self._thread = threading.Thread(target=self._write_loop, name="logclass-learnt", daemon=True)
            self._thread.start()

    def __len__(self) -> int:
        return len(self._lessons)

    def __iter__(self) -> Iterator[Lesson]:
        return iter(self._lessons.values())

    def get(self, template: str, scope: str) -> Lesson | None:
        return self._lessons.get((scope, template))

    def correction(self, source: str, template: str) -> Verdict | None:
        """The hot path's first probe: a correction for this source, else one for every source."""
        corrected = self._corrected
        if not corrected:
            return None
        return corrected.get((source, template)) or corrected.get((ALL_SOURCES, template))

    def answer(self, source: str, template: str) -> Verdict | None:
        """The hot path's last probe: the LLM's answer for this source's template."""
        return self._answered.get((source, template)) if self._answered else None

    def lessons(self, origin: str = "", scope: str | None = None) -> list[Lesson]:
        """Lessons, most recently taught first, of ``origin`` (empty: both) and ``scope`` (None: any)."""
        return [
            lesson
            for lesson in reversed(self._lessons.values())
            if (not origin or lesson.origin == origin) and (scope is None or lesson.scope == scope)
        ]

    def forget(self, keys: Iterable[Key]) -> list[Lesson]:
        """Drops these lessons here and from the file (rewritten without them); the ones it had."""
        gone = [lesson for key in keys if (lesson := self.drop(key)) is not None]
        for lesson in gone:
            self._tell("forget", lesson)
        return gone

    def drop(self, key: Key) -> Lesson | None:
        """Drops one lesson, told by another node (nobody is told): the lesson it had."""
        lesson = self._lessons.get(key)
        if lesson is not None:
            self._forget(key)
            if self._thread is not None:
                self._send(("forget", key, 0.0))
        return lesson

    def take(self, lesson: Lesson) -> bool:
        """Takes a lesson another node was taught (nobody is told), under the same rules and
        bounds as ``learn``; False when they refuse it."""
        evicted = self._take(lesson)
        if evicted is None:
            return False
        self._persist(lesson, evicted)
        return True

    def _tell(self, kind: str, lesson: Lesson) -> None:
        for listener in self.listeners:
            try:
                listener(kind, lesson)
            except Exception:  # a listener's bug must not cost the lesson
                log.exception("learnt memory: a listener failed on %s", kind)

    def _persist(self, lesson: Lesson, evicted: list[Key]) -> None:
        if self._thread is not None:
            for gone in evicted:
                self._send(("drop", gone, 0.0))
            self._send(("put", lesson, lesson.taught))

    def learn(
        self, template: str, record: LogRecord, verdict: Verdict, origin: str, *, this_source_only: bool = False
    ) -> bool:
        """Takes a lesson (and appends it to the file); False when the rules refuse it (an LLM
        answer where a correction covers it, or a store full of corrections). An LLM lesson
        answers its record's source alone; a correction every source unless ``this_source_only``."""
        # An LLM verdict's detail is its model; a correction has none.
        model = verdict.detail if origin == ORIGIN_LLM else ""
        scope = record.source if origin == ORIGIN_LLM or this_source_only else ALL_SOURCES
        lesson = Lesson(
            template,
            record.source,
            record.message,
            verdict.label,
            verdict.confidence,
            origin,
            model,
            scope,
            taught=float(int(time.time())),
        )
        evicted = self._take(lesson)
        if evicted is None:
            return False
        self.counts[origin] += 1
        self._persist(lesson, evicted)
        self._tell("put", lesson)
        return True

    def _send(self, item: tuple[str, Lesson | Key, float]) -> None:
        self._enqueued += 1
        self._queue.put(item)

    def _take(self, lesson: Lesson) -> list[Key] | None:
        """Applies the rules; the keys evicted to make room, or None when refused."""
        key = lesson.key
        if lesson.origin == ORIGIN_LLM and self.correction(lesson.scope, lesson.template) is not None:
            return None
        known = self._lessons.get(key)
        evicted: list[Key] = []
        if known is None and len(self._lessons) >= self.max_lessons:
            oldest = next(iter(self._llm_order), None)
            if oldest is None:
                self.dropped[REFUSED] += 1
                log.warning(
                    "learnt memory full of corrections (memory.learnt_max_lessons %d): refused", self.max_lessons
                )
                return None
            self._forget(oldest)
            self.dropped[EVICTED] += 1
            evicted.append(oldest)
        self._forget(key)
        self._lessons[key] = lesson
        if lesson.origin == ORIGIN_LLM:
            self._answered[key] = lesson.verdict()
            self._llm_order[key] = None
        else:
            self._corrected[key] = lesson.verdict()
        return evicted

    def _forget(self, key: Key) -> None:
        self._lessons.pop(key, None)
        self._corrected.pop(key, None)
        self._answered.pop(key, None)
        self._llm_order.pop(key, None)

    def flush(self, timeout: float | None = None) -> bool:
        """Blocks until every lesson taken so far is on disk (fsynced); False on timeout. Not for
        the event loop: for tests, tools and ``close``."""
        target = self._enqueued
        with self._synced:
            done = self._synced.wait_for(lambda: self._written >= target or self._error is not None, timeout)
        if self._error is not None:
            raise LearntFileError(f"{SETTING} {self.path}: cannot write: {self._error}; give a writable file")
        return done

    def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        if self._fh is not None:
            self._fh.close()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            # Whatever else arrived meanwhile goes in the same write and the same fsync.
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in items
            batch = [item for item in items if item is not None]
            try:
                self._write(batch)
            except OSError as exc:
                log.error("%s %s: cannot write (%s): lessons since are kept in memory only", SETTING, self.path, exc)
                self._error = exc
            except Exception:  # a bug must cost this batch, not every lesson after it
                log.exception("%s %s: a batch of %d lessons was not written", SETTING, self.path, len(batch))
            with self._synced:
                self._written += len(batch)
                self._synced.notify_all()

    def _write(self, batch: list[tuple[str, Lesson | Key, float]]) -> None:
        assert self._fh is not None and self.path is not None
        out: list[bytes] = []
        rewrite = False
        for kind, value, when in batch:
            if kind in ("drop", "forget"):
                assert isinstance(value, tuple)
                self._drop_line(value)
                rewrite = rewrite or kind == "forget"
                continue
            assert isinstance(value, Lesson)
            line = self._line(value, when)
            if line is not None:
                self._put_line(value.key, line)
                out.append(line)
        if out:
            data = b"".join(out)
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._file_bytes += len(data)
        if rewrite or (self._file_bytes > self.max_file_bytes and self._file_bytes > 2 * self._live_bytes):
            self._fh.close()
            self._compact(self.path)
            self._fh = self._open(self.path)

    def _put_line(self, key: Key, line: bytes) -> None:
        """The live line of ``key`` (last in teaching order); the writer's and the loader's only."""
        self._drop_line(key)
        self._lines[key] = line
        self._live_bytes += len(line)

    def _drop_line(self, key: Key) -> None:
        gone = self._lines.pop(key, None)
        if gone is not None:
            self._live_bytes -= len(gone)

    def _line(self, lesson: Lesson, when: float) -> bytes | None:
        line = lesson.to_line(when or None)
        if len(line) > MAX_LINE_BYTES:
            self.dropped[UNWRITABLE] += 1
            log.warning(
                "%s: a lesson of %d bytes (source %r...) is over %d: kept in memory only",
                SETTING,
                len(line),
                lesson.source[:40],
                MAX_LINE_BYTES,
            )
            return None
        return line

    def _compact(self, path: Path) -> None:
        """Rewrites the file with the live lines alone, atomically: a crash leaves the old file."""
        temporary = path.with_name(path.name + ".compact")
        try:
            with open_private(temporary, append=False) as fh:
                fh.write(b"".join(self._lines.values()))
                fh.flush()
                os.fsync(fh.fileno())
            before = self._file_bytes
            os.replace(temporary, path)
            fsync_folder(path.parent)
        except OSError as exc:
            raise LearntFileError(f"{SETTING} {path}: cannot compact: {exc}; give a writable folder") from exc
        self._file_bytes = self._live_bytes
        log.info(
            "%s %s: compacted, %d -> %d bytes, %d lessons", SETTING, path, before, self._file_bytes, len(self._lines)
        )

    def _open(self, path: Path) -> BinaryIO:
        try:
            # Lessons are log lines: readable by this process's user only.
            make_folder(path.parent)
            return open_private(path, append=True)
        except OSError as exc:
            raise LearntFileError(f"{SETTING} {path}: {exc.strerror}; give a writable file path or null") from exc

    def _load(self, path: Path) -> int:
        """Replays the file line by line; the number of dead lines (superseded, evicted, bad)."""
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LearntFileError(f"{SETTING} {path}: {exc.strerror}; give a readable file or null") from exc
        lines = bad = 0
        first_bad = ""
        with fh:
            for number, raw, end in _lines(fh):
                if raw is None:
                    # A crash in the middle of an append: the lessons before it are whole. Cut it
                    # off, or the next append would glue a good line onto it.
                    log.warning("%s %s: last line is incomplete (%d bytes), skipped", SETTING, path, end)
                    self._truncate(path, end)
                    break
                if not raw.strip():
                    continue
                lines += 1
                reason = self._replay(raw)
                if reason is not None:
                    bad += 1
                    first_bad = first_bad or f"{number}: not a learnt entry ({reason})"
                    if bad <= _LOGGED_BAD_LINES:
                        log.warning("%s %s:%d: skipped, not a learnt entry (%s)", SETTING, path, number, reason)
        self._file_bytes = path.stat().st_size
        if bad and bad == lines:
            raise LearntFileError(
                f"{SETTING} {path}:{first_bad}, and no line is (JSON with {', '.join(_KEYS)}). "
                "Give another file, or null to keep lessons in memory only"
            )
        if bad:
            self.dropped[BAD_LINE] += bad
            log.warning("%s %s: %d bad lines skipped of %d", SETTING, path, bad, lines)
        return lines - len(self._lessons)

    def _replay(self, raw: bytes) -> str | None:
        """Takes one line's lesson; why not, when it is no lesson."""
        if len(raw) > MAX_LINE_BYTES:
            return f"{len(raw)} bytes, over {MAX_LINE_BYTES}"
        try:
            lesson = parse_lesson(raw)
        except ValueError as exc:
            # A line appended after a torn one (a full disk, then room again) is glued onto it.
            glued = raw.rfind(_LINE_START)
            if glued > 0 and self._replay(raw[glued:]) is None:
                return None
            return str(exc)
        evicted = self._take(lesson)
        for gone in evicted or ():
            self._drop_line(gone)
        if evicted is not None:
            self._put_line(lesson.key, raw if raw.endswith(b"\n") else raw + b"\n")
            self.loaded += 1
        return None

    @staticmethod
    def _truncate(path: Path, size: int) -> None:
        try:
            with path.open("r+b") as fh:
                fh.truncate(size)
        except OSError as exc:
            raise LearntFileError(f"{SETTING} {path}: {exc.strerror}; give a writable file path or null") from exc


def _lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line, offset after it); the line is None for a torn last line, whose offset
    is where it starts. A line over MAX_LINE_BYTES comes as its first MAX_LINE_BYTES + 1 bytes: the
    rest is read in pieces and dropped, never held whole."""
    offset = number = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        number += 1
        size, complete = len(raw), raw.endswith(b"\n")
        while not complete and (piece := fh.readline(MAX_LINE_BYTES + 1)):
            size, complete = size + len(piece), piece.endswith(b"\n")
        if not complete:
            yield number, None, offset
            return
        offset += size
        yield number, raw, offset
