from __future__ import annotations

from collections import Counter

import numpy as np

from logclass.core.decision import LogRecord
from logclass.core.masking import TemplateMasker
from logclass.tiers.memory import MemoryTier
from logclass.training.splits import ALWAYS_TRAIN, holdout_split, stratified_folds

LABELS = ["a"] * 10 + ["b"] * 4 + ["c"] * 2 + ["d"]


def test_holdout_keeps_every_label_learnable_and_is_stratified_and_deterministic() -> None:
    for stratified in (True, False):
        train, test = holdout_split(LABELS, 0.5, 42, stratified)
        assert sorted(train.tolist() + test.tolist()) == list(range(len(LABELS)))
        assert {LABELS[i] for i in train} == {"a", "b", "c", "d"}
        again = holdout_split(LABELS, 0.5, 42, stratified)
        assert again[1].tolist() == test.tolist()
    train, test = holdout_split(LABELS, 0.5, 42)
    assert Counter(LABELS[i] for i in test) == {"a": 5, "b": 2, "c": 1}
    assert holdout_split(LABELS, 0.0, 42)[1].size == 0


def test_folds_never_hold_out_a_single_example() -> None:
    folds = stratified_folds(LABELS, 3, 0)
    assert folds[LABELS.index("d")] == ALWAYS_TRAIN
    for fold in range(3):
        train = {LABELS[i] for i in np.flatnonzero(folds != fold)}
        assert train == {"a", "b", "c", "d"}
    # Each label is spread evenly: "a" has 10 items over 3 folds.
    assert sorted(Counter(folds[:10].tolist()).values()) == [3, 3, 4]


def test_memory_tier_thresholds_and_confidence() -> None:
    counts = {"t <NUM>": {"x": 9, "y": 1}, "u": {"x": 1}, "v": {"x": 1, "y": 1}}
    tier = MemoryTier(counts, min_rows=1, min_purity=0.9)
    record = LogRecord("s", "t 5")
    verdict = tier.decide_now(record, "t <NUM>")
    assert verdict is not None and (verdict.label, verdict.confidence) == ("x", round(10 / 12, 4))
    assert tier.decide_now(record, "v") is None  # a tie is not pure
    assert len(MemoryTier(counts, min_rows=2, min_purity=0.9)) == 1  # "u" has one row
    assert len(MemoryTier(counts, min_rows=1, min_purity=0.95)) == 1  # 9/10 < 0.95
    # With masks of its own (the bundle's differ from the runtime's) it masks the message itself.
    own = MemoryTier(counts, min_rows=1, min_purity=0.9, masker=TemplateMasker.from_config([]))
    assert own.decide_now(LogRecord("s", "u"), "anything") is not None
