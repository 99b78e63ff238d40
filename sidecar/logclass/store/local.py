"""The store within one process: a bounded map of decisions and a map of claims with leases.
For a single process (nothing to share) and for the engine's unit tests, on a clock they set."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence

from logclass.store.base import (
    CORRECTION_TAG,
    LLM_TAG,
    Claim,
    LessonChange,
    LessonChanges,
    LessonPut,
    LessonSnapshot,
    SharedStore,
)


class LocalStore(SharedStore):
    def __init__(
        self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic, log_length: int = 10_000
    ) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.log_length = log_length
        self._clock = clock
        self._lessons: dict[str, bytes] = {}
        self._forgotten: OrderedDict[str, float] = OrderedDict()
        self._log: list[LessonChange] = []
        self.seq = 0
        self.epoch: str | None = None
        # Set when a change is logged (and replaced): readers waiting for one wake up.
        self._changed: asyncio.Event | None = None
        # key -> (value, expiry; None: none), oldest first: past max_entries the oldest goes.
        self._values: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._claims: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.stats.calls += 1
        now = self._clock()
        out: list[bytes | None] = []
        for key in keys:
            entry = self._values.get(key)
            if entry is not None and entry[1] is not None and entry[1] <= now:
                del self._values[key]
                entry = None
            out.append(entry[0] if entry is not None else None)
        self.stats.hits += sum(v is not None for v in out)
        self.stats.misses += sum(v is None for v in out)
        return out

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self.stats.calls += 1
        self._values[key] = (value, self._clock() + ttl_s if ttl_s else None)
        self._values.move_to_end(key)
        while len(self._values) > self.max_entries:
            self._values.popitem(last=False)

    async def claim(self, key: str, owner: str, lease_ms: int) -> Claim:
        self.stats.calls += 1
        now = self._clock()
        held = self._claims.get(key)
        if held is not None and held[1] > now and held[0] != owner:
            self.stats.claims_held += 1
            return Claim.HELD
        self._claims[key] = (owner, now + lease_ms / 1000.0)
        self._claims.move_to_end(key)
        while len(self._claims) > self.max_entries:
            self._claims.popitem(last=False)
        self.stats.claims_won += 1
        return Claim.WON

    async def release(self, key: str, owner: str) -> None:
        self.stats.calls += 1
        held = self._claims.get(key)
        if held is not None and held[0] == owner:
            del self._claims[key]

    async def put_lesson(self, field: str, value: bytes, max_lessons: int) -> LessonPut:
        self.stats.calls += 1
        old = self._lessons.get(field)
        if old is not None and old[:1] == CORRECTION_TAG and value[:1] == LLM_TAG:
            return LessonPut.COVERED
        if old is None and len(self._lessons) >= max_lessons:
            return LessonPut.FULL
        self._lessons[field] = value
        self._forgotten.pop(field, None)
        self._append(field, value, 0.0)
        return LessonPut.STORED

    async def forget_lesson(self, field: str, when: float, max_forgotten: int) -> bool:
        self.stats.calls += 1
        self._lessons.pop(field, None)
        self._forgotten.pop(field, None)
        self._forgotten[field] = when
        while len(self._forgotten) > max_forgotten:
            self._forgotten.popitem(last=False)
        self._append(field, None, when)
        return True

    def _append(self, field: str, value: bytes | None, when: float) -> None:
        if self.epoch is None:
            self.epoch = uuid.uuid4().hex
        self.seq += 1
        self._log.append(LessonChange(self.seq, field, value, when))
        del self._log[: max(0, len(self._log) - self.log_length)]
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def lesson_snapshot(self, limit: int) -> LessonSnapshot | None:
        self.stats.calls += 1
        lessons = dict(list(self._lessons.items())[:limit])
        complete = len(lessons) == len(self._lessons)
        return LessonSnapshot(self.seq, self.epoch, lessons, dict(self._forgotten), complete=complete)

    async def lesson_changes(self, after: int, block_ms: int, count: int) -> LessonChanges | None:
        self.stats.calls += 1
        # Like a blocking XREAD: the log's number read first, then a wait for a change after it.
        head, epoch = self.seq, self.epoch
        if head == after and block_ms > 0:
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), block_ms / 1000.0)
        return LessonChanges(head, epoch, [change for change in self._log if change.seq > after][:count])

    def lose_everything(self) -> None:
        """A store restarted without its data (for tests): lessons, drops and the log's number."""
        self._lessons.clear()
        self._forgotten.clear()
        self._log.clear()
        self.seq = 0
        self.epoch = None
        self._values.clear()
        self._claims.clear()
