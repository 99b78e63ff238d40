"""``logclass train --extra redis://...``: the lessons a cluster shares (issue 30), read from its
store as ``--extra`` reads a learnt memory's JSONL file: each (scope, template)'s current lesson,
one training row each (its example, its label)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import sys

from logclass.config import redacted_url
from logclass.config.settings import StoreSettings
from logclass.engine.lesson_sync import decode
from logclass.store.base import LessonSnapshot
from logclass.store.redis import RedisStore
from logclass.training.dataset import DatasetError, LabelledRow

_STORE_URL = re.compile(r"^rediss?://")
# Lessons read at most: the service keeps no more (memory.learnt_max_lessons' default is 100,000).
MAX_LESSONS = 1_000_000


def is_store_url(source: str) -> bool:
    return bool(_STORE_URL.match(source))


def read_store_lessons(url: str, settings: StoreSettings) -> tuple[str, str, list[LabelledRow]]:
    """(the URL redacted, a SHA-256 of the lessons read, their rows). ``settings`` gives the
    password file and key prefix (the sidecars' ``store`` section); the URL replaces theirs."""
    name = redacted_url(url)
    # Off the records' path: a whole set of lessons may take longer than a lookup's timeout.
    config = dataclasses.replace(settings, url=url, timeout_ms=settings.sync_timeout_ms, circuit_failures=1)
    snapshot = asyncio.run(_snapshot(config))
    if snapshot is None:
        raise DatasetError(
            f"--extra {name}: the store did not answer within store.sync_timeout_ms "
            f"({settings.sync_timeout_ms} ms); check the URL, store.password_file and that it is up"
        )
    rows: list[LabelledRow] = []
    digest = hashlib.sha256()
    refused = 0
    for field in sorted(snapshot.lessons):
        value = snapshot.lessons[field]
        lesson = decode(field, value)
        if lesson is None:
            refused += 1
            continue
        digest.update(len(value).to_bytes(8, "big") + value)
        rows.append(LabelledRow(lesson.source, lesson.example.strip(), lesson.label))
    if refused:
        print(f"      extra {name}: {refused} store values are not lessons, left out", file=sys.stderr, flush=True)
    if not rows:
        raise DatasetError(f"--extra {name}: the store holds no lessons under key prefix {settings.key_prefix!r}")
    return name, digest.hexdigest(), rows


async def _snapshot(settings: StoreSettings) -> LessonSnapshot | None:
    store = RedisStore(settings)
    try:
        return await store.lesson_snapshot(MAX_LESSONS)
    finally:
        await store.close()
