"""The staged core with controllable fake tiers: every step is gated by events, never by time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from logclass import config
from logclass.core.decision import TIER_PENDING, Deferred, Item, LogRecord, Outcome, Verdict
from logclass.engine.engine import Engine, fast_slices
from logclass.engine.lanes import CallerShareError, LaneFullError, caller
from logclass.engine.pipeline import build_engine
from logclass.tiers.base import Tier
from tests.conftest import NO_LLM


class GatedTier(Tier):
    """Answers ``label`` for every item, one call at a time when the test lets it: each call is
    announced on ``entered`` and waits for one ``release``."""

    def __init__(self, name: str = "embedding", label: str = "Gated", outcome: Outcome | None = None) -> None:
        self.name = name  # type: ignore[misc]  # an instance name: the fake plays either model tier
        self.label = label
        self.outcome = outcome
        self.calls: list[list[str]] = []
        self.entered: asyncio.Queue[list[str]] = asyncio.Queue()
        self.gate = asyncio.Semaphore(0)
        self.fail = False

    def labels(self) -> list[str]:
        return [self.label]

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        messages = [item.record.message for item in items]
        self.calls.append(messages)
        self.entered.put_nowait(messages)
        await self.gate.acquire()
        if self.fail:
            raise RuntimeError("the model broke")
        return [self.outcome or Verdict(self.label, 0.9) for _ in items]

    def open(self, calls: int = 1000) -> None:
        for _ in range(calls):
            self.gate.release()


def _engine(tier: GatedTier, **settings: str) -> Engine:
    env = {
        **NO_LLM,
        "LOGCLASS_ROUTER__TIERS": "[regex, embedding]",
        "LOGCLASS_ROUTER__SOURCE_ROUTES": "{}",
        "LOGCLASS_SERVER__BATCH__MAX_WAIT_MS": "0",
        "LOGCLASS_SERVER__BATCH__MAX_BATCH_MS": "0",
        **settings,
    }
    return build_engine(config.load(environ=env), tiers={"embedding": tier})


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


def _rec(message: str, source: str = "app") -> LogRecord:
    return LogRecord(source, message)


def test_a_cache_hit_returns_while_a_model_call_is_blocked() -> None:
    async def scenario() -> None:
        tier = GatedTier()
        engine = _engine(tier)
        tier.open(1)
        (known,) = await engine.classify([_rec("disk quota warning on volume alpha")])
        assert known.tier == "embedding"
        cold = asyncio.create_task(engine.classify([_rec("kernel panic in scheduler beta")]))
        await tier.entered.get()  # the second model call has started and is held
        await tier.entered.get()
        again = await engine.classify([_rec("disk quota warning on volume alpha"), _rec("User 7 logged in.")])
        assert [d.tier for d in again] == ["embedding", "regex"]
        assert again[0] is known and not cold.done()
        tier.open()
        (answer,) = await cold
        assert answer.label == "Gated"
        await engine.close()

    _run(scenario)


def test_budget_end_gives_pending_then_the_answer_fills_the_cache() -> None:
    async def scenario() -> None:
        tier = GatedTier()
        engine = _engine(tier)
        line = "replication lag rising on shard gamma"
        for budget in (0.0, 0.01):  # no wait at all, and a wait the gate outlasts
            (first,) = await engine.classify([_rec(line)], budget_s=budget)
            assert (first.label, first.tier, first.confidence) == ("Unclassified", TIER_PENDING, 0.0)
        assert len(tier.calls) == 1  # the second request joined the question in flight
        assert engine.stats.pending == 2
        tier.open()
        await engine.drain()
        (second,) = await engine.classify([_rec(line)], budget_s=0.0)
        assert (second.label, second.tier) == ("Gated", "embedding")
        assert len(tier.calls) == 1 and engine.inflight == 0
        await engine.close()

    _run(scenario)


def test_concurrent_requests_for_one_template_are_coalesced() -> None:
    async def scenario() -> None:
        tier = GatedTier()
        engine = _engine(tier)
        lines = [f"worker {n} restarted by supervisor delta" for n in range(5)]  # one template
        first = asyncio.create_task(engine.classify([_rec(lines[0]), _rec(lines[1])]))
        await tier.entered.get()
        others = [asyncio.create_task(engine.classify([_rec(line)])) for line in lines[2:]]
        await asyncio.sleep(0)
        tier.open()
        results = [await first, *[await task for task in others]]
        assert tier.calls == [[lines[0]]]
        assert {d.label for r in results for d in r} == {"Gated"}
        await engine.close()

    _run(scenario)


def test_lanes_take_turns_between_callers() -> None:
    async def scenario() -> None:
        tier = GatedTier()
        engine = _engine(tier, LOGCLASS_SERVER__BATCH__MAX_RECORDS="2")
        big = [_rec(f"bulk import step {word} finished") for word in "abcdefghij"]
        flood = asyncio.create_task(engine.classify(big))
        assert await tier.entered.get() == [big[0].message, big[1].message]
        small = asyncio.create_task(engine.classify([_rec("certificate for host omega expires soon")]))
        await asyncio.sleep(0)  # let the small request reach the lane
        tier.open(1)
        second = await tier.entered.get()
        # Round-robin: the small caller's template rides in the very next batch, not after 4 more.
        assert second == [big[2].message, "certificate for host omega expires soon"]
        tier.open()
        await small
        await flood
        await engine.close()

    _run(scenario)


def test_a_full_lane_refuses_the_request_and_queues_nothing() -> None:
    async def scenario() -> None:
        tier = GatedTier()
        engine = _engine(tier, LOGCLASS_SERVER__LANES__EMBEDDING__MAX_QUEUE="3")
        tier.open(1)
        await engine.classify([_rec("cache warmed for tenant sigma")])
        held = asyncio.create_task(engine.classify([_rec(f"job {w} queued") for w in ("red", "green")]))
        await tier.entered.get()
        await tier.entered.get()
        lane = engine.lane("embedding")
        assert lane is not None and lane.load == 2
        with pytest.raises(LaneFullError, match=r"the embedding lane is full .*server\.lanes\.embedding\.max_queue"):
            await engine.classify([_rec(f"batch {w} started") for w in ("one", "two")])
        assert lane.load == 2 and engine.inflight == 2  # nothing of the refused request was queued
        # Known records still get through while the lane is full.
        (known,) = await engine.classify([_rec("cache warmed for tenant sigma")])
        assert known.tier == "embedding"
        tier.open()
        await held
        await engine.close()

    _run(scenario)


def test_deferred_answers_are_not_cached_and_failures_stay_per_record() -> None:
    async def scenario() -> None:
        tier = GatedTier(outcome=Deferred("LLM unavailable"))
        engine = _engine(tier)
        tier.open()
        line = "payment gateway unreachable from zone kappa"
        for _ in range(2):
            (decision,) = await engine.classify([_rec(line)])
            assert (decision.label, decision.tier, decision.detail) == ("Unclassified", "none", "LLM unavailable")
        assert len(tier.calls) == 2  # asked again: a deferred answer is not cached
        tier.fail = True
        out = await engine.classify([_rec("totally new failure in lambda"), _rec("User 9 logged out.")])
        assert (out[0].error, out[0].label) == ("internal", "Unclassified")
        assert out[1].tier == "regex"
        await engine.close()

    _run(scenario)


def test_a_caller_alone_may_fill_the_lane_but_holds_its_share_while_others_wait() -> None:
    """One client opening many requests must not shut everyone else out of a model lane."""

    async def scenario() -> None:
        tier = GatedTier()
        engine = _engine(
            tier,
            LOGCLASS_SERVER__LANES__EMBEDDING__MAX_QUEUE="8",
            LOGCLASS_SERVER__LANES__EMBEDDING__MAX_CALLER_SHARE="0.5",
            LOGCLASS_SERVER__BATCH__MAX_RECORDS="1",
        )
        lane = engine.lane("embedding")
        assert lane is not None
        flood = [
            asyncio.create_task(engine.classify([_rec(f"bulk job {w} {i} done")], owner="grpc 10.0.0.9"))
            for i, w in enumerate("abcdef")
        ]
        await tier.entered.get()
        assert lane.load == 6, "alone, a caller may hold more than its share"
        small = asyncio.create_task(
            engine.classify([_rec("certificate for host omega expires")], owner="http 10.0.0.7")
        )
        await asyncio.sleep(0)
        assert lane.load == 7
        # Now others wait: the flooding caller holds 6 of 8, past its share of 4.
        with pytest.raises(CallerShareError, match=r"caller grpc 10\.0\.0\.9 holds 6 .*max_caller_share 0\.5"):
            await engine.classify([_rec("bulk job z done")], owner="grpc 10.0.0.9")
        assert lane.load == 7, "nothing of the refused request was queued"
        # The other caller still gets in, within the lane's bound.
        also = asyncio.create_task(engine.classify([_rec("disk quota of tenant nine reached")], owner="http 10.0.0.7"))
        await asyncio.sleep(0)
        assert lane.load == 8
        tier.open()
        await asyncio.gather(*flood, small, also)
        assert lane.load == 0
        await engine.close()

    _run(scenario)


@pytest.mark.parametrize(
    ("front", "peer", "expected"),
    [
        ("grpc", "ipv4:10.0.0.5:43210", "grpc 10.0.0.5"),
        ("grpc", "ipv6:[::1]:43210", "grpc ::1"),
        ("grpc", "unix:/run/logclass.sock", "grpc unix:/run/logclass.sock"),
        ("relay", "127.0.0.1:5170", "relay 127.0.0.1"),
        ("http", "10.1.2.3", "http 10.1.2.3"),
        ("http", "", "http unknown"),
    ],
)
def test_a_caller_is_its_peer_host_without_the_port(front: str, peer: str, expected: str) -> None:
    assert caller(front, peer) == expected


def test_the_fast_lane_yields_by_records_and_by_characters() -> None:
    """Masking costs by the character: 100 lines of 64 KiB, which no cache keeps, must not hold
    the event loop in one slice while known records of other callers wait."""
    short = [_rec(f"job {i} done") for i in range(1200)]
    assert list(fast_slices(short)) == [(0, 512), (512, 1024), (1024, 1200)]
    long = [_rec("m" * 65536) for _ in range(3)]
    assert list(fast_slices(long)) == [(0, 1), (1, 2), (2, 3)]
    halves = [_rec("m" * 32768) for _ in range(5)]
    assert list(fast_slices(halves)) == [(0, 2), (2, 4), (4, 5)]
    assert list(fast_slices([])) == []
