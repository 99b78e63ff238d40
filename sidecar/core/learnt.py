"""Learnt template memory: templates the running service was taught, kept across restarts.

Two teachers: the LLM (its verdict for a template no cheaper tier knew) and a human (a
correction sent for one record). Each lesson is ``template -> label`` and is answered by the
memory tier from then on, so a template costs one LLM call in the life of a deployment, not one
per process.

The file (``memory.learnt_file``) is append-only JSONL with the teacher file's keys plus
``origin``, so ``logclass train --extra`` reads it as it is. Lookups are one dict probe on the
event loop; appends go to a writer thread that writes and fsyncs in batches, because an fsync
costs milliseconds and the event loop answers known records in microseconds.

Rules, applied alike at load and at runtime (so the file replayed gives the same memory):
the last lesson of a template wins, except that an LLM answer never replaces a human
correction (an LLM question in flight when the correction arrives must not undo it).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from logclass.core.decision import LogRecord, Verdict
from logclass.errors import LogclassError

log = logging.getLogger("logclass.learnt")
ORIGIN_LLM, ORIGIN_FEEDBACK = "llm", "feedback"
ORIGINS = (ORIGIN_LLM, ORIGIN_FEEDBACK)
SETTING = "memory.learnt_file"
_KEYS = ("source", "template", "example", "label", "confidence", "model", "origin")


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

    @property
    def detail(self) -> str:
        return "human correction" if self.origin == ORIGIN_FEEDBACK else f"learnt from llm {self.model}"

    def verdict(self) -> Verdict:
        return Verdict(self.label, self.confidence, self.detail)

    def to_json(self, when: float) -> str:
        entry: dict[str, object] = {key: getattr(self, key) for key in _KEYS}
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        return json.dumps(entry, ensure_ascii=False)


def _lesson(entry: object) -> Lesson:
    if not isinstance(entry, dict):
        raise TypeError("not a JSON object")
    origin = str(entry["origin"])
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r} is not one of {', '.join(ORIGINS)}")
    return Lesson(
        template=str(entry["template"]),
        source=str(entry["source"]),
        example=str(entry["example"]),
        label=str(entry["label"]),
        confidence=float(entry["confidence"]),
        origin=origin,
        model=str(entry.get("model") or ""),
    )


class LearntStore:
    """``path`` None: in memory only (lost on restart). Mutated and read on the event loop's
    thread only; the writer thread touches nothing but the file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lessons: dict[str, Lesson] = {}
        self._verdicts: dict[str, Verdict] = {}
        # Lessons taken since this process started, by origin (logclass_learnt_total).
        self.counts: Counter[str] = Counter()
        self.loaded = 0
        # (lesson, when taught): serialised on the writer thread, off the event loop.
        self._queue: queue.SimpleQueue[tuple[Lesson, float] | None] = queue.SimpleQueue()
        self._written = 0  # lines the writer has fsynced
        self._enqueued = 0
        self._synced = threading.Condition()
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None
        self._fh: BinaryIO | None = None
        if self.path is not None:
            self._load(self.path)
            self._fh = self._open(self.path)
            self._thread = threading.Thread(target=self._write_loop, name="logclass-learnt", daemon=True)
            self._thread.start()

    def __len__(self) -> int:
        return len(self._lessons)

    def __iter__(self) -> Iterator[Lesson]:
        return iter(self._lessons.values())

    def get(self, template: str) -> Lesson | None:
        return self._lessons.get(template)

    def verdict(self, template: str) -> Verdict | None:
        """The hot path's probe: a prebuilt verdict, no allocation."""
        return self._verdicts.get(template)

    def learn(self, template: str, record: LogRecord, verdict: Verdict, origin: str) -> bool:
        """Takes a lesson (and appends it to the file); False when the rules refuse it (an LLM
        answer for a template a human corrected)."""
        # An LLM verdict's detail is its model; a correction has none.
        model = verdict.detail if origin == ORIGIN_LLM else ""
        lesson = Lesson(template, record.source, record.message, verdict.label, verdict.confidence, origin, model)
        if not self._take(lesson):
            return False
        self.counts[origin] += 1
        if self._thread is not None:
            self._enqueued += 1
            self._queue.put((lesson, time.time()))
        return True

    def _take(self, lesson: Lesson) -> bool:
        known = self._lessons.get(lesson.template)
        if known is not None and known.origin == ORIGIN_FEEDBACK and lesson.origin == ORIGIN_LLM:
            return False
        self._lessons[lesson.template] = lesson
        self._verdicts[lesson.template] = lesson.verdict()
        return True

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
        assert self._fh is not None
        fh = self._fh
        stop = False
        while not stop:
            entries = [self._queue.get()]
            # Whatever else arrived meanwhile goes in the same write and the same fsync.
            while True:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in entries
            batch = [entry for entry in entries if entry is not None]
            try:
                if batch:
                    fh.write("".join(lesson.to_json(when) + "\n" for lesson, when in batch).encode("utf-8"))
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                log.error("%s %s: cannot write (%s): lessons since are kept in memory only", SETTING, self.path, exc)
                self._error = exc
            with self._synced:
                self._written += len(batch)
                self._synced.notify_all()

    def _open(self, path: Path) -> BinaryIO:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("ab")
        except OSError as exc:
            raise LearntFileError(f"{SETTING} {path}: {exc.strerror}; give a writable file path or null") from exc

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LearntFileError(f"{SETTING} {path}: {exc.strerror}; give a readable file or null") from exc
        complete, _, torn = data.rpartition(b"\n")
        if torn:
            # A crash in the middle of an append: the lessons before it are whole. Cut it off, or
            # the next append would glue a good line onto it.
            log.warning("%s %s: last line is incomplete (%d bytes), skipped", SETTING, path, len(torn))
            self._truncate(path, len(complete) + 1 if b"\n" in data else 0)
        try:
            text = complete.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LearntFileError(f"{SETTING} {path} is not UTF-8 text (byte {exc.start}): not a learnt file") from exc
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                self._take(_lesson(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise LearntFileError(
                    f"{SETTING} {path}:{number}: not a learnt entry ({exc}); each line needs JSON with "
                    f"{', '.join(_KEYS)}. Give another file, or null to keep lessons in memory only"
                ) from exc
            self.loaded += 1

    @staticmethod
    def _truncate(path: Path, size: int) -> None:
        try:
            with path.open("r+b") as fh:
                fh.truncate(size)
        except OSError as exc:
            raise LearntFileError(f"{SETTING} {path}: {exc.strerror}; give a writable file path or null") from exc
