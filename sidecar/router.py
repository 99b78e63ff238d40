"""The router: validation, regex tier, template cache, then the model tiers in configured order.

Per record::

    exact cache (source, message)  ── hit ──────────────────────────────► decision
      │ miss
    validate (empty, too long, invalid UTF-8) ── error ───────────────────► fallback + error
      │
    regex tier (exact rules, every record) ── match ──────────────────────► decision
      │ no match
    template cache (source, template) ── hit ─────────────────────────────► decision
      │ miss: one representative per template in the batch
    embedding tier ── confident ──► llm tier ── answer ──► else fallback ─► decision, cached

The regex tier runs before the template cache because rules may tell apart messages that share
a template ("status 200" and "status 503"). The exact cache in front makes exact repeats, the
bulk of real log volume, skip masking altogether.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sidecar.cache import LruCache
from sidecar.decision import TIER_NONE, Decision, LogRecord, Verdict
from sidecar.masking import TemplateMasker, template_id
from sidecar.tiers.base import Tier
from sidecar.tiers.regex import RegexTier

ERROR_EMPTY = "empty_message"
ERROR_TOO_LONG = "message_too_long"
ERROR_UTF8 = "invalid_utf8"
# Longer messages are decided but not cached: caches are bounded by entries, and a handful of
# megabyte-sized lines must not be able to hold gigabytes.
CACHEABLE_MAX_CHARS = 4096


@dataclass(slots=True)
class RouterStats:
    records: int = 0
    exact_hits: int = 0
    template_hits: int = 0
    template_misses: int = 0
    by_tier: Counter[str] = field(default_factory=Counter)
    by_label: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # Records actually handed to each model tier (after caching and in-batch dedupe).
    tier_calls: Counter[str] = field(default_factory=Counter)

    @property
    def cache_hit_ratio(self) -> float:
        """Share of the records needing a model decision that the caches answered."""
        hits = self.exact_hits + self.template_hits
        total = hits + self.template_misses
        return hits / total if total else 0.0


class Router:
    def __init__(
        self,
        *,
        masker: TemplateMasker,
        tiers: Sequence[str],
        regex: RegexTier | None,
        model_tiers: Mapping[str, Tier | None],
        source_routes: Mapping[str, str],
        fallback_label: str,
        model_version: str,
        cache_size: int,
        exact_cache_size: int,
        max_message_bytes: int,
    ) -> None:
        self.masker = masker
        self.tier_order = list(tiers)
        self.regex = regex if "regex" in self.tier_order else None
        # Model tiers in order; a configured tier may be absent (None), e.g. no LLM backend.
        self._model_tiers: list[tuple[int, Tier]] = []
        for position, name in enumerate(self.tier_order):
            tier = model_tiers.get(name)
            if name != "regex" and tier is not None:
                self._model_tiers.append((position, tier))
        self.source_routes = {src: self.tier_order.index(t) for src, t in source_routes.items()}
        self.fallback_label = fallback_label
        self.model_version = model_version
        self.max_message_bytes = max_message_bytes
        self.template_cache: LruCache[Decision] = LruCache(cache_size)
        self.exact_cache: LruCache[Decision] = LruCache(exact_cache_size)
        self.stats = RouterStats()
        # Called after each model-tier call with (tier name, records, seconds): metrics hook.
        self.on_tier_call: Callable[[str, int, float], None] | None = None

    @property
    def tiers_enabled(self) -> list[str]:
        names = ["regex"] if self.regex is not None else []
        return names + [tier.name for _, tier in self._model_tiers]

    def tier(self, name: str) -> Tier | None:
        """The model tier called ``name``, if configured and built."""
        return next((tier for _, tier in self._model_tiers if tier.name == name), None)

    def warm_up(self) -> None:
        """Pays each model tier's one-off costs (first forward pass, an LLM's prompt prefix) before
        traffic does, without touching caches or statistics."""
        record = LogRecord("logclass-warmup", "logclass warm-up message 1")
        for _, tier in self._model_tiers:
            warm = getattr(tier, "warm_up", None)
            if warm is not None:
                warm()
            else:
                tier.decide([record])

    def close(self) -> None:
        """Frees tiers that hold threads or connections (the LLM tier)."""
        for _, tier in self._model_tiers:
            close = getattr(tier, "close", None)
            if close is not None:
                close()

    def labels(self) -> list[str]:
        labels: set[str] = {self.fallback_label}
        if self.regex is not None:
            labels.update(self.regex.labels())
        for _, tier in self._model_tiers:
            labels.update(tier.labels())
        return sorted(labels)

    def _decision(self, verdict: Verdict, tier: str, template: str) -> Decision:
        return Decision(
            verdict.label, verdict.confidence, tier, template_id(template), self.model_version, verdict.detail
        )

    def _fallback(self, template: str, error: str = "") -> Decision:
        tid = template_id(template) if template else ""
        return Decision(self.fallback_label, 0.0, TIER_NONE, tid, self.model_version, "", error)

    def _validate(self, message: str) -> str:
        if not message or message.isspace():
            return ERROR_EMPTY
        try:
            size = len(message.encode("utf-8"))
        except UnicodeEncodeError:
            return ERROR_UTF8
        return ERROR_TOO_LONG if size > self.max_message_bytes else ""

    def classify(self, records: Sequence[LogRecord]) -> list[Decision]:
        """One decision per record, in order. Not thread-safe: one caller at a time."""
        stats = self.stats
        stats.records += len(records)
        out: list[Decision | None] = [None] * len(records)
        # (source, template) -> indexes of records in this batch waiting for a model decision
        pending: dict[tuple[str, str], list[int]] = {}
        for i, record in enumerate(records):
            exact_key = (record.source, record.message)
            cacheable = len(record.message) <= CACHEABLE_MAX_CHARS
            decision = self.exact_cache.get(exact_key) if cacheable else None
            if decision is not None:
                stats.exact_hits += 1
                out[i] = decision
                continue
            error = self._validate(record.message)
            if error:
                stats.errors[error] += 1
                out[i] = self._fallback("", error)
                continue
            template = self.masker.template(record.message)
            start = self.source_routes.get(record.source, 0)
            if self.regex is not None and start == 0:
                rule = self.regex.match(record)
                if rule is not None:
                    decision = self._decision(Verdict(rule.label, 1.0, rule.name), "regex", template)
                    if cacheable:
                        self.exact_cache.put(exact_key, decision)
                    out[i] = decision
                    continue
            key = (record.source, template)
            decision = self.template_cache.get(key) if cacheable else None
            if decision is not None:
                stats.template_hits += 1
                self.exact_cache.put(exact_key, decision)
                out[i] = decision
                continue
            if key in pending:
                # A repeat of a template already waiting in this batch: decided once, below.
                stats.template_hits += 1
                pending[key].append(i)
            else:
                stats.template_misses += 1
                pending[key] = [i]
        if pending:
            self._decide_pending(records, pending, out)
        result = [d for d in out if d is not None]
        for decision in result:
            stats.by_tier[decision.tier] += 1
            stats.by_label[decision.label] += 1
        return result

    def _decide_pending(
        self,
        records: Sequence[LogRecord],
        pending: dict[tuple[str, str], list[int]],
        out: list[Decision | None],
    ) -> None:
        undecided = list(pending)
        decided: dict[tuple[str, str], Decision] = {}
        provisional: set[tuple[str, str]] = set()
        for position, tier in self._model_tiers:
            ready = [k for k in undecided if self.source_routes.get(k[0], 0) <= position]
            if not ready:
                continue
            reps = [records[pending[k][0]] for k in ready]
            self.stats.tier_calls[tier.name] += len(reps)
            started = time.perf_counter()
            verdicts = tier.decide(reps)
            if self.on_tier_call is not None:
                self.on_tier_call(tier.name, len(reps), time.perf_counter() - started)
            if len(verdicts) != len(reps):
                raise RuntimeError(f"tier {tier.name} returned {len(verdicts)} verdicts for {len(reps)} records")
            for key, verdict in zip(ready, verdicts, strict=True):
                if verdict is not None:
                    decided[key] = self._decision(verdict, verdict.tier or tier.name, key[1])
                    if not verdict.final:
                        provisional.add(key)
            undecided = [k for k in undecided if k not in decided]
        for key in undecided:
            decided[key] = self._fallback(key[1])
        for key, decision in decided.items():
            cache = key not in provisional
            if cache and len(key[1]) <= CACHEABLE_MAX_CHARS:
                self.template_cache.put(key, decision)
            for i in pending[key]:
                out[i] = decision
                if cache and len(records[i].message) <= CACHEABLE_MAX_CHARS:
                    self.exact_cache.put((records[i].source, records[i].message), decision)
