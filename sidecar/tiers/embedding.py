"""Embedding tier: MiniLM sentence embeddings + the bundle's logistic-regression head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sidecar.bundle import LinearHead
from sidecar.decision import LogRecord, Verdict
from sidecar.encoder import Encoder


class EmbeddingTier:
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

    def probabilities(self, messages: Sequence[str]) -> np.ndarray:
        return self.head.predict_proba(self.encoder.encode(messages))

    def decide(self, records: Sequence[LogRecord]) -> list[Verdict | None]:
        if not records:
            return []
        proba = self.probabilities([r.message for r in records])
        best = proba.argmax(axis=1)
        confidence = proba[np.arange(len(best)), best]
        out: list[Verdict | None] = []
        for index, conf in zip(best.tolist(), confidence.tolist(), strict=True):
            if conf < self._thresholds[index]:
                out.append(None)
            else:
                out.append(Verdict(self.head.labels[index], round(float(conf), 4)))
        return out

    def labels(self) -> list[str]:
        return list(self.head.labels)
