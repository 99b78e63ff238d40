"""The fast lane: what the engine decides on the request path, in microseconds per record.

Per record::

    exact cache (source, message)  ── hit ─────────────────► decision
      │ miss
    validate (empty, too long, invalid UTF-8) ── error ────► fallback + error
      │
    fast tiers: regex rules, then the template memory ── match ──► decision
      │ no match
    template cache (source, template) ── hit ──────────────► decision
      │ miss
    pending: one representative per template, for the model lanes (see engine.Engine)

The regex tier runs before the template cache because rules may tell apart messages that share
a template ("status 200" and "status 503"); the memory (learnt lessons, then templates of the
training data) is a dict probe, as cheap as the cache. A source routed past a fast tier
(``router.source_routes``) still asks it ``decide_routed``: the memory answers it with what it
learnt from that source. The exact cache in front makes exact repeats, the
bulk of real log volume, skip masking altogether. Everything here runs on the engine's event
loop thread, so the caches need no locks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from logclass.core.cache import LruCache
from logclass.core.decision import (
    ERROR_EMPTY,
    ERROR_SOURCE_TOO_LONG,
    ERROR_TOO_LONG,
    ERROR_UTF8,
    TIER_NONE,
    Decision,
    LogRecord,
    TemplateKey,
    Verdict,
)
from logclass.core.masking import TemplateMasker, template_id
from logclass.tiers.base import FastTier

# Longer messages are decided but not cached: caches are bounded by entries, and a handful of
# megabyte-sized lines must not be able to hold gigabytes.
CACHEABLE_MAX_CHARS = 4096


@dataclass(slots=True)
class RouterStats:
    records: int = 0
    exact_hits: int = 0
    template_hits: int = 0
    template_misses: int = 0
    # Records given the fallback label because their request's budget ended first.
    pending: int = 0
    # Every decision given, by (tier, label, error; "" for none): the one count of decisions,
    # which the Prometheus series (logclass_records, logclass_errors) read at scrape time.
    decided: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # Templates actually handed to each model tier (after caching and coalescing).
    tier_calls: Counter[str] = field(default_factory=Counter)

    @property
    def by_tier(self) -> Counter[str]:
        return _sum_by(self.decided, 0)

    @property
    def by_label(self) -> Counter[str]:
        return _sum_by(self.decided, 1)

    @property
    def errors(self) -> Counter[str]:
        """Records not classified, by error (invalid_utf8, message_too_long, ...)."""
        out = _sum_by(self.decided, 2)
        del out[""]
        return out

    @property
    def cache_hit_ratio(self) -> float:
        """Share of the records needing a model decision that the caches answered."""
        hits = self.exact_hits + self.template_hits
        total = hits + self.template_misses
        return hits / total if total else 0.0


def _sum_by(decided: Counter[tuple[str, str, str]], part: int) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, n in decided.items():
        out[key[part]] += n
    return out


@dataclass(slots=True)
class PendingTemplate:
    """A template of one request that no cache knew: its first record, where its records sit in
    the request, and the position of the first tier to ask (``router.source_routes``)."""

    record: LogRecord
    start: int
    indexes: list[int]


class Router:
    def __init__(
        self,
        *,
        masker: TemplateMasker,
        tiers: Sequence[str],
        fast_tiers: Sequence[FastTier],
        source_routes: Mapping[str, str],
        fallback_label: str,
        model_version: str,
        cache_size: int,
        exact_cache_size: int,
        max_message_bytes: int,
        max_source_bytes: int,
    ) -> None:
        self.masker = masker
        self.tier_order = list(tiers)
        # (position in router.tiers, tier): a source routed past a position skips its tier.
        self.fast_tiers = [(self.tier_order.index(t.name), t) for t in fast_tiers if t.name in self.tier_order]
        self.source_routes = {src: self.tier_order.index(t) for src, t in source_routes.items()}
        self.fallback_label = fallback_label
        self.model_version = model_version
        self.max_message_bytes = max_message_bytes
        self.max_source_bytes = max_source_bytes
        self.template_cache: LruCache[Decision] = LruCache(cache_size)
        self.exact_cache: LruCache[Decision] = LruCache(exact_cache_size)
        self.stats = RouterStats()
        # Bumped by ``swap_fast_tier``: a request that began on older rules caches nothing into the
        # exact cache once it ends (its answers may be shadowed by a new rule there).
        self.generation = 0

    def first_tier(self, source: str) -> str | None:
        """The tier ``source`` is routed to first (router.source_routes); None: not routed."""
        position = self.source_routes.get(source)
        return self.tier_order[position] if position is not None else None

    def swap_fast_tier(self, tier: FastTier) -> FastTier | None:
        """Replaces the fast tier of ``tier.name`` (a reloaded regex tier), on the event loop thread,
        between two fast-lane slices: the exact cache, which sits in front of the rules, is emptied;
        the template cache holds only model decisions, which the rules are asked before, so it
        stays. Returns the tier replaced (None when no tier of that name was configured)."""
        old = next((t for _, t in self.fast_tiers if t.name == tier.name), None)
        if old is None:
            return None
        # A new list: a request mid-way keeps the list it started with (``fast(..., tiers=)``).
        self.fast_tiers = [(p, tier if t is old else t) for p, t in self.fast_tiers]
        self.generation += 1
        self.exact_cache.clear()
        return old

    def decision(self, verdict: Verdict, tier: str, template: str) -> Decision:
        return Decision(
            verdict.label, verdict.confidence, tier, template_id(template), self.model_version, verdict.detail
        )

    def fallback(self, template: str, tier: str = TIER_NONE, detail: str = "", error: str = "") -> Decision:
        tid = template_id(template) if template else ""
        return Decision(self.fallback_label, 0.0, tier, tid, self.model_version, detail, error)

    def _validate(self, record: LogRecord) -> str:
        message = record.message
        if not message or message.isspace():
            return ERROR_EMPTY
        try:
            size = len(message.encode("utf-8"))
        except UnicodeEncodeError:
            return ERROR_UTF8
        if size > self.max_message_bytes:
            return ERROR_TOO_LONG
        # Counted in characters first: UTF-8 takes 1 to 4 bytes a character, so most sources are
        # decided without encoding them, and one far over the bound without encoding all of it.
        source, limit = record.source, self.max_source_bytes
        chars = len(source)
        if chars > limit or (chars * 4 > limit and len(source.encode("utf-8", "surrogatepass")) > limit):
            return ERROR_SOURCE_TOO_LONG
        return ""

    def fast(
        self,
        records: Sequence[LogRecord],
        out: list[Decision | None],
        pending: dict[TemplateKey, PendingTemplate],
        offset: int = 0,
        tiers: Sequence[tuple[int, FastTier]] | None = None,
        generation: int | None = None,
    ) -> None:
        """Decides what the fast lane can of ``records`` (the request's records from ``offset``)
        into ``out``; the rest lands in ``pending``, one entry per new template. ``tiers`` and
        ``generation``: the fast tiers the request began with, and their generation (a request
        keeps its rule set across slices; decided on stale rules, it caches nothing)."""
        stats = self.stats
        fast_tiers = self.fast_tiers if tiers is None else tiers
        current = generation is None or generation == self.generation
        stats.records += len(records)
        exact_cache, template_cache = self.exact_cache, self.template_cache
        for i, record in enumerate(records, offset):
            exact_key = (record.source, record.message)
            # A source longer in characters than the limit in bytes is refused below: hashing it
            # for the cache first cost ~1 ms per 4 MiB.
            cacheable = len(record.message) <= CACHEABLE_MAX_CHARS and len(record.source) <= self.max_source_bytes
            decision = exact_cache.get(exact_key) if cacheable else None
            if decision is not None:
                stats.exact_hits += 1
                out[i] = decision
                continue
            error = self._validate(record)
            if error:
                out[i] = self.fallback("", error=error)
                continue
            template = self.masker.template(record.message)
            start = self.source_routes.get(record.source, 0)
            decision = self._decide_fast(record, template, start, fast_tiers)
            if decision is not None:
                if cacheable and current:
                    exact_cache.put(exact_key, decision)
                out[i] = decision
                continue
            key = (record.source, template)
            decision = template_cache.get(key) if cacheable else None
            if decision is not None:
                stats.template_hits += 1
                if current:
                    exact_cache.put(exact_key, decision)
                out[i] = decision
                continue
            entry = pending.get(key)
            if entry is not None:
                # A repeat of a template already waiting in this request: decided once.
                stats.template_hits += 1
                entry.indexes.append(i)
            else:
                stats.template_misses += 1
                pending[key] = PendingTemplate(record, start, [i])

    def _decide_fast(
        self, record: LogRecord, template: str, start: int, fast_tiers: Sequence[tuple[int, FastTier]] | None = None
    ) -> Decision | None:
        """``fast_tiers``: the rule set the request began with (a reload may swap the router's)."""
        for position, tier in self.fast_tiers if fast_tiers is None else fast_tiers:
            # A tier a source is routed past may still know an answer for it (a learnt lesson).
            verdict = tier.decide_now(record, template) if position >= start else tier.decide_routed(record, template)
            if isinstance(verdict, Verdict):
                return self.decision(verdict, tier.name, template)
        return None

    def template_of(self, record: LogRecord) -> str | None:
        """``record``'s template; None for a record answered with an error (empty, too long)."""
        return None if self._validate(record) else self.masker.template(record.message)

    def peek(self, record: LogRecord) -> Decision | None:
        """The decision the fast lane gives ``record`` now, touching no cache or statistic; None
        when it would go to the model lanes."""
        template = self.template_of(record)
        if template is None:
            return None
        decision = self._decide_fast(record, template, self.source_routes.get(record.source, 0))
        return decision if decision is not None else self.template_cache.peek((record.source, template))

    def forget(self, template: str) -> None:
        """Drops what the caches hold that could answer a record of ``template``: its template
        cache entries (every source) and the whole exact cache (its keys are messages, and
        finding a template's among them would mean masking every one)."""
        self.template_cache.drop_where(lambda key: isinstance(key, tuple) and key[1] == template)
        self.exact_cache.clear()

    def learn(self, key: TemplateKey, decision: Decision) -> None:
        """A model lane's final decision for a template: the next record of it is a cache hit."""
        if len(key[1]) <= CACHEABLE_MAX_CHARS:
            self.template_cache.put(key, decision)

    def remember(self, record: LogRecord, decision: Decision, generation: int | None = None) -> None:
        if generation is not None and generation != self.generation:
            return  # decided past rules that have changed since: a new rule may match it now
        if len(record.message) <= CACHEABLE_MAX_CHARS:
            self.exact_cache.put((record.source, record.message), decision)

    def count(self, decisions: Sequence[Decision]) -> None:
        self.stats.decided.update((d.tier, d.label, d.error) for d in decisions)
