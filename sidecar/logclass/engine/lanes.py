"""Model lanes: one per model tier, each with its own bounded queue, workers and batches.

A lane never shares a thread with another lane or with the fast lane: its tier awaits its own
thread (the encoder) or its own I/O (an LLM server), and the event loop only moves items.

- **Fairness.** Items queue per owner (a caller: the front ends pass the peer's address, so one
  client's many requests and streams are one owner) and batches take them round-robin, one per
  owner in turn, so one caller's 10,000 new templates cannot starve the others: a small
  request's templates ride in the next batch. While other owners have items in the lane, one
  owner holds at most ``caller_share`` of ``max_queue``; alone, it may use all of it.
- **Batches by compute budget** (batched tiers): a batch holds as many items as fit in
  ``max_batch_ms`` at the cost per unit the lane has measured so far (units are the tier's
  ``cost``, tokens for an encoder), never more than ``max_batch_items``. Once an item waits, the
  lane waits at most ``max_wait_ms`` for more before it runs a partial batch.
- **Backpressure.** At most ``max_queue`` items wait or run; past that ``LaneFullError`` names
  the lane, before anything of the request is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from logclass.core.decision import Deferred, Item, Outcome
from logclass.errors import LogclassError
from logclass.tiers.base import Tier

log = logging.getLogger("logclass.engine")
# The first batches run before any cost is measured: kept small so that one of them cannot take
# seconds on a slow machine.
_UNMEASURED_BATCH_ITEMS = 16
# Weight of the newest batch in the learnt cost per unit.
_COST_SMOOTHING = 0.3


def caller(front: str, peer: str) -> str:
    """The lanes' owner for a front end's peer (``ipv4:10.0.0.5:43210``, ``[::1]:8000``,
    ``10.0.0.5``): its host without the port, so one client's connections, requests and streams
    take one turn and hold one share. Not a header the caller chooses: a fresh value per request
    would get a fresh turn and share each time."""
    address = peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit():
        address = host
    return f"{front} {address.strip('[]') or 'unknown'}"


class LaneFullError(LogclassError):
    """A lane's queue is full; the request should be retried with backoff."""

    def __init__(self, lane: str, queued: int, limit: int, message: str | None = None) -> None:
        super().__init__(
            message
            or (
                f"the {lane} lane is full ({queued} templates waiting or running, limit {limit} "
                f"in server.lanes.{lane}.max_queue); retry with backoff"
            )
        )
        self.lane = lane


class CallerShareError(LaneFullError):
    """This caller holds its share of a lane that others are waiting on."""

    def __init__(self, lane: str, owner: Hashable, held: int, share: float, limit: int) -> None:
        super().__init__(
            lane,
            held,
            limit,
            f"caller {owner} holds {held} templates of the {lane} lane, its share while others wait "
            f"(server.lanes.{lane}.max_caller_share {share:g} of max_queue {limit}); retry with backoff",
        )


@dataclass(frozen=True, slots=True)
class LaneSettings:
    max_queue: int
    caller_share: float = 1.0  # of max_queue one owner may hold while others have items in the lane
    max_batch_items: int = 1
    max_batch_ms: float = 0.0  # 0: batches bounded by max_batch_items only
    max_wait_ms: float = 0.0


# Called after each tier call with (lane, items, seconds): the metrics hook.
BatchHook = Callable[[str, int, float], None]


