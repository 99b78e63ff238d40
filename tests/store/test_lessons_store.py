"""The lesson half of the store's contract (issue 30), on the in-process store and on a real
redis-server: the current lesson per field, drops remembered with when, and a numbered log of
changes that a reader follows with a blocking read, and that tells it when it missed some."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logclass import config
from logclass.store.base import CORRECTION_TAG, LLM_TAG, LessonPut, SharedStore, lesson_field
from logclass.store.local import LocalStore
from logclass.store.redis import RedisStore
from tests.store.redis_server import RedisServer


def _redis(url: str, **changes: object) -> RedisStore:
    settings = dataclasses.replace(config.load(environ={}).store, url=url, timeout_ms=2000, **changes)  # type: ignore[arg-type]
    return RedisStore(settings)


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SharedStore]]:
    """A factory of stores that see the same data; keyword changes go to the store's settings."""
    if request.param == "local":
        shared = LocalStore(log_length=4)
        yield lambda **_: shared
        return
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield lambda **changes: _redis(server.url, **{"lesson_log_length": 4, **changes})
    finally:
        server.stop()


A, B = lesson_field("", "User <*> logged in."), lesson_field("svc", "Disk <*> full")


def test_lessons_round_trip_and_every_change_is_numbered(store: Callable[..., SharedStore]) -> None:
    async def scenario() -> None:
        s = store()
        assert await s.put_lesson(A, LLM_TAG + b'{"a": 1}\n', 100) is LessonPut.STORED
        assert await s.put_lesson(B, LLM_TAG + b'{"b": 1}\n', 100) is LessonPut.STORED
        assert await s.forget_lesson(B, 1234.5, 100)
        snapshot = await s.lesson_snapshot(100)
        assert snapshot is not None and snapshot.complete
        assert snapshot.seq == 3 and snapshot.lessons == {A: LLM_TAG + b'{"a": 1}\n'}
        assert snapshot.forgotten == {B: 1234.5}
        found = await s.lesson_changes(0, 0, 10)
        assert found is not None and found.epoch is not None and not found.lost(0, found.epoch)
        assert [(c.seq, c.field, c.value, c.when) for c in found.changes] == [
            (1, A, LLM_TAG + b'{"a": 1}\n', 0.0),
            (2, B, LLM_TAG + b'{"b": 1}\n', 0.0),
            (3, B, None, 1234.5),
        ]
        later = await s.lesson_changes(1, 0, 1)
        assert later is not None and [c.seq for c in later.changes] == [2]
        # Taught again after the drop: the drop is forgotten.
        await s.put_lesson(B, LLM_TAG + b'{"b": 2}\n', 100)
        again = await s.lesson_snapshot(100)
        assert again is not None and again.forgotten == {} and B in again.lessons
        await s.close()

    asyncio.run(scenario())


def test_a_blocking_read_wakes_when_another_node_writes(store: Callable[..., SharedStore]) -> None:
    async def scenario() -> None:
        reader, writer = store(), store()
        # Blocks up to 30 s: it returns with the change only because the write woke it.
        read = asyncio.create_task(reader.lesson_changes(0, 30_000, 10))
        await asyncio.sleep(0)
        while not read.done():
            await writer.put_lesson(A, CORRECTION_TAG + b"{}\n", 100)
            await asyncio.wait([read], timeout=0.2)
        found = read.result()
        assert found is not None and found.changes and found.changes[0].seq == 1
        nothing = await reader.lesson_changes(found.head + 99, 10, 10)  # ahead of the log: lost
        assert nothing is not None and nothing.lost(found.head + 99, found.epoch)
        for s in {id(reader): reader, id(writer): writer}.values():
            await s.close()

    asyncio.run(scenario())


def test_an_llm_lesson_never_replaces_a_correction_in_the_store(store: Callable[..., SharedStore]) -> None:
    async def scenario() -> None:
        s = store()
        await s.put_lesson(A, LLM_TAG + b"llm\n", 100)
        assert await s.put_lesson(A, CORRECTION_TAG + b"fix\n", 100) is LessonPut.STORED
        assert await s.put_lesson(A, LLM_TAG + b"llm again\n", 100) is LessonPut.COVERED
        snapshot = await s.lesson_snapshot(100)
        assert snapshot is not None and snapshot.lessons[A] == CORRECTION_TAG + b"fix\n" and snapshot.seq == 2
        await s.close()

    asyncio.run(scenario())


