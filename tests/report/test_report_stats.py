"""The bounded summaries behind the report, against exact counts and scikit-learn."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sklearn.metrics import precision_recall_fscore_support

from logclass.jobs.report.scores import accuracy, class_scores
from logclass.jobs.report.stats import OTHER, CappedCounter, Example, LowestConfidence, TopK


def test_top_k_finds_heavy_hitters_with_honest_bounds() -> None:
    rng = random.Random(7)
    # 5 heavy templates among 20,000 one-offs, shuffled: far more keys than the table holds.
    stream = [f"heavy{i}" for i in range(5) for _ in range(2000 - 300 * i)]
    stream += [f"rare{i}" for i in range(20_000)]
    rng.shuffle(stream)
    exact = Counter(stream)
    top: TopK[str] = TopK(50)
    for key in stream:
        top.add(key, example=key)
    assert len(top.entries) == 50
    found = [key for key, _ in top.top(5)]
    assert found == [f"heavy{i}" for i in range(5)]
    for key, entry in top.entries.items():
        # Space-saving's guarantee: count - error <= true count <= count.
        assert entry.count - entry.error <= exact[key] <= entry.count
        assert entry.example == key


def test_lowest_confidence_keeps_one_row_per_template() -> None:
    low = LowestConfidence(3)
    for i, conf in enumerate([0.9, 0.2, 0.25, 0.1, 0.8, 0.15, 0.05]):
        template = "same" if i in (3, 5) else f"t{i}"
        low.offer(("src", template), Example(conf, "src", f"m{i}", "L", "embedding", None))
    kept = low.sorted()
    assert [e.confidence for e in kept] == [0.05, 0.1, 0.2]
    assert [e.message for e in kept] == ["m6", "m3", "m1"]  # "same" appears once, at its lowest


def test_capped_counter_folds_overflow_into_other() -> None:
    counter = CappedCounter(2)
    for name in ["a", "b", "c", "a", "d"]:
        counter[counter.key(name)] += 1
    assert counter == {"a": 2, "b": 1, OTHER: 2}


def test_class_scores_match_scikit_learn() -> None:
    rng = random.Random(3)
    labels = ["A", "B", "C", "D"]
    gold = [rng.choice(labels[:3]) for _ in range(500)]  # D is predicted but never gold
    predicted = [g if rng.random() < 0.7 else rng.choice(labels) for g in gold]
    confusion = Counter(zip(gold, predicted, strict=True))
    ours = {s.label: s for s in class_scores(confusion)}
    names = sorted(set(gold) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=names, zero_division=0)
    for i, name in enumerate(names):
        assert ours[name].precision == pytest.approx(precision[i])
        assert ours[name].support == support[i]
        if support[i]:
            assert ours[name].recall == pytest.approx(recall[i])
            assert ours[name].f1 == pytest.approx(f1[i])
    assert ours["D"].recall is None  # no gold rows: undefined, not 0
    assert accuracy(confusion) == pytest.approx(sum(g == p for g, p in zip(gold, predicted, strict=True)) / 500)
