"""Hold-out splits and cross-validation folds that never take away a label's only examples."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

# Fold of an item that is always on the training side (its label has too few items to hold one out).
ALWAYS_TRAIN = -1


def _by_label(labels: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label].append(index)
    return dict(sorted(groups.items()))


def holdout_split(
    labels: Sequence[str], test_size: float, random_state: int, stratified: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indexes: about ``test_size`` of each label held out (of all rows when not
    ``stratified``), but never a label's last training row, so every label stays learnable."""
    n = len(labels)
    if test_size <= 0:
        return np.arange(n), np.array([], dtype=int)
    rng = np.random.default_rng(random_state)
    test: list[int] = []
    if stratified:
        for indexes in _by_label(labels).values():
            picked = rng.permutation(indexes)
            take = min(len(indexes) - 1, round(test_size * len(indexes)))
            test.extend(int(i) for i in picked[:take])
    else:
        candidates = [int(i) for i in rng.permutation(n)[: round(test_size * n)]]
        left = {label: len(ix) for label, ix in _by_label(labels).items()}
        for i in candidates:
            if left[labels[i]] > 1:
                left[labels[i]] -= 1
                test.append(i)
    test_set = set(test)
    return np.array([i for i in range(n) if i not in test_set], dtype=int), np.array(sorted(test_set), dtype=int)


def stratified_folds(labels: Sequence[str], folds: int, random_state: int) -> np.ndarray:
    """Fold number per item: each label's items dealt round-robin over the folds from a random
    start; a label with a single item is ``ALWAYS_TRAIN`` (held out, it could not be learnt)."""
    rng = np.random.default_rng(random_state)
    out = np.full(len(labels), ALWAYS_TRAIN, dtype=int)
    for indexes in _by_label(labels).values():
        if len(indexes) < 2:
            continue
        offset = int(rng.integers(folds))
        for position, index in enumerate(rng.permutation(indexes)):
            out[int(index)] = (position + offset) % folds
    return out
