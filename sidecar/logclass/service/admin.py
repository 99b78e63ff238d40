"""Reload and Feedback, the Admin service's calls, transport-free: what an operator does to a
running sidecar. The front end checks the admin token; this checks the arguments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from logclass.core.decision import Decision, LogRecord
from logclass.core.learnt import ORIGINS, Key, Lesson
from logclass.engine.reload import UnknownReloadParts, check_parts
from logclass.errors import LogclassError
from logclass.service.classifier import ClassifierService, Code


class ReloadOutcome(Protocol):
    """What a reload swapped in: the parts that changed, and the versions serving now."""

    @property
    def changed(self) -> tuple[str, ...]: ...
    @property
    def model_version(self) -> str: ...
    @property
    def rules_sha256(self) -> str: ...


# The process's reloader (serve owns it: it swaps the engine under every front end). Any
# LogclassError it raises is a refused reload, with the running set still serving.
Reload = Callable[[Collection[str]], Awaitable[ReloadOutcome]]


@dataclass(frozen=True, slots=True)
class Correction:
    record: LogRecord
    label: str
    this_source_only: bool = False


DEFAULT_LESSONS = 100
# A lesson holds a whole log line (up to limits.max_message_bytes): a page of these stays far
# under gRPC's message limit, where 100,000 lessons of 64 KiB would not.
MAX_LESSONS_LISTED = 1000


class AdminService:
    def __init__(self, service: ClassifierService) -> None:
        self.service = service
        # Set once the engine is loaded and the reloader exists; until then a Reload is UNAVAILABLE.
        self.reloader: Reload | None = None

    async def reload(self, parts: Sequence[str]) -> ReloadOutcome:
        try:
            check_parts(parts)
        except UnknownReloadParts as exc:
            raise self.service.refuse(Code.INVALID_ARGUMENT, str(exc)) from exc
        self.service.active_engine()  # UNAVAILABLE while loading or draining
        if self.reloader is None:
            raise self.service.refuse(Code.UNAVAILABLE, "models are still loading; retry shortly")
        try:
            return await self.reloader(tuple(parts))
        except LogclassError as exc:
            raise self.service.refuse(
                Code.FAILED_PRECONDITION, f"reload refused, the running set keeps serving: {exc}"
            ) from exc

    def feedback(self, corrections: Sequence[Correction]) -> list[Decision]:
        """Learns every correction, or none of them when one is invalid; returns each record's
        decision as the engine now gives it."""
        engine = self.service.active_engine()
        labels = set(engine.labels())
        for i, correction in enumerate(corrections):
            if not correction.record.message:
                raise self.service.refuse(Code.INVALID_ARGUMENT, f"correction {i}: the record has no message")
            if correction.label not in labels:
                raise self.service.refuse(
                    Code.INVALID_ARGUMENT,
                    f"correction {i}: label {correction.label!r} is not one of the model's labels {sorted(labels)}",
                )
        try:
            return [engine.teach(c.record, c.label, this_source_only=c.this_source_only) for c in corrections]
        except LogclassError as exc:
            raise self.service.refuse(Code.INVALID_ARGUMENT, str(exc)) from exc

    def lessons(self, origin: str, scope: str | None, limit: int) -> tuple[list[Lesson], int]:
        """The lessons of ``origin`` ("" for both) answering ``scope`` (None: any), most recently
        taught first, at most ``limit`` (0: DEFAULT_LESSONS), and how many matched."""
        if origin and origin not in ORIGINS:
            raise self.service.refuse(Code.INVALID_ARGUMENT, f"origin {origin!r}: give one of {list(ORIGINS)} or none")
        if limit > MAX_LESSONS_LISTED:
            fix = "narrow by origin or scope"
            raise self.service.refuse(
                Code.INVALID_ARGUMENT, f"limit {limit}: at most {MAX_LESSONS_LISTED} lessons a call; {fix}"
            )
        learnt = self.service.active_engine().learnt
        found = learnt.lessons(origin, scope) if learnt is not None else []
        return found[: limit or DEFAULT_LESSONS], len(found)

    def drop(self, keys: Sequence[Key]) -> list[Lesson]:
        return self.service.active_engine().forget_lessons(keys)
