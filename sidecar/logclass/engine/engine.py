"""The staged asynchronous core every front end classifies through.

One request::

    fast lane (router.Router, on the event loop)  ── decided ──────────────────► result
      │ new templates: one task per (source, template), shared by every request that needs it
      ▼
    embedding lane ── confident ──► (else) LLM lane ── answer ──► (else) fallback ──► template cache

A request waits only for its own new templates, and only up to its budget. Records still
undecided when the budget ends get the fallback label with tier ``pending``; their templates go
on through the lanes and fill the cache for the next record. A request whose records are all
known never touches a lane, so it is answered in the fast lane's time whatever the lanes hold.

Templates are decided once: a template already on its way through the lanes (asked by another
request, or by an earlier one whose budget ended) is awaited, not asked again.

With a learnt store (``core.learnt``), a teaching tier's verdict (the LLM's) becomes a lesson the
moment it lands, so the memory tier answers the next record of its template, in this process and
after a restart; ``teach`` takes a human correction the same way. The store outlives the engine
(a hot reload builds a new engine on the same store), so whoever creates it closes it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from logclass.core.decision import (
    ERROR_INTERNAL,
    TIER_NONE,
    TIER_PENDING,
    Decision,
    Deferred,
    Item,
    LogRecord,
    TemplateKey,
    Verdict,
)
from logclass.core.learnt import ORIGIN_FEEDBACK, ORIGIN_LLM, Key, LearntStore, Lesson
from logclass.engine.lanes import Lane, LaneFullError
from logclass.engine.router import PendingTemplate, Router, RouterStats
from logclass.engine.shared import SharedDecisions, SharedVerdict
from logclass.errors import LogclassError
from logclass.store.base import Claim
from logclass.tiers.base import FastTier, Tier
from logclass.tiers.memory import MemoryTier

log = logging.getLogger("logclass.engine")
# Records the fast lane decides between two yields to the event loop: a 10,000-record request of
# new lines is masked in slices, so known records of other requests are answered in between.
FAST_SLICE = 512
# ... and characters of their messages: masking costs by the character (a 64 KiB line 1.1-1.4
# ms), so 100 long lines, which no cache keeps, held the loop 129 ms in one slice. A known call
# over gRPC needs several turns of the loop, each of which can wait for a slice: at 256 KiB a
# slice (~5 ms) still cost it 41-63 ms at p99 (bench-hostile); at 64 KiB, one longest line.
FAST_SLICE_CHARS = 64 * 1024


def fast_slices(records: Sequence[LogRecord]) -> Iterator[tuple[int, int]]:
    """(start, end) of the slices the fast lane takes ``records`` in: FAST_SLICE records, or
    fewer whose messages reach FAST_SLICE_CHARS."""
    start = chars = 0
    for end, record in enumerate(records, 1):
        chars += len(record.message)
        if end - start >= FAST_SLICE or chars >= FAST_SLICE_CHARS:
            yield start, end
            start, chars = end, 0
    if start < len(records):
        yield start, len(records)


class _Lookups:
    """Store lookups of the templates that start in one turn of the event loop, made in one
    round trip: a request's new templates start their tasks together."""

    def __init__(self, shared: SharedDecisions) -> None:
        self.shared = shared
        self._batch: dict[tuple[str, TemplateKey], asyncio.Future[SharedVerdict | None]] = {}

    def get(self, version: str, key: TemplateKey) -> asyncio.Future[SharedVerdict | None]:
        wanted = (version, key)
        future = self._batch.get(wanted)
        if future is None:
            loop = asyncio.get_running_loop()
            if not self._batch:
                loop.call_soon(lambda: loop.create_task(self._flush()))
            future = self._batch[wanted] = loop.create_future()
        return future

    async def _flush(self) -> None:
        batch, self._batch = self._batch, {}
        by_version: dict[str, list[tuple[TemplateKey, asyncio.Future[SharedVerdict | None]]]] = {}
        for (version, key), future in batch.items():
            by_version.setdefault(version, []).append((key, future))
        for version, wanted in by_version.items():
            try:
                found = await self.shared.lookup(version, [key for key, _ in wanted])
            except Exception as exc:  # the store never raises for a fault; a bug must not hang callers
                found = [None] * len(wanted)
                log.exception("store lookup failed: %s", exc)
            for (_, future), value in zip(wanted, found, strict=True):
                if not future.done():
                    future.set_result(value)


class UnknownLabelError(LogclassError):
    """A correction with a label the engine cannot give."""

    def __init__(self, label: str, known: list[str]) -> None:
        super().__init__(f"unknown label {label!r}: give one of {', '.join(known)}")
        self.label = label
        self.known = known


class TeachError(LogclassError):
    """A correction the engine cannot take (no learnt memory, or a record with no template)."""


