"""The learnt memory shared through the store, node against node, on the in-process store: a
lesson or a drop on one node reaches the others, a correction outranks an LLM answer whichever
arrives first, a node that starts (or comes back) catches up without bringing back what was
dropped, and what the store holds is checked like any input. Every wait is on the sync's own
progress (``LessonSync.until``), never on a clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from logclass.core.decision import LogRecord, Verdict
from logclass.core.learnt import ALL_SOURCES, ORIGIN_FEEDBACK, ORIGIN_LLM, LearntStore, Lesson
from logclass.engine.lesson_sync import LessonSync, decode, encode
from logclass.store.base import CORRECTION_TAG, LLM_TAG, LessonChanges, LessonPut, LessonSnapshot, lesson_field
from logclass.store.local import LocalStore

T = "User <*> logged in."
RECORD = LogRecord("ModernCRM", "User 12 logged in.")


class DownStore(LocalStore):
    """The in-process store, which a test can take away (every call answers as a store down)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def put_lesson(self, field: str, value: bytes, max_lessons: int) -> LessonPut:
        return LessonPut.UNAVAILABLE if self.down else await super().put_lesson(field, value, max_lessons)

    async def forget_lesson(self, field: str, when: float, max_forgotten: int) -> bool:
        return False if self.down else await super().forget_lesson(field, when, max_forgotten)

    async def lesson_snapshot(self, limit: int) -> LessonSnapshot | None:
        return None if self.down else await super().lesson_snapshot(limit)

    async def lesson_changes(self, after: int, block_ms: int, count: int) -> LessonChanges | None:
        return None if self.down else await super().lesson_changes(after, block_ms, count)


class Node:
    def __init__(self, store: LocalStore, path: Path | None = None, clock: Callable[[], float] | None = None) -> None:
        self.learnt = LearntStore(path)
        self.changed: list[str] = []
        self.sync = LessonSync(
            self.learnt,
            store,
            self.changed.append,
            max_lessons=100,
            block_ms=60_000,
            retry_s=0.001,
            clock=clock or _clock,
        )

    def label(self, template: str = T, source: str = "ModernCRM") -> str | None:
        verdict = self.learnt.correction(source, template) or self.learnt.answer(source, template)
        return verdict.label if verdict is not None else None

    async def until(self, done: Callable[[], bool]) -> None:
        await asyncio.wait_for(self.sync.until(done), 30)


def _clock() -> float:
    return 2_000_000_000.0


async def _cluster(store: LocalStore, n: int) -> list[Node]:
    nodes = [Node(store) for _ in range(n)]
    for node in nodes:
        node.sync.start()
        await node.until(lambda node=node: not node.sync._resync)  # type: ignore[misc]
    return nodes


async def _close(nodes: list[Node]) -> None:
    for node in nodes:
        await node.sync.close()
        node.learnt.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_lesson_and_a_correction_reach_every_node() -> None:
    async def scenario() -> None:
        store = LocalStore()
        a, b, c = await _cluster(store, 3)
        a.learnt.learn(T, RECORD, Verdict("User Action", 0.9, "qwen"), ORIGIN_LLM)
        for node in (b, c):
            await node.until(lambda node=node: node.label() == "User Action")  # type: ignore[misc]
            assert node.changed == [T]
        b.learnt.learn(T, RECORD, Verdict("Security Alert", 1.0), ORIGIN_FEEDBACK)
        for node in (a, c):
            await node.until(lambda node=node: node.label() == "Security Alert")  # type: ignore[misc]
        assert store.stats.lessons_published == 2 and store.stats.lessons_received == 4
        # Echoes of a node's own change change nothing there.
        assert a.changed == [T] and b.changed == [T]
        # The correction answers every source, on every node.
        assert c.label(source="other") == "Security Alert"
        await _close([a, b, c])

    run(scenario)


