"""The LLM tier: asks a backend about the templates the cheaper tiers could not decide.

The engine schedules it in its own lane (bounded queue, ``llm.max_concurrency`` questions at
once) and owns everything around it: the template key, the shared template cache, coalescing of
questions about one template, and each request's budget. This tier only asks, and says what the
answer means:

- an answer in the label set at or above ``min_confidence``: a verdict, cached by the engine;
- an answer below it: undecided (the fallback label, cached like any other decision);
- no answer (server down, circuit open, invalid output): deferred, so nothing is cached and the
  next record of the template asks again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from logclass.core.circuit import State
from logclass.core.decision import Deferred, Item, LogRecord, Outcome, Verdict
from logclass.core.learnt import json_line
from logclass.core.private_files import make_folder, open_private
from logclass.tiers.base import Scheduling, Tier
from logclass.tiers.llm.backend import LlmAnswer, LlmBackend, LlmOutputError, LlmUnavailable
from logclass.tiers.llm.prompt import PromptBuilder

log = logging.getLogger("logclass.llm")
# Outcomes counted in logclass_llm_calls_total.
ANSWERED, UNAVAILABLE, INVALID = "answered", "unavailable", "invalid_output"
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# logclass_llm_circuit_state: one number per state, worse is higher, so max() across pods or
# over time shows the worst state any pod was in.
CIRCUIT_STATE_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


@dataclass(slots=True)
class LlmStats:
    asked: int = 0  # questions sent to the backend
    answered: int = 0
    failed: int = 0  # unavailable or invalid output


class TeacherLog:
    """Appends each LLM-decided template to a JSONL file: labels from a teacher, for training."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Log lines: readable by this process's user only.
        make_folder(self.path.parent)
        self._fh: BinaryIO = open_private(self.path, append=True)
        self._lock = threading.Lock()

    def write(self, template: str, record: LogRecord, answer: LlmAnswer, model: str) -> None:
        entry = {
            "source": record.source,
            "template": template,
            "example": record.message,
            "label": answer.label,
            "confidence": round(answer.confidence, 4),
            "model": model,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self._lock:
            self._fh.write(json_line(entry))
            # Flushed per line: the file must survive a crash of the sidecar with what it learnt.
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


@dataclass(slots=True)
class _LlmMetrics:
    calls: Counter
    seconds: Histogram
    circuit: Gauge | None = None  # absent without a circuit (no LLM server backend)


_REGISTERED: weakref.WeakKeyDictionary[CollectorRegistry, _LlmMetrics] = weakref.WeakKeyDictionary()


class LlmTier(Tier):
    name = "llm"
    teaches = True

    def __init__(
        self,
        backend: LlmBackend,
        prompts: PromptBuilder,
        *,
        min_confidence: float,
        max_concurrency: int,
        teacher: TeacherLog | None = None,
        learn_min_confidence: float = 0.0,
    ) -> None:
        self.backend = backend
        self.prompts = prompts
        self.min_confidence = min_confidence
        self.learn_min_confidence = learn_min_confidence
        self.max_concurrency = max_concurrency
        self.teacher = teacher
        self.stats = LlmStats()
        self._calls: Counter | None = None
        self._seconds: Histogram | None = None

    def labels(self) -> list[str]:
        return list(self.prompts.labels)

    def worth_learning(self, verdict: Verdict) -> bool:
        # A lesson outlives the process and answers every later record of its source's template:
        # only answers the model is sure of (llm.learn_min_confidence).
        return verdict.confidence >= self.learn_min_confidence

    def scheduling(self) -> Scheduling:
        return Scheduling(batched=False, concurrency=self.max_concurrency)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Once per registry: after a hot reload a new tier takes over the same series (a second
        registration of a name raises, and counters must not start again from zero)."""
        shared = _REGISTERED.get(registry)
        if shared is None:
            shared = _LlmMetrics(
                Counter(
                    "logclass_llm_calls",
                    "LLM backend calls by outcome (answered, unavailable, invalid_output)",
                    ["outcome"],
                    registry=registry,
                ),
                Histogram("logclass_llm_seconds", "LLM backend call latency", buckets=_LATENCY, registry=registry),
            )
            _REGISTERED[registry] = shared
        self._calls, self._seconds = shared.calls, shared.seconds
        circuit = self.backend.circuit
        if circuit is None:
            return
        if shared.circuit is None:
            shared.circuit = Gauge(
                "logclass_llm_circuit_state",
                "LLM server circuit breaker: 0 closed, 1 half-open (one probe allowed), 2 open (calls refused)",
                registry=registry,
            )
        # Read at scrape time: the breaker changes state on its own clock (open turns half-open
        # when the cooldown ends), with no call to hook.
        shared.circuit.set_function(lambda: CIRCUIT_STATE_VALUES[circuit.state])

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._ask(item) for item in items)))

    async def _ask(self, item: Item) -> Outcome:
        started = time.perf_counter()
        outcome, answer = ANSWERED, None
        self.stats.asked += 1
        prompt = self.prompts.build(item.record.source, item.record.message)
        try:
            answer = await self.backend.choose(prompt)
        except LlmUnavailable as exc:
            outcome = UNAVAILABLE
            log.warning("LLM unavailable: %s", exc)
        except LlmOutputError as exc:
            outcome = INVALID
            log.error("%s", exc)
        except Exception:  # a backend bug must not fail the lane or leave callers waiting
            outcome = INVALID
            log.exception("LLM backend %s failed", self.backend.name)
        if self._calls is not None and self._seconds is not None:
            self._calls.labels(outcome).inc()
            self._seconds.observe(time.perf_counter() - started)
        if answer is None:
            self.stats.failed += 1
            return Deferred("LLM unavailable" if outcome == UNAVAILABLE else "LLM answer invalid")
        self.stats.answered += 1
        if answer.confidence < self.min_confidence:
            return None
        # A guarded line's answer is no teacher's label for its template (see Prompt.guarded).
        if self.teacher is not None and not prompt.guarded:
            self.teacher.write(item.template, item.record, answer, self.backend.model)
        return Verdict(answer.label, answer.confidence, self.backend.model, shareable=not prompt.guarded)

    async def warm_up(self, timeout: float = 300.0) -> None:
        """One question outside caches, statistics and the teacher file: llama.cpp evaluates the
        shared prompt prefix (instructions, labels, examples) once, which takes seconds; a server
        is asked to load its model. A backend that is down is reported, not fatal."""
        source, message = "logclass-warmup", "logclass warm-up: service started"
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(self.backend.choose(self.prompts.build(source, message)), timeout)
            log.info(
                "LLM %s/%s warm in %.1fs (answered %r)",
                self.backend.name,
                self.backend.model,
                time.perf_counter() - started,
                answer.label,
            )
        except Exception as exc:
            log.warning("LLM warm-up failed (%s); the first records may be pending or unclassified", exc)

    async def close(self) -> None:
        await self.backend.aclose()
        if self.teacher is not None:
            self.teacher.close()
