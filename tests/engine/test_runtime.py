"""The runtime: the one swappable engine every front end classifies through, its counted way in,
its one answer to a full lane, and the front ends' part in a swap. Real engines on the regex
tier (no model); calls are held by events, never by sleeps."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Hashable, Sequence

import pytest
from prometheus_client import generate_latest

from logclass import config
from logclass.config.settings import Settings
from logclass.core.backoff import Backoff
from logclass.core.decision import Decision, LogRecord
from logclass.engine.engine import Engine
from logclass.engine.lanes import LaneFullError
from logclass.engine.metrics import Metrics
from logclass.engine.pipeline import build_engine
from logclass.engine.runtime import EngineUnavailable, FrontEnd, Runtime, SwapStep, classify_all
from logclass.errors import LogclassError
from logclass.http.front import HttpFrontEnd
from logclass.relay.app import RelayFrontEnd
from logclass.server.app import GrpcFrontEnd

LOGIN = LogRecord("billing", "User 12345 logged in.")


def _settings(**router: object) -> Settings:
    return config.load(environ={}, overrides={"router": {"tiers": ["regex"], **router}})


def _engine(settings: Settings) -> Engine:
    return build_engine(settings)


class FakeFrontEnd:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.seen: list[str] = []

    def on_swap(self, settings: Settings) -> SwapStep | None:
        if self.refuse:
            raise LogclassError("this front end cannot take it")
        label = settings.router.fallback_label
        return lambda: self.seen.append(label)


def test_no_engine_is_unavailable_until_attached_and_again_once_draining() -> None:
    settings = _settings()
    runtime = Runtime(settings, Metrics())

    async def scenario() -> None:
        with pytest.raises(EngineUnavailable, match="still loading"):
            await runtime.classify([LOGIN], None)
        runtime.attach(_engine(settings), None)
        assert runtime.serving
        assert (await runtime.classify([LOGIN], None))[0].label == "User Action"
        runtime.drain()
        assert not runtime.serving
        with pytest.raises(EngineUnavailable, match="shutting down"):
            await runtime.classify([LOGIN], None)
        await runtime.close()

    asyncio.run(scenario())


def test_a_call_in_progress_finishes_on_the_engine_it_began_with() -> None:
    settings = _settings()
    runtime = Runtime(settings, Metrics())
    old, new = _engine(settings), _engine(_settings(fallback_label="other"))
    runtime.attach(old, None)
    entered, gate = asyncio.Event(), asyncio.Event()
    real = old.classify

    async def held(
        records: Sequence[LogRecord], budget_s: float | None, owner: Hashable | None = None
    ) -> list[Decision]:
        entered.set()
        await gate.wait()
        return await real(records, budget_s, owner)

    old.classify = held  # type: ignore[method-assign]

    async def scenario() -> None:
        call = asyncio.ensure_future(runtime.classify([LogRecord("s", "nothing matches this")], None))
        await entered.wait()
        assert runtime.swap(_settings(fallback_label="other"), [], new, None) is old
        gate.set()
        assert (await call)[0].label == "Unclassified"  # the old engine's fallback
        assert (await runtime.classify([LogRecord("s", "nothing matches this")], None))[0].label == "other"
        await old.close()
        await runtime.close()

    asyncio.run(scenario())


def test_front_ends_prepare_a_swap_and_a_refusal_changes_nothing() -> None:
    settings = _settings()
    runtime = Runtime(settings, Metrics())
    runtime.attach(_engine(settings), None)
    willing = FakeFrontEnd()
    runtime.add_front_end(willing)  # type: ignore[arg-type]
    steps = runtime.prepare(_settings(fallback_label="next"))
    assert willing.seen == []  # prepared, not applied
    runtime.swap(_settings(fallback_label="next"), steps)
    assert willing.seen == ["next"] and runtime.settings.router.fallback_label == "next"

    runtime.add_front_end(FakeFrontEnd(refuse=True))  # type: ignore[arg-type]
    with pytest.raises(LogclassError, match="cannot take it"):
        runtime.prepare(_settings(fallback_label="third"))
    assert willing.seen == ["next"] and runtime.settings.router.fallback_label == "next"
    asyncio.run(runtime.close())


def test_a_full_lane_is_counted_once_and_batch_jobs_wait_it_out() -> None:
    settings = _settings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics)
    engine = _engine(settings)
    runtime.attach(engine, None)
    refusals = 2
    real = engine.classify

    async def full_twice(
        records: Sequence[LogRecord], budget_s: float | None, owner: Hashable | None = None
    ) -> list[Decision]:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise LaneFullError("llm", 10, 10)
        return await real(records, budget_s, owner)

    engine.classify = full_twice  # type: ignore[method-assign]

    async def scenario() -> None:
        with pytest.raises(LaneFullError):
            await runtime.classify([LOGIN], None)
        assert metrics.lane_rejected.labels("llm")._value.get() == 1
        decisions = await runtime.classify_all([LOGIN], retry=Backoff(0.0, 0.0))
        assert decisions[0].label == "User Action" and refusals == 0
        assert metrics.lane_rejected.labels("llm")._value.get() == 2
        await runtime.close()

    asyncio.run(scenario())


def test_classify_all_retries_only_a_full_lane() -> None:
    async def broken(
        records: Sequence[LogRecord], budget_s: float | None, owner: Hashable | None = None
    ) -> list[Decision]:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(classify_all(broken, [LOGIN], None, Backoff(0.0, 0.0)))


def test_decisions_are_counted_once_and_survive_a_swap() -> None:
    settings = _settings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics)
    first, second = _engine(settings), _engine(settings)
    runtime.attach(first, None)

    def records_total() -> float:
        value = metrics.registry.get_sample_value("logclass_records_total", {"tier": "regex", "label": "User Action"})
        return value or 0.0

    async def scenario() -> None:
        await runtime.classify([LOGIN, LOGIN], None)
        assert records_total() == 2 and first.stats.by_label["User Action"] == 2
        runtime.swap(settings, [], second, None)
        await runtime.classify([LOGIN], None)
        assert records_total() == 3  # the retired engine's counts are kept
        third = _engine(settings)
        runtime.swap(settings, [], third, None)  # the first is folded into totals now
        await runtime.classify([LOGIN], None)
        assert records_total() == 4
        assert metrics.snapshot().records[("regex", "User Action")] == 4
        assert b"logclass_cache_hits_total" in generate_latest(metrics.registry)
        for engine in (first, second):
            await engine.close()
        await runtime.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("front_end", [GrpcFrontEnd, HttpFrontEnd, RelayFrontEnd])
def test_every_front_end_has_the_protocol(front_end: type) -> None:
    for name, member in inspect.getmembers(FrontEnd, inspect.isfunction):
        if name.startswith("_"):
            continue
        mine = getattr(front_end, name, None)
        assert mine is not None, f"{front_end.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(mine) == inspect.iscoroutinefunction(member), name
        assert list(inspect.signature(mine).parameters) == list(inspect.signature(member).parameters), name


def test_the_blocking_facade_of_offline_jobs_classifies_through_a_runtime() -> None:
    from logclass.engine.blocking import BlockingEngine

    settings = _settings()
    with BlockingEngine(_engine(settings), settings=settings) as offline:
        assert offline.classify([LOGIN, LOGIN])[0].label == "User Action"
        assert offline.runtime.settings is settings
        assert offline.runtime.metrics.snapshot().records[("regex", "User Action")] == 2
    assert not offline.runtime.serving  # closed with the facade