def test_a_drop_reaches_every_node() -> None:
    async def scenario() -> None:
        store = LocalStore()
        a, b = await _cluster(store, 2)
        a.learnt.learn(T, RECORD, Verdict("Security Alert", 1.0), ORIGIN_FEEDBACK)
        await b.until(lambda: b.label() == "Security Alert")
        assert [lesson.key for lesson in b.learnt.forget([(ALL_SOURCES, T)])] == [(ALL_SOURCES, T)]
        await a.until(lambda: a.label() is None)
        snapshot = await store.lesson_snapshot(100)
        assert snapshot is not None and snapshot.lessons == {} and lesson_field(ALL_SOURCES, T) in snapshot.forgotten
        await _close([a, b])

    run(scenario)


def test_an_llm_answer_racing_a_correction_never_undoes_it() -> None:
    """Node a's LLM answers while node b's correction lands: whichever order the store sees, the
    correction stays on both (this_source_only, so both lessons share one field)."""

    async def scenario() -> None:
        store = LocalStore()
        a, b = await _cluster(store, 2)
        b.learnt.learn(T, RECORD, Verdict("Security Alert", 1.0), ORIGIN_FEEDBACK, this_source_only=True)
        await b.until(lambda: not b.sync._outbox)
        # a has not read the correction yet: its LLM lesson is taken here, refused by the store.
        assert a.label() in (None, "Security Alert")
        a.learnt.learn(T, RECORD, Verdict("User Action", 0.9, "qwen"), ORIGIN_LLM)
        await a.until(lambda: a.label() == "Security Alert" and not a.sync._outbox)
        assert b.label() == "Security Alert"
        snapshot = await store.lesson_snapshot(100)
        assert snapshot is not None and snapshot.lessons[lesson_field("ModernCRM", T)][:1] == CORRECTION_TAG
        await _close([a, b])

    run(scenario)


