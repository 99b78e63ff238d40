"""`logclass train`: labelled CSV -> a complete model bundle.

1. The label set is every label of the CSV (descriptions and examples from ``--labels``).
2. The configured regex rules are kept where their labels are in the set and they agree with
   the training rows; the bundle carries the kept ones.
3. Every training template not decided by a rule goes into the memory with its label counts.
4. The head learns the distinct templates the embedding tier is responsible for (not decided by
   a rule, source not routed past it). Features (embedding, lexical, both) and C are chosen by
   cross-validation over templates; its probabilities are calibrated on the out-of-fold scores,
   and the out-of-distribution thresholds come from the same folds.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logclass.config.settings import Settings, StoreSettings
from logclass.core.bundle import ModelBundle, write_bundle
from logclass.core.decision import LogRecord
from logclass.core.hashing import sha256_file
from logclass.core.head import LinearHead, Matrix, Prototypes
from logclass.core.labels_file import LabelsFile, load_labels_file
from logclass.core.labelset import LabelExample, LabelSet
from logclass.core.manifest import (
    CalibrationInfo,
    CvResult,
    Ece,
    EmbeddingInfo,
    FeatureSpec,
    HeadRecipe,
    HoldoutMetrics,
    MemoryProfile,
    MetricsInfo,
    OodInfo,
    Profile,
    RuleCheckInfo,
    SplitInfo,
    TrainingInfo,
)
from logclass.core.masking import Mask
from logclass.core.rules_file import RulesFile
from logclass.core.typed import parse
from logclass.encoders import MODEL_NAME, Encoder, weights_sha256
from logclass.encoders.probe import make_probe
from logclass.engine.pipeline import masker_of
from logclass.errors import LogclassError
from logclass.tiers import registry
from logclass.tiers.features import Featurizer, combine
from logclass.tiers.memory import MemoryTier
from logclass.tiers.regex import RegexTier, load_rules
from logclass.tiers.registry import build_encoder
from logclass.training import head as head_mod
from logclass.training.bootstrap.review import corrected_rows
from logclass.training.dataset import LabelledRow, load_labelled_csv, load_teacher_jsonl, row_hashes
from logclass.training.memory import FOREIGN_RULE, RuleCheck, check_rules, rule_spec, template_counts
from logclass.training.report import format_class_report
from logclass.training.splits import holdout_split, stratified_folds
from logclass.training.store_lessons import is_store_url, read_store_lessons

DEFAULT_CS = (0.1, 1.0, 10.0, 100.0)
FEATURE_CHOICES = ("auto", "embedding", "lexical", "both")
# Labels with this few rows are flagged in the output and the manifest: kept and learnt (the
# memory knows their templates), but nothing can measure how well.
FEW_ROWS = 2


class TrainError(LogclassError):
    pass


@dataclass
class TrainOptions:
    test_size: float = 0.0
    random_state: int = 42
    folds: int = 5
    split: str = "stratified"  # or "random", the seed notebook's unstratified split
    cs: Sequence[float] = DEFAULT_CS
    features: str = "auto"
    name: str | None = None
    # LLM teacher files (JSONL), learnt memories, a shared store's lessons (a redis:// or
    # rediss:// URL), or bootstrap review files (CSV, their corrected rows): their rows join the
    # training side only, so the hold-out stays the labelled CSV's and measures against human
    # labels.
    extra: Sequence[Path | str] = ()
    labels_file: Path | None = None
    memory_min_rows: int = 1
    memory_min_purity: float = 0.9
    ood_quantile: float = 0.0
    # Fixed out-of-distribution thresholds by label instead of the quantile over the folds
    # (distill keeps the current bundle's: see fixed_thresholds). None: computed.
    ood_thresholds: Mapping[str, float] | None = None
    rule_min_precision: float = 0.9
    examples_per_label: int = 1
    min_confidence: float = 0.5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check(options: TrainOptions) -> None:
    if options.split not in ("stratified", "random"):
        raise TrainError(f"split must be 'stratified' or 'random', not {options.split!r}")
    if not 0 <= options.test_size < 1:
        raise TrainError("--test-size must be in [0, 1)")
    if options.features not in FEATURE_CHOICES:
        raise TrainError(f"--features must be one of {', '.join(FEATURE_CHOICES)}, not {options.features!r}")
    if not 0 <= options.ood_quantile < 1:
        raise TrainError("--ood-quantile must be in [0, 1)")
    if options.folds < 2:
        raise TrainError("--folds must be at least 2")
    if options.memory_min_rows < 1:
        raise TrainError("--memory-min-rows must be at least 1")
    if not 0 < options.memory_min_purity <= 1:
        raise TrainError("--memory-min-purity must be in (0, 1]: the share of a template's rows its top label needs")


def read_extra(
    sources: Sequence[Path | str], known: set[str], store: StoreSettings
) -> tuple[list[LabelledRow], dict[str, str]]:
    """Teacher rows with labels the CSV also has (a label seen only in teacher output has no
    human row to be checked against), and each source's name and SHA-256 for the manifest."""
    out: list[LabelledRow] = []
    digests: dict[str, str] = {}
    for source in sources:
        if is_store_url(str(source)):
            name, digest, rows = read_store_lessons(str(source), store)
        elif Path(source).suffix.lower() == ".csv":
            # A review file of `logclass bootstrap`: its corrected rows.
            path = Path(source)
            name, digest, rows = path.name, sha256_file(path), corrected_rows(path)
        else:
            path = Path(source)
            name, digest, rows = path.name, sha256_file(path), load_teacher_jsonl(path)
        kept = [r for r in rows if r.label in known]
        dropped = len(rows) - len(kept)
        log(
            f"      extra {name}: {len(kept)} teacher rows added to training"
            + (f", {dropped} with labels not in the CSV left out" if dropped else "")
        )
        out += kept
        digests[name] = digest
    return out, digests


