"""Classifies the records of received requests and writes the decision into each record.

All records of the requests read together from one connection go to the engine as one call
(shared with gRPC callers when both run in one process: one cache, one set of lanes). Known
records are answered at once; new templates are waited for up to ``relay.budget_ms``, then their
records are forwarded with tier ``pending`` while the templates are still decided.

The tagger never fails and never waits longer than its timeout: when the engine is too slow,
full or broken, the records get ``relay.fallback_label`` with tier ``fallback`` and the reason,
and are forwarded all the same. Field names and fallback values are the Fluentd plugin's, so
both paths produce the same records. Records matching ``relay.opt_out`` are left as they came
and never reach the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from logclass.core.decision import TIER_PENDING, LogRecord
from logclass.engine.lanes import LaneFullError
from logclass.engine.runtime import Classify
from logclass.relay.metrics import RelayMetrics
from logclass.relay.protocol import EventBatch
from logclass.relay.settings import RelaySettings
from logclass.relay.throttle import ThrottledLog

log = logging.getLogger("logclass.relay")

# The tier written for records the relay could not get classified; "none" is the pipeline's own
# "no tier decided", worth telling apart from "not asked".
FALLBACK_TIER = "fallback"
REASON_TIMEOUT = "timeout"
REASON_QUEUE_FULL = "queue_full"
REASON_INTERNAL = "internal"
REASON_MISSING = "missing_message"


@dataclass(slots=True)
class Pending:
    """A batch's records left pending: their positions in its entries, and their sources."""

    entries: list[int] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Keys:
    """What one ``tag`` call writes with, read once at its start: a hot reload that changes the
    relay's settings (``Tagger.retarget``) applies from the next call, never within one."""

    settings: RelaySettings
    label: str | None
    tier: str | None
    confidence: str | None
    reason: str | None
    error: str | None

    @classmethod
    def of(cls, settings: RelaySettings) -> _Keys:
        keys = settings.section.output
        return cls(
            settings, keys.label_key, keys.tier_key, keys.confidence_key, keys.fallback_reason_key, keys.error_key
        )


class Tagger:
    def __init__(self, settings: RelaySettings, classify: Classify | None, metrics: RelayMetrics) -> None:
        """``classify`` None: records pass through untouched (relay.classify false)."""
        self._keys = _Keys.of(settings)
        self._classify = classify
        self._metrics = metrics
        self._warn = ThrottledLog(log)

    @property
    def settings(self) -> RelaySettings:
        return self._keys.settings

    @property
    def classifies(self) -> bool:
        return self._classify is not None

    def retarget(self, settings: RelaySettings) -> None:
        """The tagging settings of a hot reload (output keys, message and source keys, opt-out,
        fallback label, budgets), from the next ``tag`` call on."""
        self._keys = _Keys.of(settings)

    async def tag(
        self, batches: Sequence[EventBatch], owner: Hashable = "relay", budget_s: float | None = None
    ) -> list[Pending]:
        """Classifies the records of ``batches`` in place; ``owner``: the sender, whose turn and
        share in the model lanes they take; ``budget_s``: how long to wait for model answers
        (default relay.budget_ms; the pipeline's timeout is relay.classify_timeout_ms beyond it).
        Per batch, the records left pending (their templates still being decided)."""
        pending = [Pending() for _ in batches]
        if self._classify is None:
            return pending
        k = self._keys
        records: list[LogRecord] = []
        targets: list[dict[Any, Any]] = []
        where: list[tuple[int, int]] = []  # (batch, entry) of each target
        missing: list[dict[Any, Any]] = []
        skipped = 0
        message_key, opt_out = k.settings.message_key, k.settings.opt_out
        for b, batch in enumerate(batches):
            default_source = k.settings.section.source or batch.tag
            for e, entry in enumerate(batch.entries):
                record = entry[1]
                if opt_out and any(condition.matches(record) for condition in opt_out):
                    skipped += 1
                    continue
                message = _text(message_key.get(record))
                if message is None:
                    missing.append(record)
                    continue
                records.append(LogRecord(_source(k.settings, record) or default_source, message))
                targets.append(record)
                where.append((b, e))
        if skipped:
            self._metrics.skipped_records.inc(skipped)
        if missing and k.settings.section.tag_missing_message:
            self._fall_back(k, missing, REASON_MISSING)
        if records:
            budget = k.settings.budget_s if budget_s is None else budget_s
            for i in await self._decide(k, records, targets, owner, budget):
                b, e = where[i]
                pending[b].entries.append(e)
                pending[b].sources.add(records[i].source)
        return pending

    async def _decide(
        self, k: _Keys, records: list[LogRecord], targets: list[dict[Any, Any]], owner: Hashable, budget_s: float
    ) -> list[int]:
        """Writes each target's decision; the positions of those left pending."""
        assert self._classify is not None
        timeout_ms = k.settings.section.classify_timeout_ms
        try:
            decisions = await asyncio.wait_for(self._classify(records, budget_s, owner), budget_s + timeout_ms / 1000.0)
        except asyncio.TimeoutError:  # asyncio.TimeoutError is not TimeoutError before 3.11
            self._warn.warning(
                REASON_TIMEOUT,
                "pipeline gave no answer within relay.classify_timeout_ms (%s ms): %s records forwarded as %r",
                timeout_ms,
                len(records),
                k.settings.fallback_label,
            )
            self._fall_back(k, targets, REASON_TIMEOUT)
            return []
        except LaneFullError as exc:
            self._warn.warning(REASON_QUEUE_FULL, "%s: %s records forwarded unclassified", exc, len(records))
            self._fall_back(k, targets, REASON_QUEUE_FULL)
            return []
        except Exception:  # a tier failed: delivery must not depend on classification
            log.exception("pipeline failed; %s records forwarded as %r", len(records), k.settings.fallback_label)
            self._fall_back(k, targets, REASON_INTERNAL)
            return []
        pending: list[int] = []
        for i, (record, decision) in enumerate(zip(targets, decisions, strict=True)):
            _write(k, record, decision.label, decision.tier, round(decision.confidence, 4))
            if k.error and decision.error:
                record[k.error] = decision.error
            if decision.tier == TIER_PENDING:
                pending.append(i)
        return pending

    def _fall_back(self, k: _Keys, targets: Sequence[dict[Any, Any]], reason: str) -> None:
        self._metrics.fallback_records.labels(reason).inc(len(targets))
        for record in targets:
            _write(k, record, k.settings.fallback_label, FALLBACK_TIER, 0.0)
            if k.reason:
                record[k.reason] = reason


def _source(settings: RelaySettings, record: dict[Any, Any]) -> str | None:
    """The first non-empty string at relay.source_key's paths, in order."""
    for key in settings.source_keys:
        source = _text(key.get(record))
        if source:
            return source
    return None


def _write(k: _Keys, record: dict[Any, Any], label: str, tier: str, confidence: float) -> None:
    if k.label:
        record[k.label] = label
    if k.tier:
        record[k.tier] = tier
    if k.confidence:
        record[k.confidence] = confidence


def _text(value: object) -> str | None:
    """A record value as classifiable text; bytes that are not UTF-8 reach the pipeline as such
    (surrogate escapes), which reports them as invalid_utf8."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return None
