"""Classifies the LogRecords of one OTLP request as one batch and writes the decisions into them.

The records go to the engine runtime the way the gRPC and HTTP front ends send theirs: one call,
the caller (its host) as the owner of its turn and share in the model lanes, and the same budget
(``server.inline_budget_ms``, cut to the caller's deadline less ``server.deadline_margin_ms``).
A record whose template is not decided within the budget leaves at once with the engine's
fallback label and tier ``pending``, never late.

The tagger never fails a request for classification's sake, as the Forward relay's tagger does
not: when the engine gives no answer within the budget plus ``server.max_wait_ms``, has a full
lane, is not loaded yet or fails, the records get the fallback label with tier ``fallback`` and
confidence 0 and go on all the same. Records opted out, and records without a body, pass
untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from logclass.config.settings import OtlpSettings
from logclass.core.decision import TIER_PENDING, Decision
from logclass.engine.lanes import LaneFullError
from logclass.engine.runtime import Classify, EngineUnavailable, Runtime
from logclass.otlp.mapping import RecordMapping, extract, tag
from logclass.service.classifier import Budgets, ClassifyCall

log = logging.getLogger("logclass.otlp")

# The tier written for records the engine gave no decision for (as the relay writes it).
FALLBACK_TIER = "fallback"
REASON_TIMEOUT = "timeout"
REASON_QUEUE_FULL = "queue_full"
REASON_UNAVAILABLE = "unavailable"
REASON_INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Tagged:
    """A request after tagging (the same message, changed in place) and what became of its
    records: ``classified`` (``pending`` of them left pending), ``skipped`` (opted out),
    ``missing`` (no body), and ``fallback`` with its reason when the engine gave no decisions."""

    request: ExportLogsServiceRequest
    classified: int = 0
    pending: int = 0
    skipped: int = 0
    missing: int = 0
    fallback: str | None = None


class Tagger:
    """Tags requests with ``classify``'s decisions under ``settings.attributes``' names.

    ``fallback_label``: the label of records the engine gave no decision for, read per call (a
    reload may change it). ``template_of``: the masker of the engine serving now, read per call
    (None: no template attribute). Use ``of_runtime`` in a process; tests hand their own."""

    def __init__(
        self,
        settings: OtlpSettings,
        classify: Classify,
        budgets: Budgets,
        *,
        fallback_label: Callable[[], str],
        template_of: Callable[[], Callable[[str], str] | None] = lambda: None,
    ) -> None:
        self._mapping = RecordMapping.of(settings)
        self._classify = classify
        self._budgets = budgets
        self._fallback_label = fallback_label
        self._template_of = template_of

    @classmethod
    def of_runtime(cls, settings: OtlpSettings, runtime: Runtime) -> Tagger:
        """A tagger on the process's runtime, with the gRPC and HTTP front ends' budgets."""
        server = runtime.settings.server
        budgets = Budgets(
            server.inline_budget_ms / 1000.0, server.deadline_margin_ms / 1000.0, server.max_wait_ms / 1000.0
        )

        def fallback_label() -> str:
            engine = runtime.engine
            return engine.fallback_label if engine is not None else runtime.settings.router.fallback_label

        def template_of() -> Callable[[str], str] | None:
            engine = runtime.engine
            return engine.router.masker.template if engine is not None else None

        return cls(settings, runtime.classify, budgets, fallback_label=fallback_label, template_of=template_of)

    def retarget(self, settings: OtlpSettings) -> None:
        """The mapping of a hot reload (names, source keys, opt-out), from the next call on."""
        self._mapping = RecordMapping.of(settings)

    async def tag(
        self, request: ExportLogsServiceRequest, owner: Hashable, time_remaining: float | None = None
    ) -> Tagged:
        """Classifies ``request``'s records as one batch and tags them in place. ``owner``: the
        sender (``engine.lanes.caller``); ``time_remaining``: the sender's deadline, if any."""
        mapping = self._mapping
        extracted = extract(request, mapping)
        targets = extracted.targets
        skipped, missing = extracted.skipped, len(extracted.missing)
        if not targets:
            return Tagged(request, skipped=skipped, missing=missing)
        records = [target.input for target in targets]
        budget = self._budgets.for_request(ClassifyCall([], []), time_remaining)
        assert budget is not None  # for_request caps every call without wait_for_all
        timeout = budget + self._budgets.max_wait_s
        reason: str | None = None
        try:
            decisions = await asyncio.wait_for(self._classify(records, budget, owner), timeout)
        except asyncio.TimeoutError:  # not TimeoutError before 3.11
            log.warning("the engine gave no answer for %d OTLP records within %.1fs", len(records), timeout)
            reason = REASON_TIMEOUT
        except LaneFullError as exc:
            log.warning("%s: %d OTLP records tagged with the fallback label", exc, len(records))
            reason = REASON_QUEUE_FULL
        except EngineUnavailable as exc:
            log.warning("%s: %d OTLP records tagged with the fallback label", exc, len(records))
            reason = REASON_UNAVAILABLE
        except Exception:  # a tier failed: delivery must not depend on classification
            log.exception("the engine failed; %d OTLP records tagged with the fallback label", len(records))
            reason = REASON_INTERNAL
        if reason is not None:
            fallback = Decision(self._fallback_label(), 0.0, FALLBACK_TIER, "", "", error=reason)
            tag(targets, [fallback] * len(targets), mapping.names)
            return Tagged(request, len(targets), 0, skipped, missing, fallback=reason)
        tag(targets, decisions, mapping.names, self._template_of())
        pending = sum(1 for decision in decisions if decision.tier == TIER_PENDING)
        return Tagged(request, len(targets), pending, skipped, missing)
