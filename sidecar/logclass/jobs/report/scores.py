"""Per-class precision and recall from a (gold, predicted) count table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ClassScore:
    label: str
    precision: float | None  # None: the label was never predicted
    recall: float | None  # None: the label never occurs in the gold column
    support: int
    predicted: int

    @property
    def f1(self) -> float | None:
        if self.precision is None or self.recall is None or self.precision + self.recall == 0:
            return None
        return 2 * self.precision * self.recall / (self.precision + self.recall)


def class_scores(confusion: Counter[tuple[str, str]]) -> list[ClassScore]:
    gold_totals: Counter[str] = Counter()
    predicted_totals: Counter[str] = Counter()
    for (gold, predicted), n in confusion.items():
        gold_totals[gold] += n
        predicted_totals[predicted] += n
    scores = []
    for label in sorted(set(gold_totals) | set(predicted_totals)):
        hits = confusion.get((label, label), 0)
        support, guessed = gold_totals[label], predicted_totals[label]
        scores.append(
            ClassScore(
                label, hits / guessed if guessed else None, hits / support if support else None, support, guessed
            )
        )
    return scores


def accuracy(confusion: Counter[tuple[str, str]]) -> float:
    total = sum(confusion.values())
    return sum(n for (gold, predicted), n in confusion.items() if gold == predicted) / total if total else 0.0


CALIBRATION_BINS = 10


def calibration_bin(confidence: float) -> int:
    """Equal-width bins over [0, 1], each closed below; 1.0 joins the top bin rather than a bin
    of its own, where regex matches would otherwise sit alone."""
    return min(int(confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1)


class CalibrationCounts:
    """Running sums per confidence bin, enough for the reliability diagram, ECE and the mean
    |confidence - correct| without keeping any row: memory is fixed whatever the input."""

    def __init__(self) -> None:
        # Plain lists: one scalar update per row is cheaper on a list than on a numpy array.
        self.rows = [0] * CALIBRATION_BINS
        self.confidence = [0.0] * CALIBRATION_BINS
        self.correct = [0] * CALIBRATION_BINS
        self.abs_error = [0.0] * CALIBRATION_BINS

    def add(self, confidence: float, correct: bool) -> None:
        b = calibration_bin(confidence)
        self.rows[b] += 1
        self.confidence[b] += confidence
        self.correct[b] += correct
        self.abs_error[b] += 1.0 - confidence if correct else confidence

    def merge(self, other: CalibrationCounts) -> None:
        for b in range(CALIBRATION_BINS):
            self.rows[b] += other.rows[b]
            self.confidence[b] += other.confidence[b]
            self.correct[b] += other.correct[b]
            self.abs_error[b] += other.abs_error[b]

    @property
    def total(self) -> int:
        return sum(self.rows)


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    rows: int
    confidence: float | None  # mean; None for an empty bin
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    rows: int
    bins: list[CalibrationBin]
    ece: float | None  # None: no rows to judge
    mean_abs_error: float | None


def calibration(counts: CalibrationCounts) -> Calibration:
    total = counts.total
    bins = [
        CalibrationBin(
            b / CALIBRATION_BINS,
            (b + 1) / CALIBRATION_BINS,
            n,
            counts.confidence[b] / n if n else None,
            counts.correct[b] / n if n else None,
        )
        for b, n in enumerate(counts.rows)
    ]
    if not total:
        return Calibration(0, bins, None, None)
    # sum_b (n_b / N) * |acc_b - conf_b| with n_b cancelled: the same ECE, with no division per bin.
    ece = sum(abs(counts.correct[b] - counts.confidence[b]) for b in range(CALIBRATION_BINS)) / total
    return Calibration(total, bins, ece, sum(counts.abs_error) / total)
