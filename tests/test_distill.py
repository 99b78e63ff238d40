"""`logclass distill`: keeps a new bundle only if hold-out macro-F1 did not drop."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import grpc
import pytest

from logclass import cli, config
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.core.bundle import load_bundle
from logclass.training.dataset import DatasetError, LabelledRow, load_labelled_csv
from logclass.training.distill import REPORT, DistillError, DistillOptions, DistillRefused, Holdout, distill
from logclass.training.splits import holdout_split
from logclass.training.train import TrainOptions, train
from tests.conftest import NO_LLM, free_port, start_server, wait_until
from tests.test_train import _subset, _write_csv

# Lexical features: no encoder, so each training takes seconds.
OPTIONS = TrainOptions(test_size=0.3, random_state=7, folds=3, features="lexical")
HOLDOUT = Holdout(OPTIONS.test_size, OPTIONS.random_state)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[LabelledRow], list[LabelledRow]]:
    """The original CSV, the current bundle (trained with the same hold-out), its training and hold-out rows."""
    root = tmp_path_factory.mktemp("distill")
    data = _write_csv(root / "small.csv", _subset(15, {}))
    cfg = config.load(environ=NO_LLM)
    train(data, root / "current", cfg, OPTIONS, progress=False)
    rows = load_labelled_csv(data)
    train_idx, test_idx = holdout_split([r.label for r in rows], OPTIONS.test_size, OPTIONS.random_state)
    return data, root / "current", [rows[i] for i in train_idx], [rows[i] for i in test_idx]


def _teacher(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = [json.dumps({"source": s, "example": m, "label": lab, "model": "test"}) for s, m, lab in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _options(tolerance: float = 0.0, holdout: Holdout | None = HOLDOUT) -> DistillOptions:
    # No features or folds: distill takes the current bundle's (lexical, 3 folds, its C).
    return DistillOptions(holdout=holdout, tolerance=tolerance)


def test_distill_accepts_a_teacher_file_that_does_not_hurt(
    tmp_path: Path, cfg: config.Settings, setup: tuple[Path, Path, list[LabelledRow], list[LabelledRow]]
) -> None:
    data, current, train_rows, held = setup
    # The LLM agreeing with the human labels of the training side: the same rows again.
    teacher = _teacher(tmp_path / "teacher.jsonl", [(r.source, r.message, r.label) for r in train_rows[:20]])
    # No hold-out given: the split the current bundle's manifest records for this CSV.
    report = distill(data, [teacher], current, tmp_path / "new", cfg, _options(holdout=None), progress=False)
    assert report["accepted"] and report["new"]["macro_f1"] >= report["current"]["macro_f1"]
    new = load_bundle(tmp_path / "new")
    assert new.manifest.training is not None
    assert new.manifest.training.extra_files == {"teacher.jsonl": report["teacher_files"]["teacher.jsonl"]}
    saved = json.loads((tmp_path / "new" / REPORT).read_text())
    messages = {(r.source, r.message) for r in held}
    assert saved["holdout"] == {
        "rows": report["holdout"]["rows"],
        "split": "stratified",
        "test_size": 0.3,
        "random_state": 7,
        # Exact duplicates of training rows (the seed has some) count as seen by the current bundle.
        "rows_in_current_training": sum(1 for r in held if r in set(train_rows)),
        "teacher_rows_in_holdout": sum(1 for r in train_rows[:20] if (r.source, r.message) in messages),
        "rows_scored": len(held),
        "sources_not_scored": [],
    }
    assert not list(tmp_path.glob(".new.distill-tmp"))


def _wrong_teacher(path: Path, held: list[LabelledRow]) -> Path:
    """Many rows of each hold-out template with another label: the new memory learns them wrong."""
    labels = sorted({r.label for r in held})
    wrong = []
    for row in held:
        other = labels[(labels.index(row.label) + 1) % len(labels)]
        wrong += [(row.source, row.message, other)] * 30
    return _teacher(path, wrong)


def test_distill_refuses_a_worse_bundle_and_writes_nothing(
    tmp_path: Path, cfg: config.Settings, setup: tuple[Path, Path, list[LabelledRow], list[LabelledRow]]
) -> None:
    data, current, _, held = setup
    teacher = _wrong_teacher(tmp_path / "wrong.jsonl", held)
    link = tmp_path / "live"
    link.symlink_to(current.resolve())
    options = dataclasses.replace(_options(), link=link)
    with pytest.raises(DistillRefused, match=r"refused: the new bundle is worse; hold-out macro-F1: current") as info:
        distill(data, [teacher], current, tmp_path / "new", cfg, options, progress=False)
    assert link.resolve() == current.resolve()  # a refused bundle is never installed
    link.unlink()
    report = info.value.report
    assert not report["accepted"] and report["new"]["macro_f1"] < report["current"]["macro_f1"]
    assert f"{report['current']['macro_f1']:.4f}" in str(info.value)
    assert f"{report['new']['macro_f1']:.4f}" in str(info.value)
    changed = report["changed"]
    assert changed["now_wrong"] > changed["now_right"] and f"{changed['now_wrong']} hold-out rows now wrong" in str(
        info.value
    )
    assert any(row["current"] == row["label"] != row["new"] for row in changed["rows"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.jsonl"]  # no bundle, no staging left

    # The CLI: exit 1, both scores on stderr, the comparison as JSON, still no bundle.
    out = tmp_path / "cli-new"
    code = cli.main(
        [
            "distill",
            *("--data", str(data), "--teacher", str(teacher), "--model", str(current), "--out", str(out)),
            *("--holdout-size", "0.3", "--random-state", "7"),
            *("--json", str(tmp_path / "cmp.json"), "--no-progress"),
        ]
    )
    assert code == cli.EXIT_REFUSED and not out.exists()
    assert json.loads((tmp_path / "cmp.json").read_text())["accepted"] is False

    # A tolerance wider than the drop lets the same bundle through.
    drop = report["current"]["macro_f1"] - report["new"]["macro_f1"]
    accepted = distill(data, [teacher], current, tmp_path / "tolerated", cfg, _options(drop + 0.01), progress=False)
    assert accepted["accepted"] and (tmp_path / "tolerated" / REPORT).is_file()


def test_distill_input_errors_are_clear(
    tmp_path: Path, cfg: config.Settings, setup: tuple[Path, Path, list[LabelledRow], list[LabelledRow]]
) -> None:
    data, current, train_rows, _ = setup
    good = _teacher(tmp_path / "t.jsonl", [(r.source, r.message, r.label) for r in train_rows[:3]])
    out = tmp_path / "new"
    with pytest.raises(DistillError, match="--teacher is required"):
        distill(data, [], current, out, cfg, _options(), progress=False)
    with pytest.raises(DistillError, match=r"--out .* exists"):
        distill(data, [good], current, tmp_path, cfg, _options(), progress=False)
    with pytest.raises(DistillError, match=r"--model .*: not a loadable model bundle"):
        distill(data, [good], tmp_path, out, cfg, _options(), progress=False)
    with pytest.raises(DistillError, match=r"--data .*: no such file"):
        distill(tmp_path / "none.csv", [good], current, out, cfg, _options(), progress=False)
    no_holdout = _options(holdout=Holdout(0.0, 1))
    with pytest.raises(DistillError, match=r"--holdout-size must be in \(0, 1\)"):
        distill(data, [good], current, out, cfg, no_holdout, progress=False)
    with pytest.raises(DistillError, match=r"--tolerance must be in \[0, 1\)"):
        distill(data, [good], current, out, cfg, _options(-0.1), progress=False)
    args = ["distill", "--data", str(data), "--teacher", str(good), "--model", str(current), "--out", str(out)]
    assert cli.main([*args, "--features", "lexical"]) == cli.EXIT_USAGE  # the recipe's features, or --retune
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a", "example": "b", "label": "c"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not a teacher entry"):
        distill(data, [bad], current, out, cfg, _options(), progress=False)
    assert not out.exists()


def test_distill_retrains_with_the_current_bundles_recipe(
    tmp_path: Path, cfg: config.Settings, setup: tuple[Path, Path, list[LabelledRow], list[LabelledRow]]
) -> None:
    """Teacher rows that repeat training rows add nothing to learn: with the current bundle's
    features and C (here a C that CV would not choose) the new bundle scores exactly the same, so
    the gate at tolerance 0 lets a harmless teacher file through."""
    data, _, train_rows, _ = setup
    current = tmp_path / "current"
    train(data, current, cfg, dataclasses.replace(OPTIONS, cs=(0.01,)), progress=False)
    teacher = _teacher(tmp_path / "same.jsonl", [(r.source, r.message, r.label) for r in train_rows])
    report = distill(data, [teacher], current, tmp_path / "new", cfg, _options(), progress=False)
    training = load_bundle(tmp_path / "new").manifest.training
    assert training is not None and (training.features, training.classifier.C, training.folds) == ("lexical", 0.01, 3)
    assert report["recipe"] == {"retuned": False, "features": "lexical", "C": 0.01, "folds": 3}
    assert report["accepted"] and report["new"]["macro_f1"] == report["current"]["macro_f1"]
    assert report["changed"] == {"now_wrong": 0, "now_right": 0, "other": 0, "rows": []}

    retuned = distill(
        data,
        [teacher],
        current,
        tmp_path / "retuned",
        cfg,
        dataclasses.replace(_options(), retune=True, train=TrainOptions(folds=3, features="lexical")),
        progress=False,
    )
    assert retuned["recipe"]["C"] != 0.01  # CV picks another C: what the recipe keeps from moving


def test_distill_link_points_at_the_accepted_bundle(
    tmp_path: Path, cfg: config.Settings, setup: tuple[Path, Path, list[LabelledRow], list[LabelledRow]]
) -> None:
    data, current, train_rows, _ = setup
    teacher = _teacher(tmp_path / "t.jsonl", [(r.source, r.message, r.label) for r in train_rows[:20]])
    link = tmp_path / "live"
    link.symlink_to(current.resolve())
    code = cli.main(
        [
            "distill",
            *("--data", str(data), "--teacher", str(teacher), "--model", str(link), "--out", str(tmp_path / "v2")),
            *("--holdout-size", "0.3", "--random-state", "7", "--link", str(link), "--no-progress"),
        ]
    )
    assert code == 0 and link.is_symlink() and link.resolve() == (tmp_path / "v2").resolve()
    assert load_bundle(link).version == load_bundle(tmp_path / "v2").version
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp link left

    not_a_link = tmp_path / "dir"
    not_a_link.mkdir()
    with pytest.raises(DistillError, match=r"--link .* is not a symlink"):
        distill(data, [teacher], current, tmp_path / "v3", cfg, dataclasses.replace(_options(), link=not_a_link))
    assert not (tmp_path / "v3").exists()


def test_distill_keeps_the_current_out_of_distribution_thresholds(
    tmp_path: Path, cfg: config.Settings, setup: tuple[Path, Path, list[LabelledRow], list[LabelledRow]]
) -> None:
    """Teacher rows unlike anything in the CSV (foreign logs the LLM labelled) must not move the
    head's out-of-distribution thresholds: at quantile 0 a threshold is the least similar template
    the head got right, so one far-off row recomputed into it (seed + Loghub teacher rows: 0.545 ->
    0.165) lets the head answer what it used to leave to the LLM."""
    data, current, train_rows, _ = setup
    # Each a training row drowned in words of its own: still nearest its label, but far from it.
    foreign = [
        ("Zookeeper", r.message + "".join(f" w{i}q{j}z{'kx' * j}" for j in range(40)), r.label)
        for i, r in enumerate(train_rows[:12])
    ]
    teacher = _teacher(tmp_path / "foreign.jsonl", foreign)
    distill(data, [teacher], current, tmp_path / "new", cfg, _options(tolerance=0.999), progress=False)
    old, new = load_bundle(current), load_bundle(tmp_path / "new")
    kept = dict(zip(new.head.labels, new.prototypes.thresholds.tolist(), strict=True))
    assert kept == dict(zip(old.head.labels, old.prototypes.thresholds.tolist(), strict=True))
    assert new.manifest.training is not None and new.manifest.training.ood.fixed is True


def _serving_version(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        info = pb_grpc.LogClassifierStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    return str(info.model_version)


def test_a_sidecar_on_the_link_serves_the_accepted_bundle_after_a_refused_one(
    tmp_path: Path, setup: tuple[Path, Path, list[LabelledRow], list[LabelledRow]]
) -> None:
    """The install path end to end: `logclass serve` with `model.bundle` the link and the file
    watch on; a refused distill leaves it serving the current bundle, an accepted one is picked up."""
    data, current, train_rows, held = setup
    link = tmp_path / "live"
    link.symlink_to(current.resolve())
    address = f"127.0.0.1:{free_port()}"
    env = {"LOGCLASS_MODEL__BUNDLE": str(link), "LOGCLASS_SERVER__RELOAD__WATCH_INTERVAL_S": "0.2"}
    proc = start_server(address, env)
    args = ["distill", "--data", str(data), "--model", str(link), "--link", str(link), "--no-progress"]
    try:
        old = _serving_version(address)
        assert old == load_bundle(current).version
        wrong = _wrong_teacher(tmp_path / "wrong.jsonl", held)
        assert cli.main([*args, "--teacher", str(wrong), "--out", str(tmp_path / "bad")]) == cli.EXIT_REFUSED
        assert link.resolve() == current.resolve()
        good = _teacher(tmp_path / "good.jsonl", [(r.source, r.message, r.label) for r in train_rows[:20]])
        assert cli.main([*args, "--teacher", str(good), "--out", str(tmp_path / "v2")]) == 0
        new = load_bundle(tmp_path / "v2").version
        assert new != old
        wait_until(lambda: _serving_version(address) == new, 60, "the sidecar never picked the new bundle up")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
