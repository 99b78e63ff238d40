"""The trained head: features and C chosen by cross-validation, calibrated, with the
out-of-distribution thresholds its prototypes need.

Items are the distinct templates of the training rows (one row each): at run time the memory
tier answers every template seen in training, so the head only ever meets new templates, and
cross-validation over templates measures exactly that.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from logclass.core.head import LinearHead, Matrix, Prototypes, softmax_scores
from logclass.core.manifest import FEATURE_KINDS
from logclass.training.splits import ALWAYS_TRAIN

# Tried in this order; the 1-SE rule takes the first within one standard error of the best,
# so the order is by size: 384 embedding dimensions, then 2 x 16384 hashed n-grams, then both.
CANDIDATE_ORDER = FEATURE_KINDS
# Regularisation when there is nothing to cross-validate on: scikit-learn's default.
FALLBACK_C = 1.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class CvScore:
    mean: float
    error: float  # standard error over the folds


@dataclass
class Candidate:
    kind: str
    c: float
    score: CvScore
    by_c: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Fitted:
    """A fitted logistic regression as plain arrays (scores of the full feature width)."""

    classes: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def scores(self, x: Matrix) -> np.ndarray:
        return np.asarray(x @ self.coef.T + self.intercept)


def fit(x: Matrix, y: Sequence[str], c: float) -> Fitted:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    # Hashed n-grams use a few thousand of their 32768 columns: fitting on those alone makes
    # each solver step several times cheaper, and unused columns get weight 0 either way.
    columns = np.unique(x.indices) if sp.issparse(x) else None
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
    with warnings.catch_warnings():
        # Separable templates at large C never converge exactly; the CV score judges the fit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[:, columns] if columns is not None else x, list(y))
    coef = np.asarray(clf.coef_, dtype=np.float64)
    if columns is not None:
        full = np.zeros((coef.shape[0], x.shape[1]))
        full[:, columns] = coef
        coef = full
    return Fitted(np.asarray(clf.classes_), coef, np.asarray(clf.intercept_, dtype=np.float64))


def out_of_fold_scores(x: Matrix, y: np.ndarray, folds: np.ndarray, c: float) -> tuple[np.ndarray, list[float]]:
    """Decision scores of every item from a head fitted without its fold (rows of
    ``ALWAYS_TRAIN`` items stay NaN), and the macro-F1 of each fold."""
    from sklearn.metrics import f1_score

    labels = np.unique(y)
    width = 1 if len(labels) == 2 else len(labels)
    scores = np.full((len(y), width), np.nan)
    per_fold = []
    for fold in sorted(set(folds.tolist()) - {ALWAYS_TRAIN}):
        test = folds == fold
        clf = fit(x[~test], y[~test], c)
        raw = clf.scores(x[test])
        # A fold's head may lack a label whose items all sit in this fold: map its columns.
        if width == 1:
            scores[test] = raw
        else:
            columns = np.searchsorted(labels, clf.classes)
            block = np.full((int(test.sum()), width), -1e9)
            block[:, columns] = raw if raw.shape[1] == len(columns) else np.hstack([-raw, raw])
            scores[test] = block
        predicted = labels[_argmax(scores[test], len(labels))]
        per_fold.append(float(f1_score(y[test], predicted, average="macro", zero_division=0)))
    return scores, per_fold


def _argmax(scores: np.ndarray, n_labels: int) -> np.ndarray:
    if n_labels == 2:
        return (scores[:, 0] > 0).astype(int)
    return np.asarray(scores.argmax(axis=1))


def _summary(per_fold: Sequence[float]) -> CvScore:
    values = np.asarray(per_fold, dtype=float)
    return CvScore(float(values.mean()), float(values.std() / np.sqrt(len(values))))


def one_se(options: Sequence[Any], score: Callable[[Any], CvScore]) -> Any:
    """The first option (the simplest, by the caller's order) within one standard error of the
    best: among models the CV cannot tell apart, the simpler generalises better."""
    best = max(options, key=lambda o: score(o).mean)
    bar = score(best).mean - score(best).error
    return next(o for o in options if score(o).mean >= bar)


def choose(
    features: dict[str, Matrix], y: np.ndarray, folds: np.ndarray, cs: Sequence[float]
) -> tuple[Candidate, list[Candidate], np.ndarray]:
    """The feature kind and C by CV macro-F1 (each label weighs as much), every candidate tried,
    and the chosen one's out-of-fold scores for calibration."""
    kinds = [k for k in CANDIDATE_ORDER if k in features]
    if (folds == ALWAYS_TRAIN).all():
        log(f"note: no label has two templates to cross-validate on; using {kinds[0]} features and C={FALLBACK_C:g}")
        width = 1 if len(np.unique(y)) == 2 else len(np.unique(y))
        only = Candidate(kinds[0], FALLBACK_C, CvScore(float("nan"), 0.0))
        return only, [only], np.full((len(y), width), np.nan)
    candidates: list[Candidate] = []
    oof: dict[tuple[str, float], np.ndarray] = {}
    for kind in kinds:
        by_c: dict[float, CvScore] = {}
        for c in cs:
            oof[(kind, c)], per_fold = out_of_fold_scores(features[kind], y, folds, c)
            by_c[c] = _summary(per_fold)
            log(f"  {kind:<9} C={c:<5g} CV macro-F1 {by_c[c].mean:.4f} ± {by_c[c].error:.4f}")
        chosen_c = one_se(sorted(cs), by_c.__getitem__)
        means = {str(c): round(s.mean, 4) for c, s in by_c.items()}
        candidates.append(Candidate(kind, float(chosen_c), by_c[chosen_c], means))
    chosen = one_se(candidates, lambda cand: cand.score)
    return chosen, candidates, oof[(chosen.kind, chosen.c)]


def expected_calibration_error(proba: np.ndarray, target: np.ndarray, bins: int = 10) -> float:
    """Bin-count weighted |accuracy - mean confidence| over equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == target
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total / len(target))


@dataclass
class Calibration:
    temperature: float
    ece_before: float | None = None  # out-of-fold, temperature 1
    ece_after: float | None = None


def calibrate(scores: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> Calibration:
    """The temperature minimising the negative log-likelihood of the out-of-fold scores: the
    head's probabilities then mean what they say on templates it was not fitted on."""
    from scipy.optimize import minimize_scalar

    held = ~np.isnan(scores).any(axis=1)
    if held.sum() < 2:
        return Calibration(1.0)
    target = np.searchsorted(np.asarray(labels), y[held])
    logits = scores[held]

    def nll(log_t: float) -> float:
        proba = softmax_scores(logits / np.exp(log_t), len(labels))
        return float(-np.log(np.clip(proba[np.arange(len(target)), target], 1e-12, None)).mean())

    # Wide bounds: with many labels and strong regularisation the scores are close together, and
    # only a small temperature makes correct out-of-fold answers confident.
    result = minimize_scalar(nll, bounds=(np.log(1e-3), np.log(100.0)), method="bounded")
    temp = float(np.exp(result.x))
    before = expected_calibration_error(softmax_scores(logits.copy(), len(labels)), target)
    after = expected_calibration_error(softmax_scores(logits / temp, len(labels)), target)
    return Calibration(temp, round(before, 4), round(after, 4))


def ood_thresholds(
    x: Matrix, y: np.ndarray, folds: np.ndarray, scores: np.ndarray, labels: Sequence[str], quantile: float
) -> np.ndarray:
    """Per label: the ``quantile`` of the similarity between correctly predicted held-out
    templates and their nearest training template of that label (from the other folds). Below
    it, a template is farther from the label's examples than nearly every one the head got
    right. Labels with too few such templates use the quantile over all labels, and none is
    stricter than that."""
    label_arr = np.asarray(labels)
    held = ~np.isnan(scores).any(axis=1)
    predicted = np.full(len(y), -1)
    predicted[held] = _argmax(scores[held], len(labels))
    sims: dict[int, list[float]] = {i: [] for i in range(len(labels))}
    for fold in sorted(set(folds.tolist()) - {ALWAYS_TRAIN}):
        test = np.flatnonzero((folds == fold) & held)
        train = np.flatnonzero(folds != fold)
        if len(test) == 0 or len(train) == 0:
            continue
        similarity = x[test] @ x[train].T
        similarity = similarity.toarray() if sp.issparse(similarity) else np.asarray(similarity)
        train_labels = np.searchsorted(label_arr, y[train])
        for row, index in enumerate(test):
            guess = predicted[index]
            same = train_labels == guess
            if label_arr[guess] == y[index] and same.any():
                sims[int(guess)].append(float(similarity[row][same].max()))
    everything = [s for values in sims.values() for s in values]
    overall = float(np.quantile(everything, quantile)) if everything else 0.0
    # Never above the overall threshold: a label whose training templates are near-copies of
    # each other would otherwise call every new wording of it out of distribution.
    return np.array(
        [min(overall, float(np.quantile(v, quantile))) if len(v) >= 10 else overall for v in sims.values()],
        dtype=np.float32,
    )


def build_head(clf: Fitted, temp: float) -> LinearHead:
    return LinearHead(
        tuple(str(label) for label in clf.classes),
        np.asarray(clf.coef, dtype=np.float32),
        np.asarray(clf.intercept, dtype=np.float32),
        temp,
    )


def build_prototypes(x: Matrix, y: np.ndarray, head: LinearHead, thresholds: np.ndarray) -> Prototypes:
    index = np.searchsorted(np.asarray(head.labels), y)
    vectors: Matrix = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, np.float32)
    return Prototypes(vectors, index.astype(np.int64), thresholds)