def test_a_new_node_starts_with_everything_the_cluster_learnt(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LocalStore()
        (a,) = await _cluster(store, 1)
        for i in range(20):
            a.learnt.learn(f"Job <*> step {i}", RECORD, Verdict("Workflow Error", 0.8, "qwen"), ORIGIN_LLM)
        await a.until(lambda: not a.sync._outbox)
        newcomer = Node(store, tmp_path / "learnt.jsonl")
        newcomer.sync.start()
        await newcomer.until(lambda: len(newcomer.learnt) == 20)
        assert newcomer.label("Job <*> step 7") == "Workflow Error"
        await _close([a, newcomer])
        # ... and keeps it in its own file too.
        assert len(LearntStore(tmp_path / "learnt.jsonl")) == 20

    run(scenario)


def test_a_store_that_lost_everything_gets_the_nodes_lessons_back() -> None:
    async def scenario() -> None:
        store = LocalStore()
        a, b = await _cluster(store, 2)
        a.learnt.learn(T, RECORD, Verdict("Security Alert", 1.0), ORIGIN_FEEDBACK)
        b.learnt.learn("Disk <*> full", RECORD, Verdict("Resource Usage", 0.9, "qwen"), ORIGIN_LLM)
        await a.until(lambda: len(a.learnt) == 2)
        await b.until(lambda: len(b.learnt) == 2)
        resyncs = store.stats.resyncs
        store.lose_everything()  # restarted without persistence
        store.seq = 0
        # A change from elsewhere wakes the followers; they see the log's number went back.
        await store.forget_lesson("unrelated", 1.0, 100)
        await a.until(lambda: store.stats.resyncs >= resyncs + 2)
        await a.until(lambda: not a.sync._resync and not b.sync._resync)
        snapshot = await store.lesson_snapshot(100)
        assert snapshot is not None and len(snapshot.lessons) == 2
        assert a.label() == b.label() == "Security Alert"
        await _close([a, b])

    run(scenario)


def test_lessons_taught_while_the_store_is_away_are_reconciled_when_it_is_back() -> None:
    async def scenario() -> None:
        store = DownStore()
        a, b = await _cluster(store, 2)
        a.learnt.learn("Kept <*>", RECORD, Verdict("User Action", 0.9, "qwen"), ORIGIN_LLM)
        await b.until(lambda: b.label("Kept <*>") == "User Action")
        store.down = True
        # Taught and dropped on a while the store is away: each stays with a, as without a store.
        a.learnt.learn(T, RECORD, Verdict("Security Alert", 1.0), ORIGIN_FEEDBACK)
        a.learnt.forget([("ModernCRM", "Kept <*>")])
        await a.until(lambda: a.sync._resync and not a.sync._outbox)
        assert a.label() == "Security Alert" and b.label() is None
        store.down = False
        await store.forget_lesson("wake the followers", 1.0, 100)
        await b.until(lambda: b.label() == "Security Alert" and b.label("Kept <*>") is None)
        assert a.label("Kept <*>") is None  # b's copy did not bring the dropped lesson back
        await _close([a, b])

    run(scenario)


def test_a_node_that_was_away_does_not_bring_back_a_dropped_lesson(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LocalStore()
        times = iter(range(2_000_000_000, 2_000_001_000))
        a = Node(store, clock=lambda: float(next(times)))
        a.sync.start()
        away = LearntStore(tmp_path / "away.jsonl")
        lesson = Lesson(T, "ModernCRM", "x", "User Action", 0.9, ORIGIN_LLM, "qwen", "ModernCRM", 1_000_000_000.0)
        assert away.take(lesson)
        await store.put_lesson(lesson_field("ModernCRM", T), encode(lesson), 100)
        await a.until(lambda: a.label() == "User Action")
        a.learnt.forget([("ModernCRM", T)])  # dropped while the other node was stopped
        await a.until(lambda: not a.sync._outbox)
        away.close()
        back = Node(store, tmp_path / "away.jsonl")
        assert back.label() == "User Action"  # from its file
        back.sync.start()
        await back.until(lambda: back.label() is None)
        snapshot = await store.lesson_snapshot(100)
        assert snapshot is not None and snapshot.lessons == {}
        await _close([a, back])

    run(scenario)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"L",
        b"Lnot json\n",
        b"X" + b"{}",
        CORRECTION_TAG + encode(Lesson(T, "s", "x", "A", 0.9, ORIGIN_LLM, "m", "s"))[1:],  # tag lies
        LLM_TAG + b'{"source": "s", "template": "t", "example": "x", "label": "A", "confidence": 1,'
        b' "model": "", "origin": "nobody", "scope": "s"}',
        LLM_TAG + b"[" * 100_000,
        LLM_TAG + b'{"a": "' + b"x" * (2 << 20) + b'"}',
    ],
)
def test_what_the_store_holds_is_checked_like_any_input(value: bytes) -> None:
    assert decode(lesson_field("s", "t"), value) is None


def test_bad_values_in_the_store_are_refused_and_the_sync_goes_on() -> None:
    async def scenario() -> None:
        store = LocalStore()
        good = Lesson(T, "ModernCRM", "x", "User Action", 0.9, ORIGIN_LLM, "qwen", "ModernCRM", 5.0)
        await store.put_lesson(lesson_field("ModernCRM", T), LLM_TAG + b"\xff\xfe garbage", 100)
        await store.put_lesson(lesson_field("elsewhere", T), encode(good), 100)  # under another's field
        (a,) = await _cluster(store, 1)
        assert len(a.learnt) == 0 and store.stats.lessons_refused == 2
        await store.put_lesson(lesson_field("ModernCRM", "other"), LLM_TAG + b"{}", 100)
        await store.put_lesson(lesson_field("ModernCRM", T), encode(good), 100)
        await a.until(lambda: a.label() == "User Action")
        assert store.stats.lessons_refused == 3
        await _close([a])

    run(scenario)


def test_a_round_trip_through_the_store_keeps_the_lesson() -> None:
    lesson = Lesson(T, "ModernCRM", "User 12 logged in.", "User Action", 0.9, ORIGIN_LLM, "qwen", "ModernCRM", 7.0)
    back = decode(lesson_field("ModernCRM", T), encode(lesson))
    assert back == lesson and back is not None and back.taught == 7.0
