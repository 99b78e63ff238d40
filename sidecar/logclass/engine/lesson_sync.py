"""The learnt memory shared through the store (issue 30): what one node is taught (an LLM answer,
an operator's correction, a lesson dropped) reaches every node, and a node that starts, or comes
back after the store was away, first catches up with what the cluster learnt.

Two background tasks, off the records' path:
- the publisher writes this node's lessons and drops as they happen (a correction reaches the
  store in one round trip, not after a read of the log);
- the follower reads the store's log of changes (a blocking read, so a change arrives within a
  round trip of being written) and applies each to the learnt memory, under its usual rules (a
  correction outranks an LLM answer; the bounds hold), then drops the cached decisions of its
  template through ``changed``.

Reconciling (at start, after a gap in the log, and when the store is back after a fault): the
store's set against this node's, field by field. The lesson taught last wins; a lesson dropped
after it was taught stays dropped (so a node that was away cannot bring it back); what this node
has that the store lacks is written to it. Drops made while the store was away are kept until
written.

What comes from the store is input like any other: a value over ``MAX_LINE_BYTES``, not a
lesson, with a tag that does not match its origin, or under a field that is not its own is
refused (``lessons_refused``) and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from logclass.config.settings import Settings
from logclass.core.learnt import MAX_LINE_BYTES, ORIGIN_FEEDBACK, Key, LearntStore, Lesson, parse_lesson
from logclass.store.base import CORRECTION_TAG, LLM_TAG, LessonChange, LessonPut, SharedStore, lesson_field

log = logging.getLogger("logclass.lessons")
# How long one read of the log waits for a change: a change wakes it at once, so this bounds
# only how often an idle node asks.
FOLLOW_BLOCK_MS = 1000
CHANGES_PER_READ = 256
# Changes of this node waiting to be written. Past it the oldest go, and the next reconcile
# writes what the store lacks (lessons are few: they come at the LLM's pace or an operator's).
OUTBOX_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class _Outgoing:
    field: str
    lesson: Lesson | None  # None: dropped
    when: float


def encode(lesson: Lesson) -> bytes:
    """A lesson's value in the store: its tag, then its JSONL line."""
    tag = CORRECTION_TAG if lesson.origin == ORIGIN_FEEDBACK else LLM_TAG
    return tag + lesson.to_line()


def decode(field: str, value: bytes) -> Lesson | None:
    """The lesson a store value holds, or None when it is not one that belongs under ``field``."""
    if len(value) > MAX_LINE_BYTES + 1:
        return None
    try:
        lesson = parse_lesson(value[1:])
    except ValueError:
        return None
    tag = CORRECTION_TAG if lesson.origin == ORIGIN_FEEDBACK else LLM_TAG
    if value[:1] != tag or lesson_field(lesson.scope, lesson.template) != field:
        return None
    return lesson


