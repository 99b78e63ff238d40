"""The hold (``relay.hold``): records of new templates wait in the buffer for their label.

The budget (``relay.budget_ms``) keeps known records from waiting behind new ones, but a record
whose template is still being decided when it ends would leave with tier ``pending`` and be
stored unlabelled: the first lines of a new error, the ones an operator most wants labelled. So
the server writes those records apart, as a held chunk: durable before the sender's ack, like any
other, but not forwarded. The holder asks the pipeline about them again, waiting this time (the
templates are already on their way through the lanes: the question joins them), and when the
answers land, or the hold's end passes (then they leave ``pending``), it releases the chunk as an
ordinary one with the labels written in. A restart finds held chunks in the buffer and asks
again for whatever time their hold has left.

Order: a held record reaches the upstream after records of its tag that came later, unless
``keep_order``: then records behind a held one from the same tag are held too, and a tag's held
chunks are released in the order they were written.

Bounds: held chunks count in ``relay.buffer.max_bytes`` like any chunk, and at most
``relay.hold.max_bytes`` of them are held at once; past it records of new templates leave pending
(``logclass_relay_hold_records_total{outcome="hold_full"}``), so held records can never fill the
buffer and stop the acks of known ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from logclass.config.settings import RelayHoldSettings
from logclass.relay.buffer import ChunkFile, DiskBuffer
from logclass.relay.metrics import RelayMetrics
from logclass.relay.protocol import EventBatch, pack_entries, packer
from logclass.relay.tagger import Tagger

log = logging.getLogger("logclass.relay.hold")

# The lanes' round-robin owner of held records asked again: one for the relay's held records,
# so a flood of them takes one caller's share, not the senders'.
HOLD_OWNER = "relay-hold"
# The tier name of the LLM in router.source_routes: its sources may be held longer.
LLM_TIER = "llm"
# A release that failed to write (a full or failing disk) is tried again after this long.
RETRY_S = 1.0

# The first tier a source is routed to (router.source_routes), or None.
RouteOf = Callable[[str], str | None]


@dataclass(slots=True)
class _Tag:
    """A tag's held chunks not yet released, in write order (for keep_order), and the number the
    server has decided to hold but the buffer has not written yet."""

    released: asyncio.Future[None] | None = None  # done when its latest held chunk was released
    outstanding: int = 0


@dataclass(slots=True)
class Holder:
    buffer: DiskBuffer
    tagger: Tagger
    metrics: RelayMetrics
    route_of: RouteOf | None = None
    clock: Callable[[], float] = time.time
    _tags: dict[str, _Tag] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _reserved: int = 0  # bytes the server holds that the buffer has not written yet
    _records: int = 0

    @property
    def settings(self) -> RelayHoldSettings:
        """Read at each use: a reload swaps the tagger's settings."""
        return self.tagger.settings.section.hold

    @property
    def enabled(self) -> bool:
        return self.settings.max_s > 0 and self.tagger.classifies

    def start(self) -> None:
        """Takes the chunks written held from now on, and those a previous run left."""
        self.buffer.on_held = self._take
        self.metrics.held_records.set_function(lambda: self._records)
        self.metrics.held_bytes.set_function(lambda: self.buffer.held_bytes)
        self._take(self.buffer.recovered_held)
        self.buffer.recovered_held = []

    async def stop(self) -> None:
        """Stops waiting; held chunks stay in the buffer, asked about again at the next start."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # The server's side.

    def until(self, sources: Iterable[str]) -> float:
        """When the hold of records from ``sources`` ends: the longest of theirs."""
        hold = self.settings
        longest = hold.max_s
        route_of = self.route_of
        if hold.llm_max_s is not None and route_of is not None and any(route_of(s) == LLM_TIER for s in sources):
            longest = max(longest, hold.llm_max_s)
        return self.clock() + longest

    def holds_tag(self, tag: str) -> bool:
        """Whether every record of ``tag`` is held for now (keep_order, with one held already)."""
        if not self.settings.keep_order:
            return False
        state = self._tags.get(tag)
        return state is not None and (state.outstanding > 0 or not _done(state.released))

    def reserve(self, tag: str, nbytes: int, records: int, *, force: bool = False) -> bool:
        """Room to hold ``nbytes`` more (counted until written); False: the hold is full, and
        those records leave pending. ``force``: held past the bound (buffer.max_bytes still holds)."""
        if not force and self.buffer.held_bytes + self._reserved + nbytes > self.settings.max_bytes:
            self.metrics.hold_records.labels("hold_full").inc(records)
            return False
        self._reserved += nbytes
        self._tags.setdefault(tag, _Tag()).outstanding += 1
        return True

    def written(self, tag: str, nbytes: int) -> None:
        """The buffer wrote (or failed to write) a chunk ``reserve`` made room for."""
        self._reserved -= nbytes
        state = self._tags.get(tag)
        if state is not None:
            state.outstanding -= 1

    # Releasing.

    def _take(self, files: Iterable[ChunkFile]) -> None:
        loop = asyncio.get_running_loop()
        for file in files:
            self._records += file.records
            state = self._tags.setdefault(file.tag, _Tag())
            # keep_order: each release waits for the one written before it in its tag.
            before, state.released = state.released, loop.create_future()
            task = loop.create_task(self._release(file, before, state.released))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _release(self, file: ChunkFile, before: asyncio.Future[None] | None, done: asyncio.Future[None]) -> None:
        started = time.monotonic()
        try:
            tag, entries = await self.buffer.read_entries(file)
            remaining = max(0.0, (file.held_until or 0.0) - self.clock())
            batch = EventBatch(tag, "held", entries, None)
            (pending,) = await self.tagger.tag([batch], owner=HOLD_OWNER, budget_s=remaining)
            if before is not None and self.settings.keep_order:
                await asyncio.shield(before)
            stream = pack_entries(entries, packer())
            while True:
                try:
                    await self.buffer.release_held(file, stream, len(entries))
                    break
                except OSError as exc:
                    log.error("cannot release held chunk %s (%s); trying again in %s s", file.path, exc, RETRY_S)
                    await asyncio.sleep(RETRY_S)
        except asyncio.CancelledError:
            raise
        except Exception:  # a held chunk must not be lost to a bug: it stays, asked again at restart
            log.exception("releasing held chunk %s failed; it stays in the buffer until the next start", file.path)
            return
        finally:
            self._records -= file.records
            if not done.done():
                done.set_result(None)
        self.metrics.hold_seconds.observe(time.monotonic() - started)
        self.metrics.hold_records.labels("pending").inc(len(pending.entries))
        self.metrics.hold_records.labels("labelled").inc(len(entries) - len(pending.entries))


def _done(future: asyncio.Future[None] | None) -> bool:
    return future is None or future.done()
