"""Decisions shared through the store: the codec (what comes back from the store is hostile
input), one round trip per batch, one decider per template, and taking a claim over when its
node's lease runs out. On the in-process store and a clock the test sets: nothing sleeps."""

from __future__ import annotations

import asyncio
import json

import pytest

from logclass.core.decision import Verdict
from logclass.engine.shared import MAX_VALUE_BYTES, SharedDecisions, SharedVerdict, decode
from logclass.store.base import Claim, Keys
from logclass.store.local import LocalStore

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
