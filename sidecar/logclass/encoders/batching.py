"""Forward passes planned by token budget: sorted by length, each batch padded to its own longest
text, and holding as many texts as fit in the budget of padded tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan_batches(lengths: Sequence[int], max_tokens: int, max_texts: int) -> list[np.ndarray]:
    """Index arrays into ``lengths``, one per forward pass, shortest texts first. A batch holds
    at least one text (a text longer than the budget goes alone), at most ``max_texts``, and
    otherwise as many as keep ``len(batch) * longest`` within ``max_tokens``."""
    if max_tokens < 1 or max_texts < 1:
        raise ValueError("max_tokens and max_texts must be at least 1")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        # Sorted ascending, so the last text taken is the longest: the padded size is its length
        # times the count.
        while end < len(order) and end - start < max_texts and (end - start + 1) * lengths[order[end]] <= max_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded to the longest row, and the attention mask."""
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask
