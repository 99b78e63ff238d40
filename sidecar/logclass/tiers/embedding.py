"""Embedding tier: the bundle's trained head over its features (sentence embeddings of the
message, hashed n-grams of its template, or both), with calibrated probabilities and an
out-of-distribution check.

A record is answered when its calibrated probability reaches the label's ``min_confidence`` and
it lies near the training templates of the label it got (similarity at least the threshold
calibrated at training time); anything else escalates, so a line unlike the training data goes
to the LLM (or gets the fallback label) instead of a confident guess.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from logclass.config import ConfigError
from logclass.core.bundle import BundleError, ModelBundle
from logclass.core.decision import Item, Outcome, Verdict
from logclass.encoders import MODEL_NAME, Encoder
from logclass.encoders.probe import check_encoder
from logclass.tiers.base import Scheduling, Tier
from logclass.tiers.features import Featurizer

# Word pieces per character of a log line, roughly; only relative costs matter (the engine
# learns seconds per unit), so this just makes long lines count for more than short ones.
_TOKENS_PER_CHAR = 0.3


class EmbeddingTier(Tier):
    name = "embedding"

    def __init__(
        self,
        bundle: ModelBundle,
        encoder: Encoder | None,
        min_confidence: float,
        label_min_confidence: Mapping[str, float] | None,
        out_of_distribution: bool,
    ) -> None:
        head = bundle.head
        self.featurizer = Featurizer(bundle.features, encoder)
        if self.featurizer.dimension != head.dimension:
            raise BundleError(
                f"the classifier expects {head.dimension}-dimensional features but this encoder gives "
                f"{self.featurizer.dimension}; retrain the bundle with this embedding model"
            )
        self.head = head
        if encoder is not None and bundle.features.uses_embedding:
            check_encoder(encoder, bundle.encoder_probe(), bundle.encoder_backend, bundle.name)
        self.prototypes = bundle.prototypes if out_of_distribution else None
        overrides = dict(label_min_confidence or {})
        unknown = sorted(set(overrides) - set(bundle.labels))
        if unknown:
            raise ConfigError(
                f"embedding.label_min_confidence names labels the model does not have: {unknown}; "
                f"known labels: {list(bundle.labels)}"
            )
        self._thresholds = np.array([overrides.get(label, min_confidence) for label in head.labels], np.float32)
        # The encoder is not thread-safe and saturates its intra-op threads: one batch at a time,
        # on a thread of its own, so the event loop stays free for the fast lane.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding")
        self._encoded = encoder is not None and bundle.features.uses_embedding
        self._max_tokens = encoder.max_seq_length if encoder is not None else 1
        # Where the features are computed (model info): the encoder's device, or the CPU for
        # hashed n-grams alone.
        self.device = encoder.device if self._encoded and encoder is not None else "cpu"
        parts = [f"{MODEL_NAME} via {encoder.name}"] if self._encoded and encoder is not None else []
        if bundle.features.uses_lexical:
            parts.append("hashed word and character n-grams")
        self.features = " + ".join(parts)

    def decide_sync(self, messages: Sequence[str], templates: Sequence[str]) -> list[Outcome]:
        """The outcomes for ``messages`` (with their templates) on the calling thread."""
        if not messages:
            return []
        x = self.featurizer.transform(messages, templates)
        proba = self.head.predict_proba(x)
        best = proba.argmax(axis=1)
        confidence = proba[np.arange(len(best)), best]
        sure = confidence >= self._thresholds[best]
        if self.prototypes is not None:
            sure &= self.prototypes.nearest(x, best) >= self.prototypes.thresholds[best]
        return [
            Verdict(self.head.labels[index], round(float(conf), 4)) if ok else None
            for index, conf, ok in zip(best.tolist(), confidence.tolist(), sure.tolist(), strict=True)
        ]

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        messages = [item.record.message for item in items]
        templates = [item.template for item in items]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decide_sync, messages, templates)

    def scheduling(self) -> Scheduling:
        # Two batches in flight on the one encoder thread: the next is already queued there while
        # the event loop hands out the last one's answers, so the encoder never idles between
        # batches. bench-lanes, 2 cores, onnx-int8, cold records/s against raw encode: 0.85 with
        # one in flight, 1.02 with two. The price: a new template may wait behind two batches.
        return Scheduling(batched=True, concurrency=2)

    def cost(self, item: Item) -> float:
        if not self._encoded:
            return 1.0
        return 2.0 + min(self._max_tokens, len(item.record.message) * _TOKENS_PER_CHAR)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def labels(self) -> list[str]:
        return list(self.head.labels)