def _routed_past(routes: dict[str, str], tiers: Sequence[str]) -> set[str]:
    """Sources routed past the tier of the trained head: its training rows would teach nothing."""
    head = registry.trained_tier("head")
    position = tiers.index(head) if head in tiers else len(tiers)
    return {source for source, tier in routes.items() if tier in tiers and tiers.index(tier) > position}


def _examples(
    spec: LabelsFile, items: dict[tuple[str, str], list[LabelledRow]], options: TrainOptions
) -> tuple[LabelExample, ...]:
    """The labels file's examples, else per label the first row of its largest templates."""
    k = options.examples_per_label
    if spec.examples is not None:
        return spec.examples
    by_label: dict[str, list[list[LabelledRow]]] = {}
    for (_, label), rows in items.items():
        by_label.setdefault(label, []).append(rows)
    picked = []
    for label in sorted(by_label):
        for rows in sorted(by_label[label], key=len, reverse=True)[:k]:
            picked.append(LabelExample(rows[0].source, rows[0].message, label))
    return tuple(picked)


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 4)


def _holdout_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    if not gold:
        return {}
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    return {
        "rows": len(gold),
        "accuracy": round(float(accuracy_score(gold, pred)), 4),
        "macro_f1": round(float(f1_score(gold, pred, average="macro", zero_division=0)), 4),
        "per_class": {
            label: {k: round(float(v), 4) for k, v in values.items()}
            for label, values in report.items()
            if isinstance(values, dict) and label not in ("macro avg", "weighted avg")
        },
    }


@dataclass
class Selection:
    """What the trained tiers learn from the training side."""

    rules: RuleCheck
    regex: RegexTier
    routes: dict[str, str]
    routed_past: set[str]
    memory: dict[str, dict[str, int]]
    # One item per (template, label) of the rows the head is responsible for, with its rows.
    items: dict[tuple[str, str], list[LabelledRow]]


