"""The one contract every tier implements, and how the engine schedules it.

A tier decides items (a representative record and its template key) and returns one outcome per
item, in order: a ``Verdict`` when it is confident, ``None`` to escalate to the next tier, or a
``Deferred`` when it cannot answer now. Lifecycle (``warm_up``, ``close``) and metrics
(``register_metrics``) are part of the contract, so the engine never probes for them.

Model tiers are awaited from the engine's event loop and must never block it: CPU-bound work
runs on the tier's own thread. ``FastTier`` is for the few tiers cheap enough to run on the
request path itself (the regex rules, the template memory).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from prometheus_client import CollectorRegistry

from logclass.core.decision import Item, LogRecord, Outcome, Verdict

WARM_UP_ITEM = Item(LogRecord("logclass-warmup", "logclass warm-up message 1"), ("logclass-warmup", "warm-up"))


@dataclass(frozen=True, slots=True)
class Scheduling:
    """How the engine feeds a model tier: ``batched`` tiers get micro-batches built across
    requests (one at a time per worker), the others one item per call; ``concurrency`` calls run
    at once."""

    batched: bool
    concurrency: int = 1


class Tier(ABC):
    name: ClassVar[str]
    # A teacher's verdicts are lessons: the engine puts them in the learnt memory at once (the LLM).
    teaches: ClassVar[bool] = False

    def worth_learning(self, verdict: Verdict) -> bool:
        """Whether a teacher's verdict becomes a lesson (kept, shared) or answers its template
        in this process's caches only."""
        return True

    @abstractmethod
    def labels(self) -> list[str]:
        """Labels this tier can produce (model info, evaluation, the LLM's answer set)."""

    @abstractmethod
    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        """One outcome per item, in order. Items are distinct templates."""

    def scheduling(self) -> Scheduling:
        return Scheduling(batched=True)

    def cost(self, item: Item) -> float:
        """Relative compute cost of one item, for batches sized by a time budget (tokens for an
        encoder). The engine learns seconds per unit from the batches it runs."""
        return 1.0

    async def warm_up(self) -> None:
        """Pays one-off costs (first forward pass, an LLM's prompt prefix) before traffic does,
        without touching caches or statistics."""
        await self.decide([WARM_UP_ITEM])

    async def close(self) -> None:  # noqa: B027 (a hook: most tiers hold nothing to free)
        """Frees threads and connections; questions in flight may finish first."""

    def register_metrics(self, registry: CollectorRegistry) -> None:  # noqa: B027 (a hook, like close)
        """Adds the tier's own metrics (beyond the lanes' per-tier ones) to ``registry``."""


class FastTier(Tier):
    """A tier that decides on the request path in microseconds: no lane, no queue."""

    @abstractmethod
    def decide_now(self, record: LogRecord, template: str) -> Outcome:
        """The outcome for one record (``template``: its masked form), computed at once."""

    def decide_routed(self, record: LogRecord, template: str) -> Outcome:
        """The outcome for a record of a source that ``router.source_routes`` sends past this
        tier: none, unless the tier knows an answer meant for that source too."""
        return None

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        return [self.decide_now(item.record, item.template) for item in items]

    async def warm_up(self) -> None:
        return None
