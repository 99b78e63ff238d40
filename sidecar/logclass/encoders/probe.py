"""Does this encoder give the embeddings the bundle's head was trained on?

A bundle keeps a few training templates and their embeddings from the training encoder. At load
the serving encoder embeds the same texts; if its vectors are not the same to within rounding,
the head's calibrated probabilities and out-of-distribution thresholds no longer hold, and the
bundle is refused with the fix instead of serving quietly worse labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from logclass.encoders.base import Encoder
from logclass.encoders.model import family
from logclass.errors import LogclassError

PROBE_TEXTS = 64
# torch fp32, torch fp16 and onnx fp32 agree to above 0.9999 mean cosine; int8 against fp32 is
# about 0.99 (make bench-encoder): the thresholds sit between the two.
MIN_MEAN_COSINE = 0.999
MIN_COSINE = 0.99


class EncoderMismatchError(LogclassError):
    pass


@dataclass(frozen=True)
class Agreement:
    mean: float
    lowest: float

    @property
    def ok(self) -> bool:
        return self.mean >= MIN_MEAN_COSINE and self.lowest >= MIN_COSINE


def probe_texts(templates: Sequence[str], count: int = PROBE_TEXTS) -> list[str]:
    """``count`` distinct texts spread evenly over the length range, so long and short lines,
    where quantisation and truncation differ most, are both probed."""
    distinct = sorted(set(templates), key=lambda t: (len(t), t))
    if len(distinct) <= count:
        return distinct
    picks = np.linspace(0, len(distinct) - 1, count).round().astype(int)
    return [distinct[i] for i in dict.fromkeys(picks.tolist())]


def make_probe(encoder: Encoder, templates: Sequence[str]) -> tuple[list[str], np.ndarray]:
    texts = probe_texts(templates)
    return texts, encoder.encode(texts)


def agreement(encoder: Encoder, texts: Sequence[str], reference: np.ndarray) -> Agreement:
    if reference.shape != (len(texts), encoder.dimension):
        return Agreement(-1.0, -1.0)
    cosines = (encoder.encode(texts) * reference).sum(axis=1)
    return Agreement(float(cosines.mean()), float(cosines.min()))


def check_encoder(
    encoder: Encoder, probe: tuple[list[str], np.ndarray] | None, trained_with: str, bundle: str
) -> Agreement | None:
    """Raise when ``encoder`` does not reproduce the probe; without a probe (older bundles), only
    the backend family is compared."""
    fix = (
        f"set embedding.backend: auto (or {trained_with}), or retrain the bundle with "
        f"embedding.backend: {encoder.backend}"
    )
    if probe is None:
        if family(encoder.backend) != family(trained_with):
            raise EncoderMismatchError(
                f"model bundle {bundle} was trained on {trained_with} embeddings and records no probe to check "
                f"{encoder.backend} against: {fix}"
            )
        return None
    texts, reference = probe
    found = agreement(encoder, texts, reference)
    if not found.ok:
        raise EncoderMismatchError(
            f"model bundle {bundle} was trained on {trained_with} embeddings; {encoder.name} embeds its "
            f"{len(texts)} probe texts at mean cosine {found.mean:.4f} (lowest {found.lowest:.4f}) to them, "
            f"under the {MIN_MEAN_COSINE} (lowest {MIN_COSINE}) that keeps its thresholds valid: {fix}"
        )
    return found