@dataclass
class HeadFit:
    head: LinearHead
    prototypes: Prototypes
    features: FeatureSpec
    chosen: head_mod.Candidate
    candidates: list[head_mod.Candidate]
    calibration: head_mod.Calibration
    encoder: Encoder | None


def select(
    rows: Sequence[LabelledRow], labels: set[str], settings: Settings, spec: LabelsFile, options: TrainOptions
) -> Selection:
    tiers = list(settings.router.tiers)
    rules_on = registry.trained_tier("rules") in tiers
    configured = registry.rules_file(settings, None)
    rules = check_rules(load_rules(configured) if rules_on else [], rows, labels, options.rule_min_precision)
    regex = RegexTier(rules.kept)
    log(f"[2/6] regex: {len(rules.kept)} rules kept" + _dropped_note(rules.dropped))
    configured_routes = settings.router.source_routes
    routes = dict(configured_routes if configured_routes is not None else spec.source_routes or {})
    routed_past = _routed_past(routes, tiers)
    masker = masker_of(settings.templates)
    model_rows = [r for r in rows if regex.match(LogRecord(r.source, r.message)) is None]
    templates = [masker.template(r.message) for r in model_rows]
    memory = template_counts(zip(templates, (r.label for r in model_rows), strict=True))
    log(f"[3/6] memory: {len(memory)} templates from {len(model_rows)} rows not decided by a rule")
    items: dict[tuple[str, str], list[LabelledRow]] = {}
    for row, template in zip(model_rows, templates, strict=True):
        if row.source not in routed_past:
            items.setdefault((template, row.label), []).append(row)
    return Selection(rules, regex, routes, routed_past, memory, items)


def candidate_features(
    kinds: Sequence[str], messages: Sequence[str], templates: Sequence[str], encoder: Encoder | None, progress: bool
) -> dict[str, Matrix]:
    """Each candidate's feature matrix; the embeddings, the costly part, are computed once."""
    embedded = lexical = None
    if any(FeatureSpec(k).uses_embedding for k in kinds):
        embedded = Featurizer(FeatureSpec("embedding"), encoder).transform(messages, templates, progress=progress)
    if any(FeatureSpec(k).uses_lexical for k in kinds):
        lexical = Featurizer(FeatureSpec("lexical"), None).lexical(templates)
    return {kind: combine(kind, embedded, lexical) for kind in kinds}


def fixed_thresholds(recorded: Mapping[str, float], labels: Sequence[str]) -> np.ndarray:
    """``recorded`` per label; a label it lacks gets the strictest recorded one, since no
    measurement on its own templates says it may be looser."""
    strictest = max(recorded.values(), default=0.0)
    return np.array([recorded.get(label, strictest) for label in labels], dtype=np.float32)


