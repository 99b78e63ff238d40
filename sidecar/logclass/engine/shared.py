"""Decisions shared through the store (issue 30): what a model tier decided for a template, under
the bundle version and route it was decided with, written once and read by every node.

What comes back from the store is input like any other: a value that does not decode, is too
large, or names a label or tier this engine cannot give is refused (counted in ``refused``) and
treated as unknown. Nothing here raises for a store fault: the store answers as if empty.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from logclass.core.decision import Verdict
from logclass.store.base import Claim, Keys, SharedStore

# A shared decision is a label, a confidence, a tier and a short detail: far under this.
MAX_VALUE_BYTES = 4096
MAX_DETAIL_CHARS = 256
# While another node decides a template, its answer is looked for this often.
POLL_S = 0.02


def node_id() -> str:
    """This process among the cluster's: host, pid and a random part (a restarted pod reusing a
    pid is another node, whose predecessor's claims must not count as its own)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class SharedVerdict:
    """A decision as the store holds it: the tier that decided it and its verdict."""

    tier: str
    verdict: Verdict

    def encode(self) -> bytes:
        v = self.verdict
        body = {"label": v.label, "confidence": v.confidence, "tier": self.tier, "detail": v.detail[:MAX_DETAIL_CHARS]}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(value: bytes, labels: Collection[str], tiers: Collection[str]) -> SharedVerdict | None:
    """``value`` as a shared decision, or None when it is not one this engine could have given."""
    if len(value) > MAX_VALUE_BYTES:
        return None
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    label, confidence, tier, detail = (body.get(k) for k in ("label", "confidence", "tier", "detail"))
    if not isinstance(label, str) or label not in labels or not isinstance(tier, str) or tier not in tiers:
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        return None
    if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
        return None
    detail = detail[:MAX_DETAIL_CHARS] if isinstance(detail, str) else ""
    return SharedVerdict(tier, Verdict(label, float(confidence), detail))


@dataclass(slots=True)
class SharedDecisions:
    """The engine's side of the store: look up a batch of templates in one round trip, share a
    decision, and make one node the decider of a new template (the others wait for its answer)."""

    store: SharedStore
    keys: Keys
    labels: frozenset[str]
    tiers: frozenset[str]
    lease_ms: int
    ttl_s: int
    owner: str = field(default_factory=node_id)
    refused: int = 0

    async def lookup(self, model_version: str, wanted: Sequence[tuple[str, str]]) -> list[SharedVerdict | None]:
        """The shared decision of each (route, template), in one round trip."""
        keys = [self.keys.decision(model_version, route, template) for route, template in wanted]
        return [self._decoded(value) for value in await self.store.get_many(keys)]

    def _decoded(self, value: bytes | None) -> SharedVerdict | None:
        if value is None:
            return None
        found = decode(value, self.labels, self.tiers)
        if found is None:
            self.refused += 1
        return found

    async def share(self, model_version: str, route: str, template: str, decided: SharedVerdict) -> None:
        """Writes the decision for every node, then gives up this node's claim on the template."""
        await self.store.put(self.keys.decision(model_version, route, template), decided.encode(), self.ttl_s)
        await self.store.release(self.keys.claim(model_version, route, template), self.owner)

    async def release_claim(self, model_version: str, route: str, template: str) -> None:
        await self.store.release(self.keys.claim(model_version, route, template), self.owner)

    async def claim(self, model_version: str, route: str, template: str) -> Claim:
        return await self.store.claim(self.keys.claim(model_version, route, template), self.owner, self.lease_ms)

    async def wait_for(self, model_version: str, route: str, template: str, timeout_s: float) -> SharedVerdict | Claim:
        """Another node is deciding ``template``: its answer once shared; or, when its lease
        runs out first (its node died), this node's claim (WON: decide it now); or HELD /
        UNAVAILABLE when ``timeout_s`` passes or the store cannot answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            (found,) = await self.lookup(model_version, [(route, template)])
            if found is not None:
                return found
            claim = await self.claim(model_version, route, template)
            if claim is not Claim.HELD or loop.time() >= deadline:
                return claim
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - loop.time())))
