"""Asking the LLM about templates: once each, most frequent first, within a budget.

The questions are the LLM tier's own: its prompt builder (labels.yaml's labels, descriptions and
examples, plus the fallback label for lines that fit none) with the guard, and its backend
(llama.cpp or an OpenAI-compatible server), ``llm.max_concurrency`` questions in flight.

A call that fails (server down, invalid output) leaves its template unanswered, to be asked by
the next run; after ``STOP_AFTER_FAILURES`` failures in a row the run stops asking, since the
backend is not answering anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from logclass.tiers.llm.backend import LlmBackend, LlmOutputError, LlmUnavailable
from logclass.tiers.llm.prompt import PromptBuilder
from logclass.training.bootstrap.answers import Answer
from logclass.training.bootstrap.templates import TemplateLines

STOP_AFTER_FAILURES = 5
# The prompts, or how to make them on the run's event loop (bootstrap first has the backend write
# worked examples: one loop for every call, since an HTTP client's pool belongs to its loop).
Prompts = PromptBuilder | Callable[[], Awaitable[PromptBuilder]]
# Why asking stopped before every template was asked.
BY_CALLS, BY_TIME, BY_FAILURES = "max_llm_calls", "max_minutes", "llm_failing"


@dataclass(frozen=True)
class Budget:
    max_calls: int | None = None
    max_seconds: float | None = None


@dataclass
class AskResult:
    calls: int = 0
    failed: int = 0
    seconds: float = 0.0
    stopped: str | None = None
    last_error: str = ""
    answered: list[Answer] = field(default_factory=list)


class _Run:
    """One pass over the templates, shared by the concurrent askers."""

    def __init__(self, todo: Sequence[TemplateLines], budget: Budget, bar: tqdm[Any]) -> None:
        self.queue: Iterator[TemplateLines] = iter(todo)
        self.budget = budget
        self.bar = bar
        self.result = AskResult()
        self.started = time.monotonic()
        self.failures_in_row = 0

    def next(self) -> TemplateLines | None:
        """The next template to ask, or None when done or out of budget (the call is counted
        here, before it is made, so concurrent askers cannot overshoot the budget)."""
        if self.result.stopped is not None:
            return None
        budget = self.budget
        reason = None
        if budget.max_calls is not None and self.result.calls >= budget.max_calls:
            reason = BY_CALLS
        elif budget.max_seconds is not None and time.monotonic() - self.started >= budget.max_seconds:
            reason = BY_TIME
        item = next(self.queue, None)
        if item is None:
            return None
        if reason is not None:  # something was left: the budget stopped the run
            self.result.stopped = reason
            return None
        self.result.calls += 1
        return item


def ask_templates(
    todo: Sequence[TemplateLines],
    backend: LlmBackend,
    prompts: Prompts,
    *,
    concurrency: int,
    budget: Budget,
    on_answer: Callable[[Answer], None],
    progress: bool,
) -> AskResult:
    """Asks about ``todo`` in order; ``on_answer`` gets each answer as it lands."""
    total = len(todo) if budget.max_calls is None else min(len(todo), budget.max_calls)
    bar: tqdm[Any]
    with tqdm(total=total, unit="template", desc="asking the LLM", disable=not progress) as bar:
        run = _Run(todo, budget, bar)
        asyncio.run(_ask_all(run, backend, prompts, concurrency, on_answer))
    run.result.seconds = time.monotonic() - run.started
    return run.result


async def _ask_all(
    run: _Run, backend: LlmBackend, prompts: Prompts, concurrency: int, on_answer: Callable[[Answer], None]
) -> None:
    try:
        built = prompts if isinstance(prompts, PromptBuilder) else await prompts()
        await asyncio.gather(*(_asker(run, backend, built, on_answer) for _ in range(max(1, concurrency))))
    finally:
        await backend.aclose()


async def _asker(run: _Run, backend: LlmBackend, prompts: PromptBuilder, on_answer: Callable[[Answer], None]) -> None:
    while (item := run.next()) is not None:
        answer = await _ask(run, backend, prompts, item)
        run.bar.update(1)
        if answer is None:
            continue
        run.result.answered.append(answer)
        on_answer(answer)


async def _ask(run: _Run, backend: LlmBackend, prompts: PromptBuilder, item: TemplateLines) -> Answer | None:
    source, example = item.source, item.example
    prompt = prompts.build(source, example)
    try:
        reply = await backend.choose(prompt)
    except (LlmUnavailable, LlmOutputError) as exc:
        _failed(run, str(exc))
        return None
    run.failures_in_row = 0
    return Answer(source, item.template, example, reply.label, reply.confidence, backend.model, prompt.guarded)


def _failed(run: _Run, error: str) -> None:
    run.result.failed += 1
    run.result.last_error = error
    run.failures_in_row += 1
    if run.failures_in_row >= STOP_AFTER_FAILURES and run.result.stopped is None:
        run.result.stopped = BY_FAILURES
