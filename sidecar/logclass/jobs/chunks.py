"""The chunk pipeline of batch jobs: chunks of records classified a few at once, answered in
input order, so later chunks' new templates queue in the model lanes while earlier ones are
written. One pipeline, for synchronous callers (``pipelined``: `logclass classify`, `evaluate`)
and for the event loop (``pipelined_async``: HTTP uploads)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

from logclass.core.decision import Decision, LogRecord


class BatchClassifier(Protocol):
    """The engine in-process (``BlockingEngine``), or a client of a remote sidecar."""

    def classify(self, records: Sequence[LogRecord]) -> list[Decision]: ...

    def submit(self, records: Sequence[LogRecord]) -> concurrent.futures.Future[list[Decision]]: ...

    def queued(self) -> dict[str, int]:
        """Templates waiting per model lane (empty when not known), for the progress bar."""
        ...

    def close(self) -> None: ...


# Chunks classified at once: later chunks' new templates queue in the lanes while earlier ones
# are answered, so the LLM lane keeps llm.max_concurrency questions in flight across chunks.
LOOKAHEAD_CHUNKS = 4
T = TypeVar("T")


def pipelined(
    classifier: BatchClassifier,
    batches: Iterable[tuple[T, Sequence[LogRecord]]],
    *,
    lookahead: int = LOOKAHEAD_CHUNKS,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[tuple[T, list[Decision]]]:
    """Each batch's decisions, in input order, with up to ``lookahead`` batches in flight.
    ``on_wait`` is called about twice a second while the oldest batch is still out (progress)."""
    inflight: deque[tuple[T, concurrent.futures.Future[list[Decision]]]] = deque()

    def oldest() -> tuple[T, list[Decision]]:
        tag, future = inflight.popleft()
        while True:
            try:
                return tag, future.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                if on_wait is not None:
                    on_wait()

    for tag, records in batches:
        inflight.append((tag, classifier.submit(records)))
        while len(inflight) > lookahead or (inflight and inflight[0][1].done()):
            yield oldest()
    while inflight:
        yield oldest()


async def pipelined_async(
    classify: Callable[[Sequence[LogRecord]], Awaitable[list[Decision]]],
    batches: AsyncIterator[tuple[T, Sequence[LogRecord]]],
    *,
    lookahead: int = LOOKAHEAD_CHUNKS,
) -> AsyncGenerator[tuple[T, list[Decision]], None]:
    """``pipelined`` on the event loop: each batch's decisions in input order, up to
    ``lookahead`` batches in flight. Closing the iterator early (the caller went away) cancels
    the batches still out."""
    inflight: deque[tuple[T, asyncio.Future[list[Decision]]]] = deque()
    try:
        async for tag, records in batches:
            inflight.append((tag, asyncio.ensure_future(classify(records))))
            while inflight and (len(inflight) > lookahead or inflight[0][1].done()):
                tag, future = inflight.popleft()
                yield tag, await future
        while inflight:
            tag, future = inflight.popleft()
            yield tag, await future
    finally:
        for _, future in inflight:
            future.cancel()
