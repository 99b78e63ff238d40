"""Decisions shared through the store: the codec (what comes back from the store is hostile
input), one round trip per batch, one decider per template, and taking a claim over when its
node's lease runs out. On the in-process store and a clock the test sets: nothing sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence

import pytest

from logclass import config
from logclass.core.decision import Item, LogRecord, Outcome, Verdict
from logclass.engine.engine import Engine
from logclass.engine.pipeline import build_engine
from logclass.engine.shared import MAX_VALUE_BYTES, SharedDecisions, SharedVerdict, decode
from logclass.store.base import Claim, Keys, SharedStore
from logclass.store.local import LocalStore
from logclass.store.redis import RedisStore
from logclass.tiers.base import Tier
from tests.conftest import free_port

LABELS = frozenset({"User Action", "Security Alert", "Unclassified"})
TIERS = frozenset({"embedding", "llm"})
TEMPLATE = "User <*> logged in."


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _node(store: LocalStore, owner: str) -> SharedDecisions:
    return SharedDecisions(store, Keys("t"), LABELS, TIERS, lease_ms=1000, ttl_s=0, owner=owner)


def test_a_decision_round_trips() -> None:
    shared = SharedVerdict("llm", Verdict("Security Alert", 0.87, "qwen"))
    assert decode(shared.encode(), LABELS, TIERS) == shared


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"label": "Made Up", "confidence": 0.9, "tier": "llm"}).encode(),
        json.dumps({"label": "User Action", "confidence": 0.9, "tier": "regex"}).encode(),
        json.dumps({"label": "User Action", "confidence": 1.5, "tier": "llm"}).encode(),
        json.dumps({"label": "User Action", "confidence": True, "tier": "llm"}).encode(),
        b'{"label": "User Action", "confidence": NaN, "tier": "llm"}',
        b"[" * 2000 + b"]" * 2000,
        json.dumps({"label": "User Action", "confidence": 0.9, "tier": "llm", "x": "y" * MAX_VALUE_BYTES}).encode(),
    ],
    ids=["text", "bytes", "list", "label", "tier", "range", "bool", "nan", "deep", "large"],
)
def test_what_the_store_returns_is_checked_like_any_input(value: bytes) -> None:
    assert decode(value, LABELS, TIERS) is None


def test_a_batch_is_looked_up_in_one_round_trip_and_bad_values_are_refused() -> None:
    store = LocalStore()
    node = _node(store, "a")

    async def scenario() -> None:
        await node.share("v1", "", TEMPLATE, SharedVerdict("embedding", Verdict("User Action", 0.9)))
        await store.put(Keys("t").decision("v1", "", "tampered"), b'{"label": "rm -rf", "tier": "llm"}', 0)
        calls = store.stats.calls
        found = await node.lookup("v1", [("", TEMPLATE), ("", "unknown"), ("", "tampered")])
        assert store.stats.calls == calls + 1
        assert found[0] is not None and found[0].verdict.label == "User Action"
        assert found[1] is None and found[2] is None and node.refused == 1
        # Another bundle version, or another route, does not reuse the decision.
        assert await node.lookup("v2", [("", TEMPLATE)]) == [None]
        assert await node.lookup("v1", [("LegacyCRM", TEMPLATE)]) == [None]

    asyncio.run(scenario())


def test_one_node_decides_and_the_other_takes_its_answer() -> None:
    store = LocalStore()
    a, b = _node(store, "a"), _node(store, "b")

    async def scenario() -> None:
        assert await a.claim("v1", "", TEMPLATE) is Claim.WON
        assert await b.claim("v1", "", TEMPLATE) is Claim.HELD
        assert await b.wait_for("v1", "", TEMPLATE, 0.0) is Claim.HELD  # no budget: pending, as today
        decided = SharedVerdict("llm", Verdict("Security Alert", 0.8))
        await a.share("v1", "", TEMPLATE, decided)
        assert await b.wait_for("v1", "", TEMPLATE, 0.0) == decided

    asyncio.run(scenario())


def test_a_claim_whose_node_died_is_taken_over_after_its_lease() -> None:
    clock = Clock()
    store = LocalStore(clock=clock)
    a, b = _node(store, "a"), _node(store, "b")

    async def scenario() -> None:
        assert await a.claim("v1", "", TEMPLATE) is Claim.WON
        clock.now += 0.999
        assert await b.wait_for("v1", "", TEMPLATE, 0.0) is Claim.HELD
        clock.now += 0.002  # a never shared nor renewed: its lease is over
        assert await b.wait_for("v1", "", TEMPLATE, 0.0) is Claim.WON
        assert await a.claim("v1", "", TEMPLATE) is Claim.HELD  # b decides it now

    asyncio.run(scenario())


# -- the engine on a shared store ---------------------------------------------------------------


class CountingTier(Tier):
    """Answers "User Action" once the test opens its gate; counts the templates it was asked."""

    name = "embedding"

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    def labels(self) -> list[str]:
        return ["User Action"]

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        self.asked += [item.template for item in items]
        self.entered.set()
        await self.gate.wait()
        return [Verdict("User Action", 0.9) for _ in items]


def _engine_on(store: SharedStore, tier: CountingTier) -> Engine:
    env = {
        "LOGCLASS_LLM__BACKEND": "none",
        "LOGCLASS_ROUTER__TIERS": "[regex, embedding]",
        "LOGCLASS_ROUTER__SOURCE_ROUTES": "{}",
        "LOGCLASS_SERVER__BATCH__MAX_WAIT_MS": "0",
        "LOGCLASS_SERVER__BATCH__MAX_BATCH_MS": "0",
    }
    return build_engine(config.load(environ=env), tiers={"embedding": tier}, store=store)


NEW = [LogRecord("app", "novel thing 1 happened in zone alpha"), LogRecord("app", "another novel thing in beta")]


def test_a_template_decided_on_one_node_is_answered_from_the_store_on_another() -> None:
    async def scenario() -> None:
        store = LocalStore()
        tier_a, tier_b = CountingTier(), CountingTier()
        a, b = _engine_on(store, tier_a), _engine_on(store, tier_b)
        tier_a.gate.set()
        decided = await a.classify(NEW, None)
        await asyncio.gather(*a._sharing)  # the writes to the store, in the background
        calls = store.stats.calls
        answered = await b.classify(NEW, None)
        assert tier_b.asked == [] and len(tier_a.asked) == 2
        assert [d.label for d in answered] == [d.label for d in decided] == ["User Action"] * 2
        assert [d.tier for d in answered] == ["embedding"] * 2
        # Both templates in one round trip, and the lane room they reserved given back.
        assert store.stats.calls == calls + 1
        assert all(p.lane.load == 0 for p in b.lanes)
        for engine in (a, b):
            await engine.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_new_template_is_decided_by_one_node_while_another_waits_for_it() -> None:
    async def scenario() -> None:
        store = LocalStore()
        tier_a, tier_b = CountingTier(), CountingTier()
        a, b = _engine_on(store, tier_a), _engine_on(store, tier_b)
        first = asyncio.ensure_future(a.classify(NEW[:1], None))
        await tier_a.entered.wait()  # a claimed the template and asks its model
        second = asyncio.ensure_future(b.classify(NEW[:1], None))
        (pending,) = await b.classify(NEW[:1], 0.0)  # no budget: pending, as without a store
        assert pending.tier == "pending"
        tier_a.gate.set()
        (mine,), (theirs,) = await first, await second
        assert theirs.label == mine.label == "User Action" and tier_b.asked == []
        for engine in (a, b):
            await engine.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_another_bundle_version_decides_again() -> None:
    async def scenario() -> None:
        store = LocalStore()
        tier_a, tier_b = CountingTier(), CountingTier()
        a, b = _engine_on(store, tier_a), _engine_on(store, tier_b)
        b.router.model_version = "next-bundle"
        tier_a.gate.set()
        tier_b.gate.set()
        await a.classify(NEW, None)
        await asyncio.gather(*a._sharing)
        await b.classify(NEW, None)
        assert len(tier_b.asked) == 2
        for engine in (a, b):
            await engine.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_with_the_store_down_each_node_decides_alone_without_errors() -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(config.load(environ={}).store, url=f"redis://127.0.0.1:{free_port()}/0")
        store = RedisStore(settings)
        tier = CountingTier()
        tier.gate.set()
        engine = _engine_on(store, tier)
        decided = await engine.classify(NEW, None)
        assert [d.label for d in decided] == ["User Action"] * 2 and not any(d.error for d in decided)
        assert store.stats.failures >= 1
        await engine.close()
        await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


class UnsureTier(CountingTier):
    """Never sure: every template ends at the fallback label."""

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        self.asked += [item.template for item in items]
        return [None for _ in items]


def test_a_template_no_tier_decides_is_shared_as_the_fallback() -> None:
    """Without an LLM, a template the head is unsure of ends at the fallback label on every node
    alike: shared, or each node would ask its own model in turn."""

    async def scenario() -> None:
        store = LocalStore()
        tier_a, tier_b = UnsureTier(), UnsureTier()
        a, b = _engine_on(store, tier_a), _engine_on(store, tier_b)
        decided = await a.classify(NEW, None)
        await asyncio.gather(*a._sharing)
        answered = await b.classify(NEW, None)
        assert tier_b.asked == [] and len(tier_a.asked) == 2
        assert [(d.label, d.tier, d.confidence) for d in answered] == [(d.label, d.tier, d.confidence) for d in decided]
        assert [d.tier for d in answered] == ["none"] * 2
        for engine in (a, b):
            await engine.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
