"""The classifier head's maths: a linear model's calibrated probabilities, and the
out-of-distribution check against the training templates' prototypes. Plain numpy: what a model
bundle's arrays are evaluated with at serving time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from logclass.core.manifest import BundleError

# A feature matrix: a dense ndarray of embeddings, or a scipy CSR matrix when lexical features
# are part of it (scipy has no type stubs, hence Any).
Matrix: TypeAlias = Any


@dataclass(frozen=True)
class LinearHead:
    """Multinomial (or binary) logistic regression evaluated with numpy, with the temperature
    fitted on cross-validated predictions so that its probabilities are calibrated."""

    labels: tuple[str, ...]
    coef: np.ndarray  # (n_labels, dim) or (1, dim) when there are two labels
    intercept: np.ndarray
    temperature: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.labels)
        rows = 1 if n == 2 else n
        if n < 2 or self.coef.ndim != 2 or self.coef.shape[0] != rows or self.intercept.shape != (rows,):
            raise BundleError(
                f"classifier shapes do not fit {n} labels: coef {self.coef.shape}, intercept {self.intercept.shape}"
            )
        if not self.temperature > 0:
            raise BundleError(f"calibration temperature must be positive, not {self.temperature}")

    @property
    def dimension(self) -> int:
        return int(self.coef.shape[1])

    def scores(self, x: Matrix) -> np.ndarray:
        return np.asarray(x @ self.coef.T + self.intercept, dtype=np.float64)

    def predict_proba(self, x: Matrix, temperature: float | None = None) -> np.ndarray:
        scores = self.scores(x) / (self.temperature if temperature is None else temperature)
        return softmax_scores(scores, len(self.labels))


def softmax_scores(scores: np.ndarray, n_labels: int) -> np.ndarray:
    """Probabilities from decision scores (one column for two labels, as scikit-learn gives)."""
    if n_labels == 2:
        # expit, not 1 / (1 + exp(-s)): exp overflows (a RuntimeWarning) for scores below -709.
        p1 = np.asarray(expit(scores[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    scores = scores - scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


@dataclass(frozen=True)
class Prototypes:
    """The training templates in feature space: a record far from every one of its predicted
    label (similarity under that label's threshold) is out of distribution."""

    vectors: Matrix  # one unit-length row per training template
    label_index: np.ndarray  # index into the head's labels, per row
    thresholds: np.ndarray  # per head label: lowest similarity still in distribution

    def nearest(self, x: Matrix, predicted: np.ndarray) -> np.ndarray:
        """Per row of ``x``: the highest similarity to a prototype of its predicted label."""
        product = x @ self.vectors.T
        sims = np.asarray(product.toarray() if sp.issparse(product) else product)
        same = self.label_index[None, :] == predicted[:, None]
        return np.asarray(np.where(same, sims, -np.inf).max(axis=1, initial=-np.inf))
