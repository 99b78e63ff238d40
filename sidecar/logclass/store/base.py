"""The shared store's contract. Every call is best-effort: a store that is slow, down or refusing
answers as if it held nothing (``UNAVAILABLE`` for a claim, None for the lessons' calls), so the
caller decides locally and no record waits on the store. Implementations: ``local.LocalStore``
(in-process, bounded; for one process and for tests) and ``redis.RedisStore`` (Valkey/Redis).

Two kinds of state:
- decisions: a model tier's answer per (bundle version, route, template), with a claim per key
  so that one node decides a new template;
- lessons (the learnt memory's, LLM answers and human corrections): the current lesson per
  (scope, template) field, the fields dropped (with when, so a node that was away cannot bring
  one back), and a log of every change numbered 1, 2, 3... that nodes follow. A gap in the
  numbers (the log is bounded, or the store lost its data) sends a node back to the current
  lessons (``lesson_snapshot``).
"""

from __future__ import annotations

import bisect
import enum
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


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

    @property
    def lessons(self) -> str:
        """The hash: field -> the current lesson."""
        return f"{self.prefix}:lessons"

    @property
    def forgotten(self) -> str:
        """The sorted set: field -> when it was dropped."""
        return f"{self.prefix}:lessons:forgotten"

    @property
    def lesson_log(self) -> str:
        """The stream of changes, entry IDs ``<seq>-1``."""
        return f"{self.prefix}:lessons:log"

    @property
    def lesson_seq(self) -> str:
        """The last change's number."""
        return f"{self.prefix}:lessons:seq"

    @property
    def lesson_epoch(self) -> str:
        """A random name the first change gives the lesson set: a store that lost its data has
        another once written again, even where its log's number came back to the same."""
        return f"{self.prefix}:lessons:epoch"


def lesson_field(scope: str, template: str) -> str:
    """A lesson's field: bounded like the keys, whatever the template's length."""
    return _digest(scope, template)


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


class LessonPut(enum.Enum):
    STORED = "stored"
    COVERED = "covered"  # an LLM lesson where the store holds a correction for its field
    FULL = "full"  # a new field past the bound: the lesson stays with the nodes that have it
    UNAVAILABLE = "unavailable"


# A lesson's value in the store: one of these, then its JSONL line. The store itself refuses an
# LLM lesson over a correction, so two nodes racing cannot undo an operator's correction.
CORRECTION_TAG, LLM_TAG = b"C", b"L"


@dataclass(frozen=True, slots=True)
class LessonChange:
    """One entry of the lesson log: ``value`` set for ``field``, or (value None) the field
    dropped at ``when`` (epoch seconds)."""

    seq: int
    field: str
    value: bytes | None
    when: float = 0.0


@dataclass(frozen=True, slots=True)
class LessonChanges:
    """The log's number and the set's epoch when asked, and the changes after the caller's number."""

    head: int
    epoch: str | None
    changes: list[LessonChange]

    def lost(self, after: int, epoch: str | None) -> bool:
        """Whether changes after ``after`` (of the set named ``epoch``) are missing: the log was
        trimmed past them, or the store lost its data. The caller then reads a snapshot."""
        if self.head < after or self.epoch != epoch:
            return True
        if self.head > after and not self.changes:
            return True
        return bool(self.changes) and self.changes[0].seq != after + 1


@dataclass(frozen=True, slots=True)
class LessonSnapshot:
    """The lessons as they are: the log's number when read, each field's value, and the fields
    dropped with when. ``complete`` False: there were more than the caller's limit."""

    seq: int
    epoch: str | None
    lessons: dict[str, bytes]
    forgotten: dict[str, float]
    complete: bool = True


# Latency buckets of store calls (seconds): a store answers in well under a millisecond on a
# LAN; past store.timeout_ms (50 ms by default) a call has failed.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


@dataclass(slots=True)
class Latency:
    """A histogram of one operation's call times: counts per bucket (the last: above them all)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total_s += seconds


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
    latency: dict[str, Latency] = field(default_factory=dict)  # by operation
    lessons_published: int = 0
    lessons_received: int = 0
    lessons_refused: int = 0  # from the store, not a lesson this node can take (bad, unknown label)
    resyncs: int = 0  # times the node read the whole lesson set again (start, a gap, the store back)

    def observe(self, operation: str, seconds: float) -> None:
        latency = self.latency.get(operation)
        if latency is None:
            latency = self.latency[operation] = Latency()
        latency.observe(seconds)


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

    @abstractmethod
    async def put_lesson(self, field: str, value: bytes, max_lessons: int) -> LessonPut:
        """Sets the lesson of ``field`` (``value`` starts with its tag) and logs the change;
        refused over a correction (an LLM lesson) or for a new field past ``max_lessons``."""

    @abstractmethod
    async def forget_lesson(self, field: str, when: float, max_forgotten: int) -> bool:
        """Drops ``field``'s lesson, remembers when (the ``max_forgotten`` latest drops are
        kept) and logs the change; False when the store cannot answer."""

    @abstractmethod
    async def lesson_snapshot(self, limit: int) -> LessonSnapshot | None:
        """Every lesson (at most ``limit``) and drop, with the log's number first read, so the
        changes after it bring the snapshot up to date; None when the store cannot answer."""

    @abstractmethod
    async def lesson_changes(self, after: int, block_ms: int, count: int) -> LessonChanges | None:
        """The log's changes numbered after ``after`` (at most ``count``), waiting up to
        ``block_ms`` for one when there is none; None when the store cannot answer."""

    @property
    def circuit_open(self) -> bool:
        """Whether store calls are being skipped now (a store found down)."""
        return False

    async def close(self) -> None:  # noqa: B027 (a hook: the local store holds nothing to free)
        """Frees connections."""
