"""The LLM tier: asks a backend about new templates without ever stalling the pipeline.

The router calls ``decide`` from its own thread; the backend runs on an event loop in a thread
of this tier. For each record:

- its (source, template) answer is cached: returned at once;
- a question about it is already in flight: this record waits on that one (coalesced);
- else a question is sent.

Then ``decide`` waits at most ``timeout_ms`` for the answers. What is not back in time gets the
fallback label with tier ``llm_pending`` and is not cached by the router; the question carries
on in the background and lands in this tier's cache, so the next record of the template gets the
answer. A backend that cannot answer (down, circuit open) gives the fallback label, also uncached.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from sidecar.cache import LruCache
from sidecar.decision import TIER_LLM_PENDING, TIER_NONE, LogRecord, Verdict
from sidecar.tiers.llm.backend import LlmAnswer, LlmBackend, LlmOutputError, LlmUnavailable
from sidecar.tiers.llm.prompt import PromptBuilder

log = logging.getLogger("logclass.llm")
T = TypeVar("T")
# Outcomes reported to ``on_call``.
ANSWERED, UNAVAILABLE, INVALID = "answered", "unavailable", "invalid_output"
# Stands in for an answer when the queue is full.
_BUSY = LlmAnswer("", 0.0)


@dataclass(slots=True)
class LlmStats:
    asked: int = 0  # questions sent to the backend
    answered: int = 0
    failed: int = 0  # unavailable or invalid output
    cache_hits: int = 0
    coalesced: int = 0  # records that waited on a question already in flight
    pending: int = 0  # records given llm_pending: their answer missed the budget
    shed: int = 0  # records not asked about because max_queue questions were already waiting


class TeacherLog:
    """Appends each LLM-decided template to a JSONL file: labels from a teacher, for training."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = self.path.open("a", encoding="utf-8")
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
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            # Flushed per line: the file must survive a crash of the sidecar with what it learnt.
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class LlmTier:
    name = "llm"

    def __init__(
        self,
        backend: LlmBackend,
        prompts: PromptBuilder,
        template_of: Callable[[str], str],
        *,
        fallback_label: str,
        timeout_ms: int | None,
        min_confidence: float = 0.0,
        cache_size: int = 100_000,
        max_queue: int = 1000,
        teacher: TeacherLog | None = None,
    ) -> None:
        self.backend = backend
        self.prompts = prompts
        self.template_of = template_of
        self.fallback_label = fallback_label
        # None: wait for every answer (offline jobs: classify, evaluate).
        self.budget = timeout_ms / 1000.0 if timeout_ms is not None else None
        self.min_confidence = min_confidence
        self.max_queue = max_queue
        self.teacher = teacher
        self.stats = LlmStats()
        # Called from the loop thread after every backend call with (outcome, seconds): metrics hook.
        self.on_call: Callable[[str, float], None] | None = None
        self._answers: LruCache[LlmAnswer] = LruCache(cache_size)
        self._inflight: dict[Hashable, concurrent.futures.Future[LlmAnswer | None]] = {}
        # Guards _answers, _inflight and stats: decide runs in the router's thread, answers land
        # in the loop's thread.
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-tier", daemon=True)
        self._thread.start()

    def labels(self) -> list[str]:
        return list(self.prompts.labels)

    def decide(self, records: Sequence[LogRecord]) -> list[Verdict | None]:
        waits: list[concurrent.futures.Future[LlmAnswer | None] | LlmAnswer] = []
        # Masked before taking the lock: answers landing on the loop thread wait for it.
        keys = [(record.source, self.template_of(record.message)) for record in records]
        with self._lock:
            for key, record in zip(keys, records, strict=True):
                answer = self._answers.get(key)
                if answer is not None:
                    self.stats.cache_hits += 1
                    waits.append(answer)
                elif key in self._inflight:
                    self.stats.coalesced += 1
                    waits.append(self._inflight[key])
                elif len(self._inflight) >= self.max_queue:
                    self.stats.shed += 1
                    waits.append(_BUSY)
                else:
                    self.stats.asked += 1
                    future = self._submit(self._ask(key, record))
                    self._inflight[key] = future
                    waits.append(future)
        futures = [w for w in waits if isinstance(w, concurrent.futures.Future)]
        if futures:
            concurrent.futures.wait(futures, timeout=self.budget)
        verdicts = [self._verdict(w) for w in waits]
        pending = sum(v is not None and v.tier == TIER_LLM_PENDING for v in verdicts)
        if pending:
            with self._lock:
                self.stats.pending += pending
        return verdicts

    def _verdict(self, wait: concurrent.futures.Future[LlmAnswer | None] | LlmAnswer) -> Verdict | None:
        if wait is _BUSY:
            return Verdict(self.fallback_label, 0.0, "LLM queue full", TIER_NONE, final=False)
        if isinstance(wait, concurrent.futures.Future):
            if not wait.done():
                return Verdict(self.fallback_label, 0.0, "LLM answer pending", TIER_LLM_PENDING, final=False)
            answer = wait.result()
            if answer is None:
                return Verdict(self.fallback_label, 0.0, "LLM unavailable", TIER_NONE, final=False)
        else:
            answer = wait
        if answer.confidence < self.min_confidence:
            return None
        return Verdict(answer.label, answer.confidence, self.backend.model)

    async def _ask(self, key: tuple[str, str], record: LogRecord) -> LlmAnswer | None:
        started = time.perf_counter()
        outcome, answer = ANSWERED, None
        try:
            answer = await self.backend.choose(self.prompts.build(record.source, record.message))
        except LlmUnavailable as exc:
            outcome = UNAVAILABLE
            log.warning("LLM unavailable: %s", exc)
        except LlmOutputError as exc:
            outcome = INVALID
            log.error("%s", exc)
        except Exception:  # a backend bug must not kill the loop thread or leave callers waiting
            outcome = INVALID
            log.exception("LLM backend %s failed", self.backend.name)
        with self._lock:
            self._inflight.pop(key, None)
            if answer is not None:
                self.stats.answered += 1
                self._answers.put(key, answer)
            else:
                self.stats.failed += 1
        if answer is not None and self.teacher is not None:
            self.teacher.write(key[1], record, answer, self.backend.model)
        if self.on_call is not None:
            self.on_call(outcome, time.perf_counter() - started)
        return answer

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def warm_up(self, timeout: float = 300.0) -> None:
        """One question outside cache, statistics and teacher file: llama.cpp evaluates the shared
        prompt prefix (instructions, labels, examples) once, which takes seconds; a server is
        asked to load its model. A backend that is down is reported, not fatal: the tier copes."""
        source, message = "logclass-warmup", "logclass warm-up: service started"
        started = time.perf_counter()
        try:
            answer = self._submit(self.backend.choose(self.prompts.build(source, message))).result(timeout)
            log.info(
                "LLM %s/%s warm in %.1fs (answered %r)",
                self.backend.name,
                self.backend.model,
                time.perf_counter() - started,
                answer.label,
            )
        except Exception as exc:
            log.warning("LLM warm-up failed (%s); the first records may be llm_pending or unclassified", exc)

    def close(self, timeout: float = 10.0) -> None:
        """Lets questions in flight finish (up to ``timeout``), then frees the backend."""
        with self._lock:
            inflight = list(self._inflight.values())
        concurrent.futures.wait(inflight, timeout=timeout)
        if self._loop.is_running():
            try:
                self._submit(self.backend.aclose()).result(timeout)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)
        if self.teacher is not None:
            self.teacher.close()