@dataclass(frozen=True, slots=True)
class PositionedLane:
    """A model lane and its tier's position in ``router.tiers`` (for ``router.source_routes``)."""

    position: int
    lane: Lane


class Engine:
    def __init__(
        self,
        router: Router,
        lanes: Sequence[PositionedLane],
        tiers: Sequence[Tier],
        learnt: LearntStore | None = None,
        shared: SharedDecisions | None = None,
    ) -> None:
        """``shared``: decisions shared with the other nodes through the store (None: this
        process decides alone, and nothing here touches a store)."""
        self.router = router
        self.shared = shared
        self._lookups = _Lookups(shared) if shared is not None else None
        # Writes to the store in flight, kept from the garbage collector; templates whose
        # decision this node shared (and so released its claim with it).
        self._sharing: set[asyncio.Task[None]] = set()
        self._shared_keys: set[TemplateKey] = set()
        self.lanes = list(lanes)
        # Every tier, regex included, in order: lifecycle, labels and metrics go through the contract.
        self.tiers = list(tiers)
        self.learnt = learnt
        # A template's task gives its decision and whether it is final (cached) or deferred.
        self._inflight: dict[TemplateKey, asyncio.Task[tuple[Decision, bool]]] = {}
        # Calls inside ``classify``: a retired engine (hot reload) closes only once they are out,
        # since a call between two fast-lane slices has yet to hand its templates to the lanes.
        self._calls = 0
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        # Corrections so far, and the count at each template's latest one: a model answer asked
        # before a correction must not land in a cache after it.
        self._corrections = 0
        self._corrected: dict[str, int] = {}
        memory = self.memory
        if memory is not None:
            memory.accept_labels(self.labels())

    @property
    def stats(self) -> RouterStats:
        return self.router.stats

    @property
    def model_version(self) -> str:
        return self.router.model_version

    @property
    def fallback_label(self) -> str:
        return self.router.fallback_label

    @property
    def tiers_enabled(self) -> list[str]:
        return [tier.name for tier in self.tiers]

    @property
    def inflight(self) -> int:
        """Templates on their way through the model lanes."""
        return len(self._inflight)

    def tier(self, name: str) -> Tier | None:
        return next((tier for tier in self.tiers if tier.name == name), None)

    def lane(self, name: str) -> Lane | None:
        return next((p.lane for p in self.lanes if p.lane.name == name), None)

    @property
    def memory(self) -> MemoryTier | None:
        return next((tier for tier in self.tiers if isinstance(tier, MemoryTier)), None)

    def memory_templates(self) -> dict[str, int]:
        """Templates the memory answers: from the training data, and learnt (the store's size)."""
        memory = self.memory
        return {"trained": len(memory) if memory is not None else 0, "learnt": len(self.learnt or ())}

    def labels(self) -> list[str]:
        labels = {self.router.fallback_label}
        for tier in self.tiers:
            labels.update(tier.labels())
        return sorted(labels)

    def swap_fast_tier(self, tier: FastTier) -> bool:
        """A reloaded fast tier (the regex rules) in place of the running one, between requests'
        slices (see ``Router.swap_fast_tier``); False when the engine has no tier of that name."""
        old = self.router.swap_fast_tier(tier)
        if old is None:
            return False
        self.tiers = [tier if t is old else t for t in self.tiers]
        return True

    async def warm_up(self) -> None:
        for p in self.lanes:
            await p.lane.tier.warm_up()

    async def drain(self, timeout: float | None = None) -> None:
        """Waits until the templates in flight have landed in the cache (or ``timeout``)."""
        while self._inflight:
            _, waiting = await asyncio.wait(list(self._inflight.values()), timeout=timeout)
            if waiting:
                return

    async def close(self, timeout: float = 10.0) -> None:
        """Lets calls in progress finish and templates in flight land (LLM answers reach the
        teacher file), each for up to ``timeout`` s, then frees the tiers."""
        try:
            await asyncio.wait_for(self._no_calls.wait(), timeout)
        except TimeoutError:
            log.warning("closing the engine with %s calls still in progress", self._calls)
        await self.drain(timeout=timeout)
        for p in self.lanes:
            await p.lane.stop()
        for tier in self.tiers:
            await tier.close()

    def teach(self, record: LogRecord, label: str, *, this_source_only: bool = False) -> Decision:
        """A human correction: from now on ``label`` for ``record``'s template, from every source
        or ``this_source_only`` (stored, and persisted with the store). Returns the decision the
        engine now gives ``record``, which shows when a regex rule, asked before the memory, still
        wins."""
        known = self.labels()
        if label not in known:
            raise UnknownLabelError(label, known)
        memory = self.memory
        if self.learnt is None or memory is None or memory.learnt is not self.learnt:
            raise TeachError("corrections need the memory tier with a learnt memory: add memory to router.tiers")
        router = self.router
        template = router.template_of(record)
        if template is None:
            raise TeachError(
                "the record has an empty, invalid or too long message, or too long a source: nothing to learn from"
            )
        self.learnt.learn(template, record, Verdict(label, 1.0), ORIGIN_FEEDBACK, this_source_only=this_source_only)
        self.lesson_changed(template)
        decision = router.peek(record)
        assert decision is not None, "a correction in the memory answers its template"
        return decision

    def forget_lessons(self, keys: Sequence[Key]) -> list[Lesson]:
        """Drops learnt lessons ((scope, template) keys) and the cached decisions they made: the
        next record of each template is decided by the tiers again. The lessons it had."""
        if self.learnt is None:
            return []
        gone = self.learnt.forget(keys)
        for lesson in gone:
            self.lesson_changed(lesson.template)
        return gone

    def lesson_changed(self, template: str) -> None:
        """A lesson of ``template`` was taught or dropped (here, or on another node): its cached
        decisions go, and a model answer asked before now does not land in a cache."""
        if not self._calls and not self._inflight:
            # Nobody holds an older count to compare with: the map starts again (it stays
            # bounded however many lessons the cluster shares).
            self._corrected.clear()
        self._corrections += 1
        self._corrected[template] = self._corrections
        self.router.forget(template)

    def _stale(self, template: str, since: int) -> bool:
        """Whether ``template`` was corrected after the correction count was ``since``."""
        return self._corrected.get(template, 0) > since

    async def classify(
        self, records: Sequence[LogRecord], budget_s: float | None = None, owner: Hashable | None = None
    ) -> list[Decision]:
        """One decision per record, in order. ``budget_s``: how long to wait for model answers
        (None: for all of them). ``owner``: whose turn it is in the lanes' round-robin (a stream);
        by default each call is its own owner. Raises ``LaneFullError`` (nothing queued) when a
        lane cannot take this request's new templates."""
        self._calls += 1
        self._no_calls.clear()
        try:
            return await self._classify(records, budget_s, owner)
        finally:
            self._calls -= 1
            if not self._calls:
                self._no_calls.set()

    async def _classify(
        self, records: Sequence[LogRecord], budget_s: float | None, owner: Hashable | None
    ) -> list[Decision]:
        router = self.router
        out: list[Decision | None] = [None] * len(records)
        pending: dict[TemplateKey, PendingTemplate] = {}
        # The rule set this request began with: a reload between two slices does not split it.
        fast_tiers, generation = router.fast_tiers, router.generation
        for start, end in fast_slices(records):
            if start:
                await asyncio.sleep(0)
            router.fast(records[start:end], out, pending, start, fast_tiers, generation)
        if pending:
            await self._decide_pending(
                records, pending, out, budget_s, owner if owner is not None else object(), generation
            )
        result: list[Decision] = out  # type: ignore[assignment]  # every slot is filled by now
        router.count(result)
        return result

    async def _decide_pending(
        self,
        records: Sequence[LogRecord],
        pending: dict[TemplateKey, PendingTemplate],
        out: list[Decision | None],
        budget_s: float | None,
        owner: Hashable,
        generation: int | None = None,
    ) -> None:
        corrections = self._corrections
        new = [key for key in pending if key not in self._inflight]
        self._admit(pending, new, owner)
        for key in new:
            entry = pending[key]
            task = asyncio.get_running_loop().create_task(self._resolve(key, entry.record, entry.start, owner))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._landed, key))
        # No await since the check above: every template of the request is in flight (or just landed).
        tasks = {key: self._inflight[key] for key in pending}
        waiting = [t for t in tasks.values() if not t.done()]
        if waiting and (budget_s is None or budget_s > 0):
            # Shielded by construction: asyncio.wait never cancels them, so a caller that leaves
            # or runs out of budget does not stop the work that fills the cache.
            await asyncio.wait(waiting, timeout=budget_s)
        router = self.router
        for key, entry in pending.items():
            found = tasks[key]
            if not found.done() or found.cancelled():
                router.stats.pending += len(entry.indexes)
                decision = router.fallback(key[1], TIER_PENDING, "answer not back within the request's budget")
                final = False
            else:
                decision, final = found.result()
            final = final and not self._stale(key[1], corrections)
            for i in entry.indexes:
                out[i] = decision
                if final:
                    router.remember(records[i], decision, generation)

    def _landed(self, key: TemplateKey, task: asyncio.Task[tuple[Decision, bool]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    def _admit(self, pending: dict[TemplateKey, PendingTemplate], new: list[TemplateKey], owner: Hashable) -> None:
        """Every new template enters the lane of its first tier; all or nothing."""
        wanted: dict[int, int] = {}
        for key in new:
            first = self._first_lane(pending[key].start)
            if first is not None:
                wanted[first] = wanted.get(first, 0) + 1
        for index, n in wanted.items():
            self.lanes[index].lane.check(n, owner)
        for index, n in wanted.items():
            self.lanes[index].lane.admit(n, owner)

    def _first_lane(self, start: int) -> int | None:
        return next((i for i, p in enumerate(self.lanes) if p.position >= start), None)

    async def _resolve(self, key: TemplateKey, record: LogRecord, start: int, owner: Hashable) -> tuple[Decision, bool]:
        """The template's way through the model lanes; final decisions fill the template cache."""
        router = self.router
        corrections = self._corrections
        item = Item(record, key)
        if self._lookups is not None and self.shared is not None:
            found = await self._shared_answer(key, start, owner)
            if found is not None:
                decision = router.decision(found.verdict, found.tier, key[1])
                return self._final_decision(key, decision, corrections)
            try:
                return await self._decide(key, item, start, owner, corrections)
            finally:
                # Decided here but not shared (deferred, failed, not shareable): the claim goes,
                # so another node need not wait out the lease.
                if key not in self._shared_keys:
                    self._background(self.shared.release_claim(router.model_version, key[0], key[1]))
                self._shared_keys.discard(key)
        return await self._decide(key, item, start, owner, corrections)

    async def _decide(
        self, key: TemplateKey, item: Item, start: int, owner: Hashable, corrections: int
    ) -> tuple[Decision, bool]:
        router, record = self.router, item.record
        admitted = True  # the first lane's room was reserved by _admit
        for p in self.lanes:
            if p.position < start:
                continue
            lane = p.lane
            router.stats.tier_calls[lane.name] += 1
            try:
                future = lane.submit(owner, item, admitted)
                admitted = False
                outcome = await future
            except LaneFullError as exc:
                # Escalated into a full lane: like an LLM that is down, ask again next time.
                outcome = Deferred(f"{lane.name} lane full")
                log.debug("%s", exc)
            except Exception:  # the tier failed (logged by the lane): this record only
                return router.fallback(key[1], detail=f"{lane.name} tier failed", error=ERROR_INTERNAL), False
            if isinstance(outcome, Verdict):
                if not outcome.shareable:
                    return router.decision(outcome, lane.name, key[1]), False
                if lane.tier.teaches and self.learnt is not None and lane.tier.worth_learning(outcome):
                    self.learnt.learn(key[1], record, outcome, ORIGIN_LLM)
                self._share(key, SharedVerdict(lane.name, outcome))
                return self._final_decision(key, router.decision(outcome, lane.name, key[1]), corrections)
            if isinstance(outcome, Deferred):
                return router.fallback(key[1], detail=outcome.reason), False
        # No tier is sure, and none will be on another node (same bundle, same tiers): shared
        # too, or every node would run the same tiers on it in turn.
        fallback = router.fallback(key[1])
        self._share(key, SharedVerdict(TIER_NONE, Verdict(fallback.label, fallback.confidence, fallback.detail)))
        return self._final_decision(key, fallback, corrections)

    async def _shared_answer(self, key: TemplateKey, start: int, owner: Hashable) -> SharedVerdict | None:
        """The cluster's decision for ``key``: shared already, or being made by another node
        (waited for up to its lease, after which this node claims it). None: decide here. An
        answer from the store gives back the lane room ``_admit`` reserved."""
        assert self._lookups is not None and self.shared is not None
        version = self.router.model_version
        found = await self._lookups.get(version, key)
        if found is None:
            claim = await self.shared.claim(version, key[0], key[1])
            if claim is Claim.HELD:
                waited = await self.shared.wait_for(version, key[0], key[1], self.shared.lease_ms / 1000.0)
                found = waited if isinstance(waited, SharedVerdict) else None
                claim = waited if isinstance(waited, Claim) else Claim.HELD
            if claim is Claim.WON:
                # Another node may have shared it and let go of its claim between the lookup and
                # this claim: look once more before deciding it again.
                (found,) = await self.shared.lookup(version, [key])
                if found is not None:
                    self._background(self.shared.release_claim(version, key[0], key[1]))
        if found is not None:
            first = self._first_lane(start)
            if first is not None:
                self.lanes[first].lane.unadmit(owner)
        return found

    def _share(self, key: TemplateKey, decided: SharedVerdict) -> None:
        """Writes a final model decision to the store for the other nodes, in the background: the
        record's answer does not wait for the store."""
        if self.shared is None:
            return
        self._shared_keys.add(key)
        self._background(self.shared.share(self.router.model_version, key[0], key[1], decided))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._sharing.add(task)
        task.add_done_callback(self._sharing.discard)

    def _final_decision(self, key: TemplateKey, decision: Decision, corrections: int) -> tuple[Decision, bool]:
        if not self._stale(key[1], corrections):
            self.router.learn(key, decision)
        return decision, True
