"""Swapping the regex rules under requests in flight (issue 19, part 1; see docs/design-reload.md)."""

from __future__ import annotations

import asyncio

from logclass.engine.engine import FAST_SLICE
from logclass.tiers.regex import RegexTier, parse_rules
from tests.engine.test_engine_lanes import GatedTier, _engine, _rec, _run

OOM = {"rules": [{"name": "oom-kill", "pattern": "out of memory: killed process", "label": "oom"}]}


def test_a_request_in_flight_finishes_on_its_rules_and_caches_nothing_stale() -> None:
    async def scenario() -> None:
        tier = GatedTier()
        engine = _engine(tier)
        message = "Out of memory: Killed process 7 (java)"
        call = asyncio.ensure_future(engine.classify([_rec(message)], None))
        await tier.entered.get()  # its template is in the model lane, on the old rules
        assert engine.swap_fast_tier(RegexTier(parse_rules(OOM)))
        tier.open()
        (before,) = await call
        assert before.tier == "embedding"  # begun before the swap: the answer it began for
        # Its answer is not cached in front of the new rule: the same message is the rule's now.
        (after,) = await engine.classify([_rec(message)], None)
        assert (after.label, after.tier) == ("oom", "regex")
        assert "oom" in engine.labels()
        await engine.close()

    _run(scenario)


def test_a_swap_empties_the_exact_cache_and_keeps_model_decisions_of_templates() -> None:
    async def scenario() -> None:
        tier = GatedTier()
        tier.open()
        engine = _engine(tier)
        await engine.classify([_rec("disk quota warning on volume alpha")], None)
        assert len(engine.router.exact_cache) == 1 and len(engine.router.template_cache) == 1
        engine.swap_fast_tier(RegexTier(parse_rules(OOM)))
        assert len(engine.router.exact_cache) == 0 and len(engine.router.template_cache) == 1
        (again,) = await engine.classify([_rec("disk quota warning on volume alpha")], None)
        assert again.tier == "embedding" and len(tier.calls) == 1  # the template cache answered
        await engine.close()

    _run(scenario)


def test_a_retired_engine_closes_only_after_a_call_between_two_fast_slices() -> None:
    """A hot reload closes the old engine right after the swap; a call that began on it and is
    still in its fast lane (between two slices) has yet to hand its templates to the lanes."""

    class ClosingTier(GatedTier):
        closed = False

        async def close(self) -> None:
            self.closed = True

    async def scenario() -> None:
        tier = ClosingTier()
        engine = _engine(tier)
        # Three slices: the close (without waiting for calls) would run whole between two of them.
        records = [_rec(f"job {i} wrote {'x' * (i % 7)} to queue q{i}") for i in range(2 * FAST_SLICE + 1)]
        call = asyncio.ensure_future(engine.classify(records, None))
        await asyncio.sleep(0)  # one loop step: the call is at the yield after its first slice
        assert not call.done() and not tier.calls
        closing = asyncio.ensure_future(engine.close())
        await tier.entered.get()  # the call reached the model lane, whose tier is still open
        assert not tier.closed and not closing.done()
        tier.open()
        decisions = await call
        assert {d.tier for d in decisions} == {"embedding"}
        await closing
        assert tier.closed

    _run(scenario)
