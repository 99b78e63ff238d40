"""The process's one engine, swappable, and the one counted way every front end classifies.

Front ends (gRPC, HTTP, the relay, batch jobs, and the OTLP and store pieces to come) hold the
runtime, never an engine: a hot reload swaps the engine here, once, and every caller's next call
sees the new one. A call reads the engine once, so a call in progress finishes on the engine it
began with. Decisions and full lanes are counted here, so every front end's records are counted
alike; a front end only maps the runtime's errors onto its own protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from logclass.config.settings import Settings
from logclass.core.backoff import Backoff
from logclass.core.bundle import ModelBundle
from logclass.core.decision import Decision, LogRecord
from logclass.engine.engine import Engine
from logclass.engine.lanes import LaneFullError
from logclass.engine.metrics import Metrics
from logclass.errors import LogclassError

# What a front end does when the runtime's settings change: built before the swap (where it may
# refuse), run in the swap's one synchronous step (where it must not fail).
SwapStep = Callable[[], None]
# A batch job waits for room in a full lane instead of failing halfway (an upload, a CSV file).
FULL_LANE_RETRY = Backoff(0.05, 1.0)


class Classify(Protocol):
    """``Runtime.classify``'s shape, for a part that is handed only the way to classify (the
    relay's tagger; tests hand it their own)."""

    async def __call__(
        self, records: Sequence[LogRecord], budget_s: float | None, owner: Hashable | None = None
    ) -> list[Decision]: ...


async def classify_all(
    classify: Classify, records: Sequence[LogRecord], owner: Hashable | None, retry: Backoff = FULL_LANE_RETRY
) -> list[Decision]:
    """Every answer of ``classify``, waiting with ``retry``'s backoff while a lane is full: how
    batch jobs, which would rather be slow than fail halfway, meet a full lane."""
    attempt = 0
    while True:
        try:
            return await classify(records, None, owner)
        except LaneFullError:
            await asyncio.sleep(retry.delay(attempt))
            attempt += 1


class EngineUnavailable(LogclassError):
    """No engine to classify with: the models are still loading, or the process is stopping."""


class FrontEnd(Protocol):
    """A way in (gRPC, HTTP, the Forward relay, ...): ``serve`` starts, swaps and stops every
    configured one alike, and none of them knows another."""

    def describe(self) -> str:
        """One line for the start-up log: where it listens and how it is secured."""
        ...

    def how_to_call(self) -> str:
        """Commands that reach it as configured ("" for none), for the start-up log."""
        ...

    async def start(self) -> None:
        """Listen, before the models load (health probes see NOT_SERVING, not a refused port)."""
        ...

    async def serving(self) -> None:
        """The runtime has its engine (or this process needs none): take traffic."""
        ...

    def on_swap(self, settings: Settings) -> SwapStep | None:
        """Prepares for ``settings`` (a hot reload's); raises LogclassError to refuse the reload,
        else returns the step that applies them (None: nothing to do)."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop taking calls; those in progress get ``grace_s`` to finish."""
        ...


class Runtime:
    """Holds the engine serving now, its settings and bundle; ``classify`` is the way to it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: ModelBundle | None = None
        self._engine: Engine | None = None
        self._draining = False
        self._front_ends: list[FrontEnd] = []

    # -- what serves ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def serving(self) -> bool:
        return self._engine is not None and not self._draining

    def current(self) -> Engine:
        """The engine serving now; EngineUnavailable while loading or stopping."""
        if self._draining:
            raise EngineUnavailable("the sidecar is shutting down; retry (another replica takes it)")
        if self._engine is None:
            raise EngineUnavailable("models are still loading; retry shortly")
        return self._engine

    # -- classifying ------------------------------------------------------------------------

    async def classify(
        self, records: Sequence[LogRecord], budget_s: float | None, owner: Hashable | None = None
    ) -> list[Decision]:
        """One decision per record, in order. ``budget_s``: how long to wait for model answers
        (None: every answer); ``owner``: whose turn it is in the lanes' round-robin. A full lane
        raises LaneFullError (counted here; the decisions are counted by the engine's router, which
        the metrics read); no engine, EngineUnavailable."""
        engine = self.current()
        try:
            return await engine.classify(records, budget_s, owner)
        except LaneFullError as exc:
            self.metrics.lane_rejected.labels(exc.lane).inc()
            raise

    async def classify_all(
        self, records: Sequence[LogRecord], owner: Hashable | None = None, retry: Backoff = FULL_LANE_RETRY
    ) -> list[Decision]:
        """Every answer, waiting while a lane is full (``classify_all``): for batch jobs."""
        return await classify_all(self.classify, records, owner, retry)

    # -- life -------------------------------------------------------------------------------

    def add_front_end(self, front_end: FrontEnd) -> None:
        """``front_end.on_swap`` is asked before every swap."""
        self._front_ends.append(front_end)

    def first_tier(self, source: str) -> str | None:
        """The tier the serving engine routes ``source`` to first (None: not routed, or no engine)."""
        return self._engine.router.first_tier(source) if self._engine is not None else None

    def lessons_changed(self, template: str) -> None:
        """A lesson of ``template`` arrived from another node: the serving engine drops its
        cached decisions (a retired one serves nobody)."""
        if self._engine is not None:
            self._engine.lesson_changed(template)

    def attach(self, engine: Engine, bundle: ModelBundle | None) -> None:
        """The first engine, loaded and warmed."""
        self._engine, self.bundle = engine, bundle
        self.metrics.watch_engine(engine)

    def prepare(self, settings: Settings) -> list[SwapStep]:
        """Every front end's step for ``settings``; the first refusal (LogclassError) stops it."""
        steps = (front_end.on_swap(settings) for front_end in self._front_ends)
        return [step for step in steps if step is not None]

    def swap(
        self,
        settings: Settings,
        steps: Sequence[SwapStep],
        engine: Engine | None = None,
        bundle: ModelBundle | None = None,
    ) -> Engine | None:
        """New settings (and a new engine with its bundle, when given) in one synchronous step on
        the event loop thread: every caller sees the old set or the new. Returns the engine
        replaced, for the caller to close once its calls are out."""
        old = None
        if engine is not None:
            old, self._engine, self.bundle = self._engine, engine, bundle
            self.metrics.watch_engine(engine)
        self.settings = settings
        for step in steps:
            step()
        return old

    def drain(self) -> None:
        """From now on calls are refused (EngineUnavailable); those in progress finish."""
        self._draining = True

    async def close(self) -> None:
        """Closes the engine serving now (after the front ends stopped)."""
        self._draining = True
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.close()