def test_the_lesson_set_the_drops_and_the_log_are_bounded(store: Callable[..., SharedStore]) -> None:
    async def scenario() -> None:
        s = store()
        for i in range(3):
            assert await s.put_lesson(lesson_field("", f"t{i}"), LLM_TAG + b"{}\n", 3) is LessonPut.STORED
        assert await s.put_lesson(lesson_field("", "t3"), LLM_TAG + b"{}\n", 3) is LessonPut.FULL
        assert await s.put_lesson(lesson_field("", "t0"), LLM_TAG + b"new\n", 3) is LessonPut.STORED  # known field
        for i in range(5):
            await s.forget_lesson(lesson_field("", f"gone{i}"), float(i), 2)
        snapshot = await s.lesson_snapshot(2)
        assert snapshot is not None and not snapshot.complete and len(snapshot.lessons) == 2
        assert sorted(snapshot.forgotten.values()) == [3.0, 4.0]  # the latest two drops
        # A log of about four changes (redis trims whole nodes of 100 entries: MAXLEN ~), so after
        # 250 more a reader at 0 missed some, and one at the head missed none.
        for i in range(250):
            await s.put_lesson(lesson_field("", "t0"), LLM_TAG + b"%d\n" % i, 3)
        found = await s.lesson_changes(0, 0, 1000)
        assert found is not None and found.head == 259 and found.lost(0, found.epoch)
        assert found.changes[-1].seq == 259 and len(found.changes) < 259
        current = await s.lesson_changes(259, 0, 10)
        assert current is not None and current.changes == [] and not current.lost(259, found.epoch)
        await s.close()

    asyncio.run(scenario())


def test_a_store_that_lost_its_data_tells_the_reader(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()

    async def scenario() -> None:
        s = _redis(server.url)
        await s.put_lesson(A, LLM_TAG + b"{}\n", 100)
        await s.put_lesson(B, LLM_TAG + b"{}\n", 100)
        before = await s.lesson_snapshot(100)
        assert before is not None and before.epoch is not None
        server.stop()
        assert await s.lesson_snapshot(100) is None
        assert await s.lesson_changes(2, 0, 10) is None
        assert await s.put_lesson(A, LLM_TAG + b"{}\n", 100) is LessonPut.UNAVAILABLE
        assert not await s.forget_lesson(A, 1.0, 100)
        server.start()  # empty: no persistence
        found = None
        for _ in range(20):  # the pool's dead connections fail first
            found = await s.lesson_changes(2, 0, 10)
            if found is not None:
                break
        assert found is not None and found.head == 0 and found.lost(2, before.epoch)
        # Written again up to the same number: a set by another name, still found lost.
        await s.put_lesson(A, LLM_TAG + b"{}\n", 100)
        await s.put_lesson(B, LLM_TAG + b"{}\n", 100)
        again = await s.lesson_changes(2, 0, 10)
        assert again is not None and again.head == 2 and again.lost(2, before.epoch)
        assert not again.lost(2, again.epoch)
        await s.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_a_store_with_persistence_keeps_the_lessons_through_a_kill(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persist=True)
    server.start()

    async def scenario() -> None:
        s = _redis(server.url)
        await s.put_lesson(A, CORRECTION_TAG + b"fix\n", 100)
        await s.forget_lesson(B, 7.0, 100)
        server.stop()  # SIGKILL
        server.start()
        snapshot = None
        for _ in range(20):
            snapshot = await s.lesson_snapshot(100)
            if snapshot is not None:
                break
        assert snapshot is not None and snapshot.seq == 2 and snapshot.epoch is not None
        assert snapshot.lessons == {A: CORRECTION_TAG + b"fix\n"} and snapshot.forgotten == {B: 7.0}
        await s.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