class Lane:
    def __init__(self, tier: Tier, settings: LaneSettings, on_batch: BatchHook | None = None) -> None:
        self.tier = tier
        self.name = tier.name
        self.settings = settings
        scheduling = tier.scheduling()
        self.batched = scheduling.batched
        self.concurrency = max(1, scheduling.concurrency)
        self.on_batch = on_batch
        self._owners: OrderedDict[Hashable, deque[tuple[Item, asyncio.Future[Outcome]]]] = OrderedDict()
        # Items each owner has reserved, waiting or running; an owner with none is not a key.
        self._held: dict[Hashable, int] = {}
        self._waiting = 0
        self._running = 0
        # Admitted by a request but not queued yet: its templates' tasks have not started.
        self._reserved = 0
        self._seconds_per_unit: float | None = None
        self._wake: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []

    @property
    def waiting(self) -> int:
        """Items queued, not yet handed to the tier."""
        return self._waiting

    @property
    def load(self) -> int:
        return self._waiting + self._running + self._reserved

    def check(self, n: int, owner: Hashable | None = None) -> None:
        """Raises ``LaneFullError`` unless ``n`` more items fit, and ``CallerShareError`` when
        ``owner`` would hold past its share while others have items in the lane."""
        limit = self.settings.max_queue
        if n and self.load + n > limit:
            raise LaneFullError(self.name, self.load, limit)
        share = self.settings.caller_share
        if not n or owner is None or share >= 1:
            return
        held = self._held.get(owner, 0)
        others = len(self._held) - (1 if held else 0)
        if others and held + n > share * limit:
            raise CallerShareError(self.name, owner, held, share, limit)

    def admit(self, n: int, owner: Hashable | None = None) -> None:
        """Reserves room for ``n`` items of ``owner``, to be queued with ``submit(owner, ...,
        admitted=True)``; raises ``LaneFullError`` unless they fit."""
        self.check(n, owner)
        self._reserved += n
        self._hold(owner, n)

    def unadmit(self, owner: Hashable | None = None) -> None:
        """Gives back one item's room reserved by ``admit`` that will not be queued (its template
        was answered another way, from the shared store)."""
        self._reserved -= 1
        self._hold(owner, -1)

    def _hold(self, owner: Hashable | None, n: int) -> None:
        if owner is None:
            return
        held = self._held.get(owner, 0) + n
        if held > 0:
            self._held[owner] = held
        else:
            self._held.pop(owner, None)

    def submit(self, owner: Hashable, item: Item, admitted: bool = False) -> asyncio.Future[Outcome]:
        """Queues ``item`` for ``owner``; its future gets the tier's outcome. ``admitted``: room
        was reserved by ``admit``; otherwise (an escalation) it must fit now."""
        if admitted:
            self._reserved -= 1
        else:
            self.check(1, owner)
            self._hold(owner, 1)
        self._start()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        queue = self._owners.get(owner)
        if queue is None:
            queue = self._owners[owner] = deque()
        queue.append((item, future))
        future.add_done_callback(lambda _: self._hold(owner, -1))
        self._waiting += 1
        assert self._wake is not None
        self._wake.set()
        return future

    def _start(self) -> None:
        if self._workers:
            return
        self._wake = asyncio.Event()
        self._workers = [
            asyncio.get_running_loop().create_task(self._work(), name=f"lane-{self.name}-{n}")
            for n in range(self.concurrency)
        ]

    async def stop(self) -> None:
        """Stops the workers; what still waits is deferred (nothing is cached for it)."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        for queue in self._owners.values():
            for _, future in queue:
                if not future.done():
                    future.set_result(Deferred("server shutting down"))
        self._owners.clear()
        self._held.clear()
        self._waiting = 0

    def _budget_units(self) -> float:
        if not self.settings.max_batch_ms or self._seconds_per_unit is None:
            return float("inf")
        return self.settings.max_batch_ms / 1000.0 / self._seconds_per_unit

    def _batch_limit(self) -> int:
        if not self.batched:
            return 1
        if self.settings.max_batch_ms and self._seconds_per_unit is None:
            return min(self.settings.max_batch_items, _UNMEASURED_BATCH_ITEMS)
        return self.settings.max_batch_items

    def _take(self) -> tuple[list[tuple[Item, asyncio.Future[Outcome]]], float]:
        """Up to one batch, one item per owner in turn, and its cost in the tier's units."""
        limit, budget = self._batch_limit(), self._budget_units()
        batch: list[tuple[Item, asyncio.Future[Outcome]]] = []
        units = 0.0
        while self._owners and len(batch) < limit:
            owner, queue = next(iter(self._owners.items()))
            entry = queue.popleft()
            self._waiting -= 1
            if queue:
                self._owners.move_to_end(owner)
            else:
                del self._owners[owner]
            batch.append(entry)
            units += self.tier.cost(entry[0])
            if units >= budget:
                break
        return batch, units

    async def _work(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            while not self._waiting:
                wake.clear()
                await wake.wait()
            if self.batched and self.settings.max_wait_ms and self._waiting < self._batch_limit():
                # Bounded by time, as a dynamic batcher is: concurrent callers' items join.
                await asyncio.sleep(self.settings.max_wait_ms / 1000.0)
            batch, units = self._take()
            if batch:
                await self._run(batch, units)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Outcome]]], units: float) -> None:
        items = [item for item, _ in batch]
        self._running += len(batch)
        started = time.perf_counter()
        try:
            outcomes = await self.tier.decide(items)
            if len(outcomes) != len(items):
                raise RuntimeError(f"tier {self.name} returned {len(outcomes)} outcomes for {len(items)} items")
        except Exception as exc:  # every waiting record hears about it; the lane goes on
            log.exception("tier %s failed on %s items", self.name, len(items))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._running -= len(batch)
        seconds = time.perf_counter() - started
        self._learn(units, seconds)
        if self.on_batch is not None:
            self.on_batch(self.name, len(items), seconds)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    def _learn(self, units: float, seconds: float) -> None:
        if not self.settings.max_batch_ms or units <= 0:
            return
        observed = seconds / units
        previous = self._seconds_per_unit
        self._seconds_per_unit = observed if previous is None else previous + _COST_SMOOTHING * (observed - previous)
