"""`logclass train`: labelled CSV -> model bundle for the embedding tier.

The embedding tier only ever sees records the regex tier did not decide and whose source is not
routed past it, so it is trained on exactly those rows.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sidecar import config as config_mod
from sidecar.core.bundle import ModelBundle, sha256_file, write_bundle
from sidecar.core.decision import LogRecord
from sidecar.engine.pipeline import build_encoder, build_regex_tier
from sidecar.tiers.encoder import MODEL_NAME, Encoder, weights_sha256
from training.dataset import LabelledRow, load_labelled_csv, load_teacher_jsonl, row_hashes
from training.report import format_class_report

DEFAULT_CS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


class TrainError(ValueError):
    pass


@dataclass
class TrainOptions:
    test_size: float = 0.3
    random_state: int = 42
    folds: int = 5
    split: str = "stratified"  # or "random", the seed notebook's unstratified split
    min_class_rows: int = 0  # 0: folds + 2 (enough for a hold-out row and every CV fold)
    cs: Sequence[float] = DEFAULT_CS
    name: str | None = None
    # LLM teacher files (JSONL): their rows join the training side only, so the hold-out stays
    # the labelled CSV's and measures against human labels.
    extra: Sequence[Path] = ()


@dataclass
class Selection:
    rows: list[LabelledRow]
    excluded: dict[str, int] = field(default_factory=dict)
    rare_labels: dict[str, int] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def select_rows(rows: Sequence[LabelledRow], cfg: config_mod.Config, min_class_rows: int) -> Selection:
    """The rows the embedding tier is responsible for, minus labels too rare to learn."""
    tiers = cfg["router"]["tiers"]
    if "embedding" not in tiers:
        raise TrainError("router.tiers has no 'embedding' tier: there is nothing to train")
    emb_position = tiers.index("embedding")
    routed_past = {src for src, tier in cfg["router"]["source_routes"].items() if tiers.index(tier) > emb_position}
    regex = build_regex_tier(cfg) if "regex" in tiers else None
    kept: list[LabelledRow] = []
    excluded: Counter[str] = Counter()
    for row in rows:
        if row.source in routed_past:
            excluded["routed_past_embedding"] += 1
        elif regex is not None and regex.match(LogRecord(row.source, row.message)) is not None:
            excluded["decided_by_regex"] += 1
        else:
            kept.append(row)
    counts = Counter(r.label for r in kept)
    rare = {label: n for label, n in counts.items() if n < min_class_rows}
    if rare:
        for label, n in sorted(rare.items()):
            log(
                f"warning: label {label!r} has {n} row(s) for the embedding tier; at least {min_class_rows} are "
                "needed (a hold-out row plus one per CV fold). Its rows are left out: such records escalate to "
                "the LLM tier. Add examples or lower --min-class-rows."
            )
        kept = [r for r in kept if r.label not in rare]
        excluded["rare_label"] = sum(rare.values())
    if len({r.label for r in kept}) < 2:
        raise TrainError(
            f"only {len({r.label for r in kept})} label(s) left for the embedding tier after excluding "
            f"{dict(excluded)}; it needs at least two"
        )
    return Selection(kept, dict(excluded), rare)


def split_rows(labels: Sequence[str], options: TrainOptions) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indexes = np.arange(len(labels))
    if options.test_size <= 0:
        return indexes, np.array([], dtype=int)
    stratify = list(labels) if options.split == "stratified" else None
    train_idx, test_idx = train_test_split(
        indexes, test_size=options.test_size, random_state=options.random_state, stratify=stratify
    )
    return np.asarray(train_idx), np.asarray(test_idx)


def choose_c(x: np.ndarray, y: Sequence[str], options: TrainOptions) -> tuple[float, dict[str, float]]:
    """Regularisation strength by stratified k-fold CV on macro-F1 (rare labels weigh as much).

    Takes the smallest C whose score is within one standard error of the best (the "1-SE rule"):
    among models the CV cannot tell apart, the more regularised one generalises better to log
    lines unlike the training set.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = min(options.folds, min(Counter(y).values()))
    if folds < 2:
        log("note: too few rows per label for cross-validation; using C=1.0")
        return 1.0, {}
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=options.random_state)
    means: dict[float, float] = {}
    errors: dict[float, float] = {}
    for c in options.cs:
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
        fold_scores = cross_val_score(clf, x, y, cv=cv, scoring="f1_macro")
        means[c] = float(np.mean(fold_scores))
        errors[c] = float(np.std(fold_scores) / np.sqrt(len(fold_scores)))
        log(f"  C={c:<6g} {folds}-fold CV macro-F1 {means[c]:.4f} ± {errors[c]:.4f}")
    best = max(options.cs, key=lambda c: means[c])
    chosen = min(c for c in options.cs if means[c] >= means[best] - errors[best])
    return float(chosen), {str(c): round(m, 4) for c, m in means.items()}


