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