def fit_head(
    items: dict[tuple[str, str], list[LabelledRow]],
    settings: Settings,
    options: TrainOptions,
    encoder: Encoder | None,
    progress: bool,
) -> HeadFit:
    keys = list(items)
    y = np.array([label for _, label in keys])
    head_labels = sorted(set(y.tolist()))
    if len(head_labels) < 2:
        raise TrainError(
            f"the embedding tier gets {len(keys)} template(s) with {len(head_labels)} label(s) after the rules and "
            f"source routes; it needs at least two labels"
        )
    kinds = head_mod.CANDIDATE_ORDER if options.features == "auto" else (options.features,)
    needs_encoder = any(FeatureSpec(k).uses_embedding for k in kinds)
    encoder = (encoder or build_encoder(settings.embedding)) if needs_encoder else None
    where = f" with {MODEL_NAME}, {encoder.name}" if encoder is not None else ""
    log(f"[4/6] features of {len(keys)} distinct templates ({', '.join(kinds)}){where}")
    messages = [items[k][0].message for k in keys]
    features = candidate_features(kinds, messages, [t for t, _ in keys], encoder, progress)
    folds = stratified_folds(y.tolist(), options.folds, options.random_state)
    log(f"[5/6] choosing features and C by {options.folds}-fold CV over templates")
    chosen, candidates, oof = head_mod.choose(features, y, folds, options.cs)
    x = features[chosen.kind]
    calibration = head_mod.calibrate(oof, y, head_labels)
    thresholds = (
        head_mod.ood_thresholds(x, y, folds, oof, head_labels, options.ood_quantile)
        if options.ood_thresholds is None
        else fixed_thresholds(options.ood_thresholds, head_labels)
    )
    head = head_mod.build_head(head_mod.fit(x, y.tolist(), chosen.c), calibration.temperature)
    log(
        f"      chose {chosen.kind} features, C={chosen.c:g} (CV macro-F1 {chosen.score.mean:.4f}); "
        f"temperature {calibration.temperature:.3f} (out-of-fold ECE {calibration.ece_before} -> "
        f"{calibration.ece_after}); out-of-distribution similarity thresholds "
        + ", ".join(f"{label} {t:.3f}" for label, t in zip(head.labels, thresholds.tolist(), strict=True))
    )
    features_used = FeatureSpec(chosen.kind)
    return HeadFit(
        head,
        head_mod.build_prototypes(x, y, head, thresholds),
        features_used,
        chosen,
        candidates,
        calibration,
        encoder if features_used.uses_embedding else None,
    )


def holdout(
    rows: Sequence[LabelledRow], selection: Selection, fitted: HeadFit, settings: Settings, options: TrainOptions
) -> dict[str, Any]:
    """Hold-out rows the trained tiers answer (not a rule's, not routed past): memory, then the
    head's best label."""
    masker = masker_of(settings.templates)
    memory = MemoryTier(selection.memory, min_rows=options.memory_min_rows, min_purity=options.memory_min_purity)
    held = [
        r
        for r in rows
        if r.source not in selection.routed_past and selection.regex.match(LogRecord(r.source, r.message)) is None
    ]
    if not held:
        return {}
    templates = [masker.template(r.message) for r in held]
    remembered = [memory.decide_now(LogRecord(r.source, r.message), t) for r, t in zip(held, templates, strict=True)]
    unknown = [i for i, verdict in enumerate(remembered) if verdict is None]
    pred = [verdict.label if verdict is not None else "" for verdict in remembered]
    if unknown:
        x = Featurizer(fitted.features, fitted.encoder).transform(
            [held[i].message for i in unknown], [templates[i] for i in unknown]
        )
        for i, best in zip(unknown, fitted.head.predict_proba(x).argmax(axis=1).tolist(), strict=True):
            pred[i] = fitted.head.labels[best]
    metrics = _holdout_metrics([r.label for r in held], pred)
    log(f"hold-out ({len(held)} rows for the trained tiers; memory, then the head):")
    log(format_class_report(metrics))
    return metrics


