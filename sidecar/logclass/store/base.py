"""The shared store's contract. Every call is best-effort: a store that is slow, down or refusing
answers as if it held nothing (``UNAVAILABLE`` for a claim), so the caller decides locally and no
record waits on the store. Implementations: ``local.LocalStore`` (in-process, bounded; for one
process and for tests) and ``redis.RedisStore`` (Valkey/Redis)."""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


class Claim(enum.Enum):
    """A node's attempt to become the one decider of a new template."""

    WON = "won"  # this node decides it and shares the answer
    HELD = "held"  # another node is deciding it: wait for its answer within the budget
    UNAVAILABLE = "unavailable"  # no store to ask: decide locally, as without one


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under a deployment's prefix. A template is attacker-controlled text of up to
    limits.max_message_bytes: keys hold its SHA-256, never the text, so their length is bounded."""

    prefix: str

    def decision(self, model_version: str, route: str, template: str) -> str:
        return f"{self.prefix}:decision:{_digest(model_version, route, template)}"

    def claim(self, model_version: str, route: str, template: str) -> str:
        return f"{self.prefix}:claim:{_digest(model_version, route, template)}"


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


@dataclass(slots=True)
class StoreStats:
    """What the store did for this process, for metrics."""

    calls: int = 0
    failures: int = 0  # timeouts, refused connections, errors
    skipped: int = 0  # calls not tried while the circuit was open
    hits: int = 0
    misses: int = 0
    claims_won: int = 0
    claims_held: int = 0


class SharedStore(ABC):
    """Decisions shared by key, and claims on keys. Implementations never raise for a store
    fault; they count it in ``stats``."""

    def __init__(self) -> None:
        self.stats = StoreStats()

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` in one round trip, None for each key unknown (or every key,
        when the store cannot answer)."""

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        """Stores ``value`` for ``ttl_s`` seconds (0: until evicted)."""

    @abstractmethod
    async def claim(self, key: str, owner: str, lease_ms: int) -> Claim:
        """Makes ``owner`` the holder of ``key`` for ``lease_ms`` unless someone holds it."""

    @abstractmethod
    async def release(self, key: str, owner: str) -> None:
        """Drops ``owner``'s claim on ``key``; a claim since taken by another is left alone."""

    @property
    def circuit_open(self) -> bool:
        """Whether store calls are being skipped now (a store found down)."""
        return False

    async def close(self) -> None:  # noqa: B027 (a hook: the local store holds nothing to free)
        """Frees connections."""
