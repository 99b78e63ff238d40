"""Embedding tier: MiniLM sentence embeddings + the bundle's logistic-regression head."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sidecar.core.bundle import LinearHead
from sidecar.core.decision import Item, Outcome, Verdict
from sidecar.tiers.base import Tier
from sidecar.tiers.encoder import Encoder

# Word pieces per character of a log line, roughly; only relative costs matter (the engine
# learns seconds per unit), so this just makes long lines count for more than short ones.
_TOKENS_PER_CHAR = 0.3


class EmbeddingTier(Tier):
    name = "embedding"

    def __init__(
        self,
        encoder: Encoder,
        head: LinearHead,
        min_confidence: float,
        label_min_confidence: Mapping[str, float] | None = None,
    ) -> None:
        if encoder.dimension != head.dimension:
            raise ValueError(
                f"the classifier expects {head.dimension}-dimensional embeddings but the encoder gives "
                f"{encoder.dimension}; retrain the bundle with this embedding model"
            )
        self.encoder = encoder
        self.head = head
        overrides = dict(label_min_confidence or {})
        unknown = sorted(set(overrides) - set(head.labels))
        if unknown:
            raise ValueError(
                f"embedding.label_min_confidence names labels the model does not have: {unknown}; "
                f"known labels: {list(head.labels)}"
            )
        self._thresholds = np.array([overrides.get(label, min_confidence) for label in head.labels], np.float32)
        # The encoder is not thread-safe and saturates its intra-op threads: one batch at a time,
        # on a thread of its own, so the event loop stays free for the fast lane.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding")
        self._max_tokens = encoder.max_seq_length

    def probabilities(self, messages: Sequence[str]) -> np.ndarray:
        return self.head.predict_proba(self.encoder.encode(messages))

    def decide_sync(self, messages: Sequence[str]) -> list[Outcome]:
        """The outcomes for ``messages`` on the calling thread (training and evaluation use it)."""
        if not messages:
            return []
        proba = self.probabilities(messages)
        best = proba.argmax(axis=1)
        confidence = proba[np.arange(len(best)), best]
        out: list[Outcome] = []
        for index, conf in zip(best.tolist(), confidence.tolist(), strict=True):
            if conf < self._thresholds[index]:
                out.append(None)
            else:
                out.append(Verdict(self.head.labels[index], round(float(conf), 4)))
        return out

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        messages = [item.record.message for item in items]
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.decide_sync, messages)

    def cost(self, item: Item) -> float:
        return 2.0 + min(self._max_tokens, len(item.record.message) * _TOKENS_PER_CHAR)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def labels(self) -> list[str]:
        return list(self.head.labels)
