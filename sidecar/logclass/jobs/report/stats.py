"""One pass over a classified CSV into fixed-size summaries: memory does not grow with rows.

Every structure here is capped: distinct labels, sources and tiers beyond their cap are counted
under ``OTHER``, templates per label are kept by the space-saving algorithm (the top entries are
exact or flagged approximate), and low-confidence examples are the N lowest, one per template.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from tqdm import tqdm

from logclass.core.decision import TIER_NONE, TIER_PENDING
from logclass.jobs.report.scores import CalibrationCounts
from logclass.jobs.rows import CountingReader, CsvInputError, read_header

K = TypeVar("K", bound=Hashable)

OTHER = "(other)"
NO_SOURCE = "(no source)"
CONFIDENCE_BINS = 20
# Caps that bound memory whatever the input; real label sets are a few dozen, real source sets a
# few thousand. Beyond them the report still adds up, with the excess under OTHER.
MAX_LABELS = 200
MAX_SOURCES = 2000
MAX_TIERS = 50
MAX_ERRORS = 100
# Space-saving is exact for keys that stay in its table; a table this many times larger than the
# list shown keeps the shown counts exact unless a label has a very long tail of templates.
TOPK_HEADROOM = 20
# Tiers whose confidence is no claim about the label: none and pending carry the fallback label
# at 0.0, and the relay writes "fallback" for records it could not get classified (named here, not
# imported: jobs/ does not import relay/).
NO_CLAIM_TIERS = (TIER_NONE, TIER_PENDING, "fallback")
# message -> template memo: masking is the costliest step per row and log lines repeat a lot.
TEMPLATE_MEMO = 100_000


class CappedCounter(Counter[str]):
    """A Counter that stops admitting new keys at ``cap``; later ones are counted as OTHER."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def key(self, name: str) -> str:
        if name in self or len(self) < self.cap:
            return name
        return OTHER


@dataclass
class TopEntry:
    count: int
    # Space-saving's overestimate bound: the true count is in [count - error, count].
    error: int
    example: str


class TopK(Generic[K]):
    """Space-saving heavy hitters (Metwally et al.): the k most frequent keys in O(k) memory."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.entries: dict[K, TopEntry] = {}
        # Keys that had the minimum count at the last scan, evicted first. A long tail of one-off
        # keys shares that count, so one O(k) scan serves many evictions instead of one.
        self._lowest: list[K] = []
        self._lowest_count = 0

    def add(self, key: K, example: str) -> None:
        entry = self.entries.get(key)
        if entry is not None:
            entry.count += 1
            return
        if len(self.entries) < self.k:
            self.entries[key] = TopEntry(1, 0, example)
            return
        # The evicted key's count is inherited as an upper bound for the newcomer.
        floor = self._evict()
        self.entries[key] = TopEntry(floor + 1, floor, example)

    def _evict(self) -> int:
        while self._lowest:
            victim = self._lowest.pop()
            entry = self.entries.get(victim)
            # Still at the minimum: counts only grow, so nothing can be below it.
            if entry is not None and entry.count == self._lowest_count:
                del self.entries[victim]
                return entry.count
        self._lowest_count = min(e.count for e in self.entries.values())
        self._lowest = [k for k, e in self.entries.items() if e.count == self._lowest_count]
        return self._evict()

    def top(self, n: int) -> list[tuple[K, TopEntry]]:
        return sorted(self.entries.items(), key=lambda kv: -kv[1].count)[:n]


@dataclass(frozen=True)
class Example:
    confidence: float
    source: str
    message: str
    label: str
    tier: str
    gold: str | None


class LowestConfidence:
    """The n lowest-confidence rows, one per (source, template), so one noisy template cannot
    fill the whole review list."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rows: dict[tuple[str, str], Example] = {}
        self._ceiling = float("inf")

    def offer(self, key: tuple[str, str], example: Example) -> None:
        if example.confidence >= self._ceiling and len(self.rows) >= self.n:
            return
        held = self.rows.get(key)
        if held is not None and held.confidence <= example.confidence:
            return
        self.rows[key] = example
        if len(self.rows) > self.n:
            worst = max(self.rows, key=lambda k: self.rows[k].confidence)
            del self.rows[worst]
        if len(self.rows) >= self.n:
            self._ceiling = max(e.confidence for e in self.rows.values())

    def sorted(self) -> list[Example]:
        return sorted(self.rows.values(), key=lambda e: (e.confidence, e.label, e.message))


@dataclass(frozen=True)
class Columns:
    """Where each field is in the CSV; None when the CSV does not have it."""

    message: int
    label: int
    source: int | None
    tier: int | None
    confidence: int | None
    error: int | None
    gold: int | None
    gold_name: str | None

    @classmethod
    def find(cls, header: list[str], path: Path, gold: str | None) -> Columns:
        missing = [c for c in ("log_message", "target_label") if c not in header]
        if missing:
            raise CsvInputError(
                f"{path}: missing column(s) {missing}; a report reads classified output, from "
                f"`logclass classify IN.csv -o OUT.csv` or the HTTP API's POST /classify (found {header})"
            )
        if gold is not None and gold not in header:
            raise CsvInputError(f"{path}: --gold column {gold!r} is not in the header {header}")
        # classify keeps the input's own target_label (the gold answer) as input_target_label.
        gold_name = gold or ("input_target_label" if "input_target_label" in header else None)

        def at(name: str | None) -> int | None:
            return header.index(name) if name is not None and name in header else None

        return cls(
            message=header.index("log_message"),
            label=header.index("target_label"),
            source=at("source"),
            tier=at("tier"),
            confidence=at("confidence"),
            error=at("error"),
            gold=at(gold_name),
            gold_name=gold_name,
        )


@dataclass
class ReportStats:
    path: Path
    columns: Columns
    top_n: int
    rows: int = 0
    malformed: int = 0
    bad_confidence: int = 0
    unlabelled: int = 0
    labels: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_LABELS))
    sources: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_SOURCES))
    tiers: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_TIERS))
    errors: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_ERRORS))
    source_labels: Counter[tuple[str, str]] = field(default_factory=Counter)
    label_tiers: Counter[tuple[str, str]] = field(default_factory=Counter)
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    gold_labels: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_LABELS))
    confidence: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = field(default_factory=dict)
    templates: dict[str, TopK[str]] = field(default_factory=dict)
    low: LowestConfidence = field(default_factory=lambda: LowestConfidence(25))
    # Per tier (keys capped with the tiers); rows with a gold answer and a confidence only.
    calibration: dict[str, CalibrationCounts] = field(default_factory=dict)
    # Gold rows with a confidence that is no claim: "tier none", "tier pending", "tier fallback", "error".
    not_calibrated: Counter[str] = field(default_factory=Counter)

    @property
    def has_tiers(self) -> bool:
        return self.columns.tier is not None

    @property
    def has_confidence(self) -> bool:
        return self.columns.confidence is not None

    @property
    def has_gold(self) -> bool:
        return self.columns.gold is not None

    def confidence_histogram(self, tier: str) -> np.ndarray[Any, np.dtype[np.int64]]:
        hist = self.confidence.get(tier)
        if hist is None:
            hist = self.confidence[tier] = np.zeros(CONFIDENCE_BINS, dtype=np.int64)
        return hist

    def add(self, row: list[str], template: str) -> None:
        c = self.columns
        label = self.labels.key(row[c.label].strip() or "(empty)")
        source = self.sources.key(row[c.source].strip() or NO_SOURCE) if c.source is not None else NO_SOURCE
        tier = self.tiers.key(row[c.tier].strip()) if c.tier is not None else ""
        self.rows += 1
        self.labels[label] += 1
        self.sources[source] += 1
        self.source_labels[source, label] += 1
        if c.tier is not None:
            self.tiers[tier] += 1
            self.label_tiers[label, tier] += 1
        if c.error is not None and row[c.error]:
            self.errors[self.errors.key(row[c.error].strip())] += 1
        gold = None
        answer = row[c.gold].strip() if c.gold is not None else ""
        if answer:
            gold = self.gold_labels.key(answer)
            self.gold_labels[gold] += 1
            self.confusion[gold, label] += 1
        elif c.gold is not None:
            # A partly labelled file: rows without an answer say nothing about right or wrong.
            self.unlabelled += 1
        top = self.templates.get(label)
        if top is None:
            top = self.templates[label] = TopK(self.top_n * TOPK_HEADROOM)
        message = row[c.message]
        top.add(template, message)
        if c.confidence is None:
            return
        try:
            confidence = float(row[c.confidence])
        except ValueError:
            self.bad_confidence += 1
            return
        if not 0.0 <= confidence <= 1.0:
            self.bad_confidence += 1
            return
        self.confidence_histogram(tier)[min(int(confidence * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)] += 1
        self.low.offer((source, template), Example(confidence, source, message, label, tier, gold))
        if answer:
            # The raw values, not the capped keys: two labels both folded into OTHER are no match.
            self._calibrate(row, tier, confidence, row[c.label].strip() == answer)

    def _calibrate(self, row: list[str], tier: str, confidence: float, correct: bool) -> None:
        c = self.columns
        raw_tier = row[c.tier].strip() if c.tier is not None else ""
        if raw_tier in NO_CLAIM_TIERS:
            self.not_calibrated[f"tier {raw_tier}"] += 1
            return
        if c.error is not None and row[c.error].strip():
            self.not_calibrated["error"] += 1
            return
        counts = self.calibration.get(tier)
        if counts is None:
            counts = self.calibration[tier] = CalibrationCounts()
        counts.add(confidence, correct)

    def calibration_overall(self) -> CalibrationCounts:
        total = CalibrationCounts()
        for counts in self.calibration.values():
            total.merge(counts)
        return total


def _rows(reader: Iterator[list[str]], path: Path) -> Iterator[list[str]]:
    try:
        for row in reader:
            if row:
                yield row
    except csv.Error as exc:
        line = getattr(reader, "line_num", "?")
        raise CsvInputError(f"{path}: line {line}: unreadable CSV ({exc})") from exc


def collect(
    path: Path,
    template_of: Callable[[str], str],
    *,
    gold: str | None = None,
    top_n: int = 10,
    examples: int = 25,
    encoding: str = "utf-8",
    progress: bool = True,
) -> ReportStats:
    """Reads ``path`` once; ``template_of`` masks a message into its template."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise CsvInputError(f"cannot read {path}: {exc.strerror}") from exc
    size = os.fstat(raw.fileno()).st_size
    bar: tqdm[Any] = tqdm(total=size, unit="B", unit_scale=True, desc="reading", disable=not progress)
    memo: dict[str, str] = {}
    with raw, bar:
        text = io.TextIOWrapper(
            io.BufferedReader(CountingReader(raw, bar)), encoding=encoding, errors="replace", newline=""
        )
        reader = csv.reader(text, skipinitialspace=True)
        header = read_header(reader, path)
        columns = Columns.find(header, path, gold)
        stats = ReportStats(path, columns, top_n, low=LowestConfidence(examples))
        width = len(header)
        for row in _rows(reader, path):
            if len(row) != width:
                # A row of the wrong width cannot be trusted column by column.
                stats.malformed += 1
                continue
            message = row[columns.message]
            template = memo.get(message)
            if template is None:
                if len(memo) >= TEMPLATE_MEMO:
                    memo.clear()
                template = memo[message] = template_of(message)
            stats.add(row, template)
    return stats
