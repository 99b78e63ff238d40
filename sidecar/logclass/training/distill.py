"""`logclass distill`: retrain with the LLM teacher file, keep the new bundle only if it is no worse.

1. The original CSV is split once by ``holdout_split``: by default with the test size, seed and
   split kind the current bundle's manifest records for the same CSV (so neither bundle was
   fitted on the hold-out), else as given. It is the split `logclass train` makes with those
   options, so the new bundle's training side leaves the hold-out out.
2. A new bundle is trained by ``train`` on the training side plus the teacher rows (``--extra``),
   into a staging directory beside ``out``, with the current bundle's recorded recipe (features,
   C, folds, out-of-distribution thresholds, memory and confidence settings from its manifest),
   so the added rows are the only
   difference: re-choosing features and C by CV moved the seed's hold-out macro-F1 by itself
   (0.9944 -> 0.9938 with a teacher file of correct labels). ``retune`` re-chooses them as
   ``train`` does.
3. The current and the new bundle classify the same hold-out rows end to end through the
   pipeline's bundle tiers (regex, memory, embedding; the LLM tier is left out, so the comparison
   is of the bundles and costs no model calls), scored by macro-F1 (``evaluate.metrics``). Rows of
   sources routed straight to the LLM (the seed's LegacyCRM) are not scored: no bundle answers
   them, and as fallbacks they would only pull both macro-F1s down.
4. The staging directory becomes ``out`` only if new >= current - tolerance; else it is removed
   and ``DistillRefused`` names both scores. On acceptance ``link`` (a symlink a sidecar's
   ``model.bundle`` names) is atomically repointed at ``out``, so a reload picks the new bundle up.

Caveat: rows of the hold-out the current bundle was trained on (it may come from a plain
`logclass train` with no hold-out) inflate its score; they are counted and reported, and make the
comparison stricter, never looser.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from logclass.config.settings import Settings, TierName
from logclass.core.bundle import BundleError, ModelBundle, load_bundle
from logclass.core.hashing import sha256_file
from logclass.encoders import Encoder
from logclass.engine.blocking import BlockingEngine
from logclass.engine.pipeline import build_engine, source_routes, unbounded_lanes
from logclass.errors import LogclassError
from logclass.tiers import registry
from logclass.training.dataset import LabelledRow, load_labelled_csv, load_teacher_jsonl, row_hashes
from logclass.training.evaluate import classify_rows, metrics
from logclass.training.splits import holdout_split
from logclass.training.train import TrainOptions, log, train

REPORT = "distill.json"


class DistillError(LogclassError):
    pass


class DistillRefused(LogclassError):
    """The new bundle scored lower than the current one on the hold-out; nothing was written."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Holdout:
    """The split of the original CSV whose test side both bundles are scored on."""

    test_size: float
    random_state: int
    split: str = "stratified"


# Used when the current bundle records no split of the same CSV.
DEFAULT_HOLDOUT = Holdout(test_size=0.2, random_state=42)


@dataclass
class DistillOptions:
    # Everything else `train` takes (features, folds, labels file, ...); its test_size,
    # random_state and split are replaced by the hold-out's.
    train: TrainOptions = field(default_factory=TrainOptions)
    # None: the split the current bundle was trained with when it was trained on this CSV (so its
    # hold-out is unseen by both bundles), else DEFAULT_HOLDOUT.
    holdout: Holdout | None = None
    # How far macro-F1 may drop and the new bundle still be kept (0: it must not drop at all).
    tolerance: float = 0.0
    # False: retrain with the current bundle's recorded features, C and settings (``train``'s
    # features and cs are replaced). True: re-choose features and C by CV, as ``train`` does.
    retune: bool = False
    # A symlink repointed at ``out`` when the new bundle is accepted (None: no link).
    link: Path | None = None