def fit_head(x: np.ndarray, y: Sequence[str], c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    clf.fit(x, y)
    return clf


def holdout_metrics(clf: Any, x: np.ndarray, y: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    if len(y) == 0:
        return {}
    pred = clf.predict(x)
    report = classification_report(y, pred, output_dict=True, zero_division=0)
    return {
        "rows": len(y),
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "macro_f1": round(float(f1_score(y, pred, average="macro", zero_division=0)), 4),
        "per_class": {
            label: {k: round(float(v), 4) for k, v in values.items()}
            for label, values in report.items()
            if isinstance(values, dict) and label not in ("macro avg", "weighted avg")
        },
    }


def select_extra(paths: Sequence[Path], cfg: config_mod.Config, known: set[str]) -> list[LabelledRow]:
    """Teacher rows the embedding tier is responsible for, with labels the CSV also has (a label
    seen only in teacher output has no hold-out to be checked against)."""
    out: list[LabelledRow] = []
    for path in paths:
        selection = select_rows(load_teacher_jsonl(path), cfg, 0)
        kept = [r for r in selection.rows if r.label in known]
        dropped = len(selection.rows) - len(kept)
        log(
            f"      extra {path}: {len(kept)} teacher rows added to training"
            + (f", {dropped} with labels not in the CSV left out" if dropped else "")
            + (f" (excluded: {selection.excluded})" if selection.excluded else "")
        )
        out += kept
    return out


def train(
    data: str | Path,
    out: str | Path,
    cfg: config_mod.Config,
    options: TrainOptions | None = None,
    encoder: Encoder | None = None,
    progress: bool = True,
) -> ModelBundle:
    options = options or TrainOptions()
    if options.split not in ("stratified", "random"):
        raise TrainError(f"split must be 'stratified' or 'random', not {options.split!r}")
    if not 0 <= options.test_size < 1:
        raise TrainError("--test-size must be in [0, 1)")
    data, out = Path(data), Path(out)
    started = time.monotonic()
    rows = load_labelled_csv(data)
    min_rows = options.min_class_rows or options.folds + 2
    log(f"[1/5] read {len(rows)} rows, {len({r.label for r in rows})} labels from {data}")
    selection = select_rows(rows, cfg, min_rows)
    used = selection.rows
    log(f"[2/5] {len(used)} rows for the embedding tier (excluded: {selection.excluded or 'none'})")
    labels = [r.label for r in used]
    train_idx, test_idx = split_rows(labels, options)
    extra = select_extra(options.extra, cfg, set(labels))
    if extra:
        train_idx = np.concatenate([train_idx, np.arange(len(used), len(used) + len(extra))])
        used = used + extra
        labels = labels + [r.label for r in extra]
    encoder = encoder or build_encoder(cfg)
    log(f"[3/5] encoding {len(used)} messages with {MODEL_NAME} on {encoder.device}")
    x = encoder.encode([r.message for r in used], progress=progress)
    y = np.array(labels)
    log(f"[4/5] choosing C by cross-validation on {len(train_idx)} training rows")
    c, cv_scores = choose_c(x[train_idx], y[train_idx].tolist(), options)
    clf = fit_head(x[train_idx], y[train_idx].tolist(), c)
    metrics = holdout_metrics(clf, x[test_idx], y[test_idx].tolist())
    if metrics:
        log(f"hold-out ({len(test_idx)} rows, {options.split} split, random_state={options.random_state}), C={c:g}:")
        log(format_class_report(metrics))
    coef = np.asarray(clf.coef_, dtype=np.float32)
    intercept = np.asarray(clf.intercept_, dtype=np.float32)
    manifest_extra = {
        "embedding": {
            "model": MODEL_NAME,
            "dimension": encoder.dimension,
            "weights_sha256": weights_sha256(encoder.model_path),
            "max_seq_length": cfg["embedding"]["max_seq_length"],
        },
        "thresholds": {"min_confidence": cfg["embedding"]["min_confidence"]},
        "training": {
            "data_file": data.name,
            "data_sha256": sha256_file(data),
            "rows_total": len(rows),
            "rows_used": len(used),
            "extra_files": {str(Path(p).name): sha256_file(Path(p)) for p in options.extra},
            "excluded": selection.excluded,
            "rare_labels": selection.rare_labels,
            "label_counts": dict(sorted(Counter(labels).items())),
            "split": {
                "kind": options.split,
                "test_size": options.test_size,
                "random_state": options.random_state,
            },
            "classifier": {"type": "logistic_regression", "C": c, "class_weight": "balanced"},
            "cv_macro_f1": cv_scores,
        },
        "metrics": {"holdout": metrics},
    }
    train_rows = [used[i] for i in train_idx]
    bundle = write_bundle(
        out,
        name=options.name or out.name,
        labels=[str(label) for label in clf.classes_],
        coef=coef,
        intercept=intercept,
        training_rows=row_hashes(train_rows),
        manifest_extra=manifest_extra,
    )
    log(f"[5/5] wrote bundle {bundle.version} to {out} in {time.monotonic() - started:.1f}s")
    return bundle