class LessonSync:
    """Keeps ``learnt`` and the store's lessons alike. ``changed(template)``: a lesson of this
    template came from another node (the engine drops its cached decisions)."""

    def __init__(
        self,
        learnt: LearntStore,
        store: SharedStore,
        changed: Callable[[str], None],
        *,
        max_lessons: int,
        block_ms: int = FOLLOW_BLOCK_MS,
        retry_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.learnt = learnt
        self.store = store
        self.changed = changed
        self.max_lessons = max_lessons
        self.block_ms = block_ms
        self.retry_s = retry_s
        self.clock = clock
        self.seq = 0  # the last change of the store's log applied here
        self.epoch: str | None = None  # of the store's lesson set, as last read
        self._resync = True
        self._outbox: deque[_Outgoing] = deque()
        self._wake = asyncio.Event()
        # Drops not yet written (field -> when), kept through a store fault; oldest first.
        self._unsent_drops: OrderedDict[str, float] = OrderedDict()
        # field -> the learnt key it stands for (a field is a digest: a dropped field names its key here).
        self._keys: dict[str, Key] = {}
        self._progress = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        learnt.listeners.append(self._taught_here)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._publish())]

    async def close(self, timeout: float = 2.0) -> None:
        """Writes what is waiting (up to ``timeout``), then stops."""
        if self._taught_here in self.learnt.listeners:
            self.learnt.listeners.remove(self._taught_here)
        if self._outbox and len(self._tasks) == 2 and not self._tasks[1].done():
            try:
                await asyncio.wait_for(self.until(lambda: not self._outbox), timeout)
            except TimeoutError:
                log.warning("store: %d lesson changes not written at shutdown", len(self._outbox))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def until(self, done: Callable[[], bool]) -> None:
        """Returns once ``done()`` holds, checked after each step of the sync (for tests and close)."""
        async with self._progress:
            await self._progress.wait_for(done)

    async def _step(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    # This node's changes.

    def _taught_here(self, kind: str, lesson: Lesson) -> None:
        field = lesson_field(lesson.scope, lesson.template)
        if kind == "forget":
            when = self.clock()
            self._keys.pop(field, None)
            self._unsent_drops.pop(field, None)
            self._unsent_drops[field] = when
            while len(self._unsent_drops) > self.max_lessons:
                self._unsent_drops.popitem(last=False)
            self._outbox.append(_Outgoing(field, None, when))
        else:
            self._keys[field] = lesson.key
            self._outbox.append(_Outgoing(field, lesson, lesson.taught))
        if len(self._outbox) > OUTBOX_LIMIT:
            self._outbox.popleft()
            self._resync = True
        self._wake.set()

    async def _publish(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                if not await self._write(self._outbox[0]):
                    # The store is away: the next reconcile writes what it lacks.
                    self._outbox.clear()
                    self._resync = True
                    break
                self._outbox.popleft()
            await self._step()

    async def _write(self, out: _Outgoing) -> bool:
        if out.lesson is None:
            if not await self.store.forget_lesson(out.field, out.when, self.max_lessons):
                return False
            if self._unsent_drops.get(out.field) == out.when:
                del self._unsent_drops[out.field]
            self.store.stats.lessons_published += 1
            return True
        put = await self.store.put_lesson(out.field, encode(out.lesson), self.max_lessons)
        if put is LessonPut.UNAVAILABLE:
            return False
        if put is LessonPut.STORED:
            self.store.stats.lessons_published += 1
        elif put is LessonPut.FULL:
            log.warning(
                "store: its lesson set is full (memory.learnt_max_lessons %d): kept here only", self.max_lessons
            )
        # COVERED: the store holds a correction for it, which reaches this node through the log.
        return True

    # The store's changes.

    async def _follow(self) -> None:
        while True:
            try:
                if self._resync and not await self._reconcile():
                    await asyncio.sleep(self.retry_s)
                    continue
                await self._read_changes()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the sync for the life of the process
                log.exception("store: lesson sync failed; reading the store's lessons again")
                self._resync = True
                await asyncio.sleep(self.retry_s)

    async def _read_changes(self) -> None:
        found = await self.store.lesson_changes(self.seq, self.block_ms, CHANGES_PER_READ)
        if found is None:
            self._resync = True
            await asyncio.sleep(self.retry_s)
            return
        if found.lost(self.seq, self.epoch):
            log.info("store: lesson log at %d, this node at %d: reading the whole set again", found.head, self.seq)
            self._resync = True
            return
        for change in found.changes:
            self._apply(change)
            self.seq = change.seq
        await self._step()

    def _apply(self, change: LessonChange) -> None:
        if change.value is None:
            key = self._keys.pop(change.field, None)
            if key is not None and self.learnt.drop(key) is not None:
                self.store.stats.lessons_received += 1
                self.changed(key[1])
            return
        theirs = decode(change.field, change.value)
        if theirs is None:
            self.store.stats.lessons_refused += 1
            return
        self._take(change.field, theirs)

    def _take(self, field: str, theirs: Lesson) -> None:
        mine = self.learnt.get(theirs.template, theirs.scope)
        self._keys[field] = theirs.key
        if mine == theirs:  # this node's own change, read back
            return
        if self.learnt.take(theirs):
            self.store.stats.lessons_received += 1
            self.changed(theirs.template)

    async def _reconcile(self) -> bool:
        """One pass of the store's set against this node's; False when the store is away."""
        snapshot = await self.store.lesson_snapshot(self.max_lessons)
        if snapshot is None:
            return False
        self.store.stats.resyncs += 1
        for field, when in list(self._unsent_drops.items()):
            if not await self.store.forget_lesson(field, when, self.max_lessons):
                return False
            self._unsent_drops.pop(field, None)
            snapshot.lessons.pop(field, None)
            snapshot.forgotten[field] = when
        mine_by_field = {lesson_field(lesson.scope, lesson.template): lesson for lesson in self.learnt}
        self._keys = {field: lesson.key for field, lesson in mine_by_field.items()}
        ours: list[tuple[str, Lesson]] = []
        for field, value in snapshot.lessons.items():
            theirs = decode(field, value)
            if theirs is None:
                self.store.stats.lessons_refused += 1
                continue
            mine = mine_by_field.pop(field, None)
            if mine is not None and mine != theirs and _outranks(mine, theirs):
                ours.append((field, mine))
            else:
                self._take(field, theirs)
        for field, mine in mine_by_field.items():
            dropped = snapshot.forgotten.get(field)
            if dropped is not None and dropped >= mine.taught:
                self.learnt.drop(mine.key)
                self._keys.pop(field, None)
                self.changed(mine.template)
            elif snapshot.complete:
                ours.append((field, mine))
        for field, mine in ours:
            if not await self._write(_Outgoing(field, mine, mine.taught)):
                return False
        self.seq, self.epoch = snapshot.seq, snapshot.epoch
        self._resync = False
        log.info(
            "store: lessons reconciled at change %d (%d here, %d written to the store)",
            snapshot.seq,
            len(self.learnt),
            len(ours),
        )
        await self._step()
        return True


def _outranks(mine: Lesson, theirs: Lesson) -> bool:
    """Whether this node's lesson replaces the store's: a correction over an LLM answer, else
    the one taught later (the store's on a tie)."""
    mine_corrects, theirs_corrects = mine.origin == ORIGIN_FEEDBACK, theirs.origin == ORIGIN_FEEDBACK
    if mine_corrects != theirs_corrects:
        return mine_corrects
    return mine.taught > theirs.taught


def start_lesson_sync(
    settings: Settings, learnt: LearntStore | None, store: SharedStore | None, changed: Callable[[str], None]
) -> LessonSync | None:
    """The running sync of ``learnt`` with ``store`` (None without either: nothing to share)."""
    if learnt is None or store is None:
        return None
    sync = LessonSync(learnt, store, changed, max_lessons=settings.memory.learnt_max_lessons)
    sync.start()
    return sync