def recipe(current: ModelBundle, base: TrainOptions) -> TrainOptions:
    """``base`` with what the current bundle's manifest records of how it was trained."""
    training = current.manifest.training
    if training is None:
        raise DistillError(
            f"{current.version}'s manifest records no features or C to retrain with; pass --retune to choose them by CV"
        )
    profile = current.manifest.profile
    return dataclasses.replace(
        base,
        features=training.features,
        cs=(float(training.classifier.C),),
        folds=training.folds if training.folds is not None else base.folds,
        rule_min_precision=(
            training.rule_min_precision if training.rule_min_precision is not None else base.rule_min_precision
        ),
        ood_quantile=float(training.ood.quantile),
        # The current head's out-of-distribution thresholds, not new ones: at quantile 0 the
        # threshold is the least similar template the head got right, so one far-off teacher row
        # (a Loghub line among the seed) dropped it from 0.545 to 0.165 and let the head answer
        # 78 % of the Loghub mix and two seed hold-out rows it had left to the LLM, wrongly.
        ood_thresholds=dict(
            zip(current.head.labels, current.prototypes.thresholds.astype(float).tolist(), strict=True)
        ),
        memory_min_rows=profile.memory.min_rows,
        memory_min_purity=float(profile.memory.min_purity),
        min_confidence=float(profile.min_confidence),
    )


def _check_link(link: Path) -> None:
    if link.exists() and not link.is_symlink():
        raise DistillError(f"--link {link} exists and is not a symlink; remove it or name a symlink path")
    if not link.parent.is_dir():
        raise DistillError(f"--link {link}: no directory {link.parent}")