def train(
    data: str | Path,
    out: str | Path,
    settings: Settings,
    options: TrainOptions | None = None,
    encoder: Encoder | None = None,
    progress: bool = True,
) -> ModelBundle:
    options = options or TrainOptions()
    _check(options)
    data, out = Path(data), Path(out)
    started = time.monotonic()
    spec = load_labels_file(options.labels_file)
    rows = load_labelled_csv(data)
    # The labels file's order first (the LLM's prompt lists labels in this order), then the rest.
    label_names = list(spec.descriptions) + sorted({r.label for r in rows} - set(spec.descriptions))
    counts = Counter(r.label for r in rows)
    log(f"[1/6] read {len(rows)} rows, {len(counts)} labels from {data}")
    few = {label: n for label, n in sorted(counts.items()) if n <= FEW_ROWS}
    for label, n in few.items():
        log(f"warning: label {label!r} has only {n} row(s): kept (the memory knows its templates); add examples")
    train_idx, test_idx = holdout_split(
        [r.label for r in rows], options.test_size, options.random_state, options.split == "stratified"
    )
    extra_rows, extra_files = read_extra(options.extra, set(counts), settings.store)
    train_rows = [rows[i] for i in train_idx] + extra_rows
    selection = select(train_rows, set(label_names), settings, spec, options)
    fitted = fit_head(selection.items, settings, options, encoder, progress)
    metrics = holdout([rows[i] for i in test_idx], selection, fitted, settings, options)
    chosen, calibration, head = fitted.chosen, fitted.calibration, fitted.head
    training = TrainingInfo(
        data_file=data.name,
        data_sha256=sha256_file(data),
        rows_total=len(rows),
        rows_training_side=len(train_rows),
        extra_files=extra_files,
        label_counts=dict(sorted(counts.items())),
        few_row_labels=few,
        rules=RuleCheckInfo(tuple(r.name for r in selection.rules.kept), selection.rules.dropped),
        memory_templates=len(selection.memory),
        head_templates=len(selection.items),
        split=SplitInfo(options.split, options.test_size, options.random_state),
        # With features and C, the recipe `logclass distill` retrains with.
        folds=options.folds,
        rule_min_precision=options.rule_min_precision,
        classifier=HeadRecipe("logistic_regression", chosen.c, "balanced"),
        features=chosen.kind,
        cv_macro_f1={c.kind: CvResult(c.c, _finite(c.score.mean), c.by_c) for c in fitted.candidates},
        calibration=CalibrationInfo(
            "temperature", round(calibration.temperature, 4), Ece(calibration.ece_before, calibration.ece_after)
        ),
        ood=OodInfo(
            quantile=options.ood_quantile,
            fixed=options.ood_thresholds is not None,
            thresholds=dict(zip(head.labels, fitted.prototypes.thresholds.round(4).tolist(), strict=True)),
        ),
    )
    probe, embedding = None, None
    if fitted.encoder is not None:
        probe = make_probe(fitted.encoder, [template for template, _ in selection.items])
        embedding = EmbeddingInfo(
            model=MODEL_NAME,
            backend=fitted.encoder.backend,
            precision=fitted.encoder.precision,
            dimension=fitted.encoder.dimension,
            weights_sha256=weights_sha256(fitted.encoder.model_path),
            max_seq_length=settings.embedding.max_seq_length,
        )
    bundle = write_bundle(
        out,
        name=options.name or out.name,
        head=head,
        features=fitted.features,
        prototypes=fitted.prototypes,
        label_set=LabelSet(tuple(label_names), dict(spec.descriptions), _examples(spec, selection.items, options)),
        profile=Profile(
            source_routes=selection.routes,
            min_confidence=spec.min_confidence if spec.min_confidence is not None else options.min_confidence,
            label_min_confidence=spec.label_min_confidence or {},
            memory=MemoryProfile(options.memory_min_rows, options.memory_min_purity),
        ),
        memory=selection.memory,
        rules=RulesFile(tuple(rule_spec(r) for r in selection.rules.kept))
        if registry.trained_tier("rules") in settings.router.tiers
        else None,
        masks=tuple(Mask(m.name, m.pattern, m.replace) for m in settings.templates.masks),
        training_rows=row_hashes(train_rows),
        training=training,
        metrics=MetricsInfo(parse(HoldoutMetrics, metrics)),
        embedding=embedding,
        encoder_probe=probe,
    )
    log(f"[6/6] wrote bundle {bundle.version} to {out} in {time.monotonic() - started:.1f}s")
    return bundle


def _dropped_note(dropped: Mapping[str, str]) -> str:
    """The dropped rules, those of another taxonomy as one count (a user's own labels make every
    rule of the shipped set one of them: listing each says nothing)."""
    foreign = [name for name, why in dropped.items() if why.endswith(FOREIGN_RULE)]
    rest = {name: why for name, why in dropped.items() if name not in foreign}
    parts = ([f"{len(foreign)} whose labels are not in the training labels left out"] if foreign else []) + (
        [f"dropped {rest}"] if rest else []
    )
    return f", {'; '.join(parts)}" if parts else ""
