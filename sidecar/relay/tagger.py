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
from collections.abc import Sequence
from typing import Any

from logclass.core.decision import LogRecord
from logclass.engine.lanes import LaneFullError
from logclass.engine.metrics import Classify
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


class Tagger:
    def __init__(self, settings: RelaySettings, classify: Classify | None, metrics: RelayMetrics) -> None:
        """``classify`` None: records pass through untouched (relay.classify false)."""
        self.settings = settings
        self._classify = classify
        self._metrics = metrics
        self._warn = ThrottledLog(log)
        keys = settings.section.output
        self._label, self._tier, self._confidence = keys.label_key, keys.tier_key, keys.confidence_key
        self._reason, self._error = keys.fallback_reason_key, keys.error_key

    async def tag(self, batches: Sequence[EventBatch]) -> None:
        if self._classify is None:
            return
        records: list[LogRecord] = []
        targets: list[dict[Any, Any]] = []
        missing: list[dict[Any, Any]] = []
        skipped = 0
        message_key, opt_out = self.settings.message_key, self.settings.opt_out
        for batch in batches:
            default_source = self.settings.section.source or batch.tag
            for entry in batch.entries:
                record = entry[1]
                if opt_out and any(condition.matches(record) for condition in opt_out):
                    skipped += 1
                    continue
                message = _text(message_key.get(record))
                if message is None:
                    missing.append(record)
                    continue
                records.append(LogRecord(self._source(record) or default_source, message))
                targets.append(record)
        if skipped:
            self._metrics.skipped_records.inc(skipped)
        if missing and self.settings.section.tag_missing_message:
            self._fall_back(missing, REASON_MISSING)
        if records:
            await self._decide(records, targets)

    def _source(self, record: dict[Any, Any]) -> str | None:
        """The first non-empty string at relay.source_key's paths, in order."""
        for key in self.settings.source_keys:
            source = _text(key.get(record))
            if source:
                return source
        return None

    async def _decide(self, records: list[LogRecord], targets: list[dict[Any, Any]]) -> None:
        assert self._classify is not None
        timeout_ms = self.settings.section.classify_timeout_ms
        try:
            decisions = await asyncio.wait_for(self._classify(records, self.settings.budget_s), timeout_ms / 1000.0)
        except asyncio.TimeoutError:  # asyncio.TimeoutError is not TimeoutError before 3.11
            self._warn.warning(
                REASON_TIMEOUT,
                "pipeline gave no answer within relay.classify_timeout_ms (%s ms): %s records forwarded as %r",
                timeout_ms,
                len(records),
                self.settings.fallback_label,
            )
            self._fall_back(targets, REASON_TIMEOUT)
            return
        except LaneFullError as exc:
            self._warn.warning(REASON_QUEUE_FULL, "%s: %s records forwarded unclassified", exc, len(records))
            self._fall_back(targets, REASON_QUEUE_FULL)
            return
        except Exception:  # a tier failed: delivery must not depend on classification
            log.exception("pipeline failed; %s records forwarded as %r", len(records), self.settings.fallback_label)
            self._fall_back(targets, REASON_INTERNAL)
            return
        for record, decision in zip(targets, decisions, strict=True):
            self._write(record, decision.label, decision.tier, round(decision.confidence, 4))
            if self._error and decision.error:
                record[self._error] = decision.error

    def _fall_back(self, targets: Sequence[dict[Any, Any]], reason: str) -> None:
        self._metrics.fallback_records.labels(reason).inc(len(targets))
        for record in targets:
            self._write(record, self.settings.fallback_label, FALLBACK_TIER, 0.0)
            if self._reason:
                record[self._reason] = reason

    def _write(self, record: dict[Any, Any], label: str, tier: str, confidence: float) -> None:
        if self._label:
            record[self._label] = label
        if self._tier:
            record[self._tier] = tier
        if self._confidence:
            record[self._confidence] = confidence


def _text(value: object) -> str | None:
    """A record value as classifiable text; bytes that are not UTF-8 reach the pipeline as such
    (surrogate escapes), which reports them as invalid_utf8."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return None
