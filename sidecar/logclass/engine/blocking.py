"""The runtime for synchronous callers (``classify``, ``evaluate``, training, notebooks): its event
loop runs on a thread of its own, and calls block until their answers are in. Calls go through a
``Runtime``, as every front end's do: counted alike, and a full lane met the one way batch jobs
meet it (``Runtime.classify_all``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from logclass import config
from logclass.config.settings import Settings
from logclass.core.decision import Decision, LogRecord
from logclass.engine.engine import Engine
from logclass.engine.metrics import Metrics
from logclass.engine.router import RouterStats
from logclass.engine.runtime import Runtime

T = TypeVar("T")


class BlockingEngine:
    def __init__(self, engine: Engine, budget_s: float | None = None, *, settings: Settings | None = None) -> None:
        """``budget_s``: how long each call waits for model answers; None (offline jobs): every
        answer, so the output is complete. ``settings``: those ``engine`` was built from (None:
        the defaults), which the runtime carries."""
        self.engine = engine
        self.budget_s = budget_s
        self.runtime = Runtime(settings if settings is not None else config.load(environ={}), Metrics())
        self.runtime.attach(engine, None)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="logclass-engine", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    @property
    def stats(self) -> RouterStats:
        return self.engine.stats

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    def submit(self, records: Sequence[LogRecord]) -> concurrent.futures.Future[list[Decision]]:
        """Starts classifying ``records``; several submissions run at once and share the lanes,
        so an offline job keeps the LLM's ``max_concurrency`` questions in flight."""
        if self.budget_s is None:
            return self._run(self.runtime.classify_all(list(records)))
        return self._run(self.runtime.classify(list(records), self.budget_s))

    def classify(self, records: Sequence[LogRecord]) -> list[Decision]:
        return self.submit(records).result()

    def queued(self) -> dict[str, int]:
        """Templates waiting or running per model lane, for progress bars."""
        return {p.lane.name: p.lane.load for p in self.engine.lanes}

    def warm_up(self) -> None:
        self._run(self.engine.warm_up()).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self.runtime.close()).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> BlockingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