def point_link(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target`` in one step: a reader sees the old or the new bundle,
    never a missing path (a new link beside it, then ``os.replace`` over the old one)."""
    temp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    temp.unlink(missing_ok=True)
    temp.symlink_to(target.resolve(), target_is_directory=True)
    try:
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def resolve_holdout(current: ModelBundle, data: Path, options: DistillOptions) -> Holdout:
    if options.holdout is not None:
        return options.holdout
    training = current.manifest.training
    if training is not None and training.data_sha256 == sha256_file(data) and training.split.test_size > 0:
        split = training.split
        log(f"distill: the hold-out {current.version} was trained without (its manifest's split of {data.name})")
        return Holdout(float(split.test_size), split.random_state, split.kind)
    log(
        f"distill: {current.version} records no hold-out of {data.name}; using test size "
        f"{DEFAULT_HOLDOUT.test_size:g}, seed {DEFAULT_HOLDOUT.random_state} (its score may be inflated)"
    )
    return DEFAULT_HOLDOUT


def _check(data: Path, teachers: Sequence[Path], model: Path, out: Path, options: DistillOptions) -> None:
    if not teachers:
        raise DistillError("--teacher is required: the LLM teacher file (llm.teacher_file) to distill from")
    if options.holdout is not None and not 0 < options.holdout.test_size < 1:
        raise DistillError(
            f"--holdout-size must be in (0, 1), not {options.holdout.test_size}: the comparison needs a hold-out"
        )
    if options.holdout is not None and options.holdout.split not in ("stratified", "random"):
        raise DistillError(f"--split must be 'stratified' or 'random', not {options.holdout.split!r}")
    if not 0 <= options.tolerance < 1:
        raise DistillError(f"--tolerance must be in [0, 1), not {options.tolerance}")
    if list(options.train.extra):
        raise DistillError("pass teacher files as --teacher, not as training extras")
    if out.exists():
        raise DistillError(f"--out {out} exists: distill writes a new bundle directory and never overwrites one")
    if out.resolve() == model.resolve():
        raise DistillError("--out must differ from --model")
    if not data.is_file():
        raise DistillError(f"--data {data}: no such file")
    if options.link is not None:
        _check_link(options.link)


def _load_current(model: Path) -> ModelBundle:
    try:
        return load_bundle(model)
    except BundleError as exc:
        raise DistillError(f"--model {model}: not a loadable model bundle ({exc})") from exc
    except OSError as exc:
        raise DistillError(f"--model {model}: cannot read the bundle ({exc})") from exc


def _bundle_tiers(settings: Settings) -> tuple[TierName, ...]:
    # The comparison runs the tiers a bundle drives (the registry's trained ones), not the LLM.
    tiers = tuple(t for t in settings.router.tiers if t in registry.bundle_tiers())
    if not tiers:
        raise DistillError(f"router.tiers {list(settings.router.tiers)} has no bundle tier to compare")
    return tiers


def routed_away(settings: Settings, bundle: ModelBundle) -> set[str]:
    """Sources ``bundle`` (or the config) sends straight to a tier outside the bundle tiers: their
    records are the LLM's, whatever the bundle, so they are not scored."""
    tiers = _bundle_tiers(settings)
    return {source for source, tier in source_routes(settings, bundle).items() if tier not in tiers}


def _scoring_settings(settings: Settings, bundle: ModelBundle) -> Settings:
    tiers = _bundle_tiers(settings)
    # Every kept route's tier is one of ``tiers``, so a TierName.
    kept = cast(
        dict[str, TierName], {source: tier for source, tier in source_routes(settings, bundle).items() if tier in tiers}
    )
    router = dataclasses.replace(settings.router, tiers=tiers, source_routes=kept)
    return unbounded_lanes(dataclasses.replace(settings, router=router))


def predict(
    bundle: ModelBundle, rows: Sequence[LabelledRow], settings: Settings, encoder: Encoder | None, progress: bool
) -> list[str]:
    """``bundle``'s labels for ``rows``, end to end through the bundle tiers of ``settings``."""
    scoring = _scoring_settings(settings, bundle)
    engine = BlockingEngine(build_engine(scoring, bundle=bundle, encoder=encoder), settings=scoring)
    try:
        return [d.label for d in classify_rows(engine, rows, progress=progress)]
    finally:
        engine.close()


# Hold-out rows the two bundles disagree on, listed in the report (the first ones).
CHANGED_SHOWN = 10


def changed_rows(rows: Sequence[LabelledRow], old: Sequence[str], new: Sequence[str]) -> dict[str, Any]:
    """The rows behind a macro-F1 difference: one borderline row moving is a different story from
    many, and the refusal message says which it was."""
    moved = [(r, a, b) for r, a, b in zip(rows, old, new, strict=True) if a != b]
    return {
        "now_wrong": sum(1 for r, a, b in moved if a == r.label),
        "now_right": sum(1 for r, a, b in moved if b == r.label),
        "other": sum(1 for r, a, b in moved if r.label not in (a, b)),
        "rows": [
            {"source": r.source, "message": r.message, "label": r.label, "current": a, "new": b}
            for r, a, b in moved[:CHANGED_SHOWN]
        ],
    }


def distill(
    data: str | Path,
    teachers: Sequence[str | Path],
    model: str | Path,
    out: str | Path,
    settings: Settings,
    options: DistillOptions | None = None,
    encoder: Encoder | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The comparison report; the new bundle is at ``out`` when it returns. Raises DistillRefused
    (nothing written) when the new bundle's hold-out macro-F1 is lower than tolerance allows."""
    options = options or DistillOptions()
    data, model, out = Path(data), Path(model), Path(out)
    teacher_paths = [Path(t) for t in teachers]
    _check(data, teacher_paths, model, out, options)
    current = _load_current(model)
    # A bad teacher file fails here, before any training.
    taught = [row for path in teacher_paths for row in load_teacher_jsonl(path)]
    split = resolve_holdout(current, data, options)
    base = options.train if options.retune else recipe(current, options.train)
    topts = dataclasses.replace(base, test_size=split.test_size, random_state=split.random_state, split=split.split)
    how = "features and C chosen by CV" if options.retune else f"{current.version}'s recipe"
    log(f"distill: retraining with {how}: features {topts.features}, C {', '.join(f'{c:g}' for c in topts.cs)}")
    rows = load_labelled_csv(data)
    _, test_idx = holdout_split(
        [r.label for r in rows], topts.test_size, topts.random_state, topts.split == "stratified"
    )
    held = [rows[i] for i in test_idx]
    if not held:
        raise DistillError(f"{data}: the hold-out ({topts.test_size:g} of {len(rows)} rows) is empty; add rows")
    seen = set(current.training_rows().tolist())
    leaked = sum(1 for h in row_hashes(held).tolist() if h in seen)
    log(
        f"distill: hold-out {len(held)} of {len(rows)} rows of {data} "
        f"({topts.split}, test size {topts.test_size:g}, seed {topts.random_state})"
    )
    if leaked:
        log(f"warning: {leaked} hold-out rows are in {current.version}'s training rows: its score is inflated")
    held_messages = {(r.source, r.message) for r in held}
    overlap = sum(1 for r in taught if (r.source, r.message) in held_messages)
    if overlap:
        # Kept (train reads the teacher files whole): the new bundle's score is inflated by them.
        log(f"warning: {overlap} teacher rows are hold-out messages: the new bundle's score is inflated")

    staging = out.parent / f".{out.name}.distill-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    log(f"distill: training the new bundle on the training side + {', '.join(map(str, teacher_paths))}")
    try:
        new = train(
            data,
            staging,
            settings,
            dataclasses.replace(topts, extra=teacher_paths, name=topts.name or out.name),
            encoder=encoder,
            progress=progress,
        )
        away = routed_away(settings, current) | routed_away(settings, new)
        scored = [r for r in held if r.source not in away]
        if not scored:
            raise DistillError(f"every hold-out row's source is routed past the bundle tiers ({sorted(away)})")
        if away:
            log(
                f"distill: {len(held) - len(scored)} hold-out rows of sources routed to the LLM "
                f"({', '.join(sorted(away))}) are not scored"
            )
        log(f"distill: scoring the current bundle {current.version} on {len(scored)} hold-out rows")
        old_labels = predict(current, scored, settings, encoder, progress)
        log(f"distill: scoring the new bundle {new.version} on the same rows")
        new_labels = predict(new, scored, settings, encoder, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    gold = [r.label for r in scored]
    old_metrics, new_metrics = metrics(gold, old_labels), metrics(gold, new_labels)
    changed = changed_rows(scored, old_labels, new_labels)
    old_f1, new_f1 = old_metrics["macro_f1"], new_metrics["macro_f1"]
    accepted = new_f1 >= old_f1 - options.tolerance
    new_training = new.manifest.training
    assert new_training is not None  # train records it in every bundle it writes
    report: dict[str, Any] = {
        "data": data.name,
        "data_sha256": sha256_file(data),
        "teacher_files": {p.name: sha256_file(p) for p in teacher_paths},
        "holdout": {
            "rows": len(held),
            "split": topts.split,
            "test_size": topts.test_size,
            "random_state": topts.random_state,
            "rows_in_current_training": leaked,
            "teacher_rows_in_holdout": overlap,
            "rows_scored": len(scored),
            "sources_not_scored": sorted(away),
        },
        "tiers": list(_bundle_tiers(settings)),
        "tolerance": options.tolerance,
        "recipe": {
            "retuned": options.retune,
            "features": new_training.features,
            "C": new_training.classifier.C,
            "folds": topts.folds,
        },
        "current": {"version": current.version, "path": str(model), **old_metrics},
        "new": {"version": new.version, **new_metrics},
        "changed": changed,
        "accepted": accepted,
    }
    comparison = (
        f"hold-out macro-F1: current {current.version} {old_f1:.4f}, new {new_f1:.4f} "
        f"(accuracy {old_metrics['accuracy']:.4f} -> {new_metrics['accuracy']:.4f}; tolerance {options.tolerance:g}); "
        f"{changed['now_wrong']} hold-out rows now wrong, {changed['now_right']} now right, "
        f"{changed['other']} wrong either way"
    )
    log(f"distill: {comparison}")
    if not accepted:
        shutil.rmtree(staging, ignore_errors=True)
        raise DistillRefused(f"refused: the new bundle is worse; {comparison}; nothing written to {out}", report)
    # Beside the manifest, outside its file list: the bundle loads and verifies as train wrote it.
    (staging / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    staging.rename(out)
    log(f"distill: accepted; wrote {out} ({new.version})")
    if options.link is not None:
        point_link(options.link, out)
        report["link"] = str(options.link)
        log(f"distill: {options.link} -> {out.resolve()}")
    return report
