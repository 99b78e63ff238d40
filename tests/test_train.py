from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from logclass import config
from logclass.core.bundle import load_bundle
from logclass.core.decision import LogRecord
from logclass.core.labels_file import LabelsFileError
from logclass.training.dataset import DatasetError, load_labelled_csv
from logclass.training.evaluate import evaluate, format_report, holdout_rows
from logclass.training.train import TrainError, TrainOptions, train
from tests.conftest import NO_LLM, SEED_CSV, MemoEncoder, offline_engine

SEED_LABELS = Path(__file__).resolve().parents[1] / "training" / "data" / "labels.yaml"
# The target for the seed's stratified 30 % hold-out (the seed notebook reached 0.976).
SEED_MACRO_F1 = 0.99


@pytest.mark.slow
def test_seed_split_macro_f1(tmp_path: Path, cfg: config.Settings, encoder: MemoEncoder) -> None:
    options = TrainOptions(test_size=0.3, random_state=42, labels_file=SEED_LABELS)
    bundle = train(SEED_CSV, tmp_path / "seed", cfg, options, encoder=encoder, progress=False)
    assert bundle.manifest.metrics is not None
    holdout = bundle.manifest.metrics.holdout
    assert holdout.macro_f1 is not None and holdout.macro_f1 >= SEED_MACRO_F1, holdout
    training = bundle.manifest.training
    assert training is not None
    # Every candidate was cross-validated and the chosen one is recorded for the runtime.
    assert set(training.cv_macro_f1) == {"embedding", "lexical", "both"}
    assert bundle.features.kind == training.features
    assert training.rules.kept == tuple(r["name"] for r in _rules(bundle.rules_file)) and training.rules.dropped == {}
    # Calibration lowers the out-of-fold calibration error.
    ece = training.calibration.out_of_fold_ece
    assert ece.after is not None and ece.before is not None and ece.after <= ece.before, ece


def _rules(path: Path | None) -> list[dict[str, str]]:
    import yaml

    assert path is not None
    return list(yaml.safe_load(path.read_text())["rules"])


def _write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "log_message", "target_label"])
        writer.writerows(rows)
    return path


def _subset(per_label: int, rare: dict[str, int]) -> list[tuple[str, str, str]]:
    picked: dict[str, int] = {}
    out = []
    for row in load_labelled_csv(SEED_CSV):
        if row.source == "LegacyCRM":
            continue
        limit = rare.get(row.label, per_label)
        if picked.get(row.label, 0) < limit:
            picked[row.label] = picked.get(row.label, 0) + 1
            out.append((row.source, row.message, row.label))
    return out


def test_rare_labels_are_kept_and_learnt(
    tmp_path: Path, cfg: config.Settings, encoder: MemoEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    # One label with a single row, one whose five rows share one template (the Lustre case).
    lustre = [("HPC", f"Lustre mount FAILED : node-{n} : point /mnt/lustre{n}", "Storage Alert") for n in range(5)]
    subset = _subset(25, {"Resource Usage": 1}) + lustre
    data = _write_csv(tmp_path / "small.csv", subset)
    options = TrainOptions(folds=3, features="embedding")
    bundle = train(data, tmp_path / "small", cfg, options, encoder=encoder, progress=False)
    err = capsys.readouterr().err
    assert "label 'Resource Usage' has only 1 row(s): kept" in err
    assert bundle.manifest.training is not None
    assert bundle.manifest.training.few_row_labels == {"Resource Usage": 1}
    assert {"Resource Usage", "Storage Alert"} <= set(bundle.head.labels) <= set(bundle.labels)
    router = offline_engine(config.load(environ=NO_LLM), bundle=bundle, encoder=encoder)
    try:
        rare = next(r for r in subset if r[2] == "Resource Usage")
        new_node = ("HPC", "Lustre mount FAILED : node-77 : point /mnt/lustre77", "Storage Alert")
        decisions = router.classify([LogRecord(s, m) for s, m, _ in (rare, new_node)])
        # Both are templates of the training rows: the memory answers, before any model.
        assert [(d.label, d.tier) for d in decisions] == [("Resource Usage", "memory"), ("Storage Alert", "memory")]
        assert decisions[1].confidence == round(6 / 7, 4)  # 5 agreeing rows: (5 + 1) / (5 + 2)
    finally:
        router.close()


def test_lexical_features_need_no_encoder_and_rules_outside_the_label_set_are_dropped(
    tmp_path: Path, cfg: config.Settings, encoder: MemoEncoder
) -> None:
    # A taxonomy of the user's own: the seed's rules label "User Action" and "System
    # Notification", which it does not have, so the bundle must not carry them.
    rows = [("app", f"User {n} logged in.", "audit") for n in range(6)]
    rows += [("app", f"request {n} served in {n} ms", "access") for n in range(6)]
    rows += [("app", f"disk {n} failed with io error", "fault") for n in range(6)]
    data = _write_csv(tmp_path / "own.csv", rows)
    calls = len(encoder.calls)
    bundle = train(data, tmp_path / "own", cfg, TrainOptions(folds=2, features="lexical"), progress=False)
    assert len(encoder.calls) == calls and bundle.manifest.embedding is None
    assert bundle.features.kind == "lexical"
    assert bundle.manifest.training is not None
    dropped = bundle.manifest.training.rules.dropped
    assert dropped["user-session"] == "label 'User Action' is not in the training labels"
    assert _rules(bundle.rules_file) == []
    router = offline_engine(config.load(environ=NO_LLM), bundle=bundle)
    try:
        decision = router.classify([LogRecord("app", "User 99 logged in.")])[0]
        assert (decision.label, decision.tier) == ("audit", "memory")
    finally:
        router.close()


def test_training_errors_are_clear(tmp_path: Path, cfg: config.Settings, encoder: MemoEncoder) -> None:
    one_label = _write_csv(tmp_path / "one.csv", [("a", f"Disk {i} full", "Resource Usage") for i in range(20)])
    with pytest.raises(TrainError, match="needs at least two labels"):
        train(one_label, tmp_path / "x", cfg, encoder=encoder, progress=False)
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("source,log_message\na,b\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['target_label'\]"):
        train(no_label, tmp_path / "y", cfg, encoder=encoder, progress=False)
    for bad, match in [(TrainOptions(split="alphabetical"), "split"), (TrainOptions(features="tfidf"), "--features")]:
        with pytest.raises(TrainError, match=match):
            train(one_label, tmp_path / "z", cfg, bad, encoder=encoder, progress=False)
    labels = tmp_path / "labels.yaml"
    labels.write_text("labels: {a: b}\nthreshold: 3\n")
    with pytest.raises(LabelsFileError, match=r"unknown keys \['threshold'\]"):
        train(one_label, tmp_path / "w", cfg, TrainOptions(labels_file=labels), encoder=encoder, progress=False)


@pytest.mark.slow
def test_evaluate_holdout_end_to_end(cfg: config.Settings, encoder: MemoEncoder) -> None:
    from logclass.engine.pipeline import DEFAULT_BUNDLE

    bundle = load_bundle(DEFAULT_BUNDLE)
    rows = load_labelled_csv(SEED_CSV)
    held = holdout_rows(rows, bundle)
    # Exact duplicates of training rows are not held out either, hence <=. The bundle's training
    # rows also hold the Loghub teacher rows `make model` distils in, so the CSV's training side is
    # counted from the split.
    assert bundle.manifest.training is not None
    training_side = int(len(rows) * (1 - bundle.manifest.training.split.test_size))
    assert 600 < len(held) <= len(rows) - training_side
    router = offline_engine(cfg, bundle=bundle, encoder=encoder)
    report = evaluate(SEED_CSV, router, bundle=bundle, holdout=True, progress=False)
    tiers = report["tiers"]
    assert tiers["regex"]["accuracy"] == 1.0 and tiers["memory"]["accuracy"] >= 0.99
    assert tiers["none"]["records"] >= 2  # LegacyCRM rows have no LLM to go to
    assert report["end_to_end"]["rows"] == len(held)
    assert report["end_to_end"]["accuracy"] >= 0.97
    text = format_report(report)
    assert "per tier" in text and "cache hit ratio" in text


def test_teacher_rows_join_memory_and_head(tmp_path: Path, cfg: config.Settings, encoder: MemoEncoder) -> None:
    data = _write_csv(tmp_path / "small.csv", _subset(12, {}))
    teacher = tmp_path / "teacher.jsonl"
    entries = [
        {
            "source": "ModernHR",
            "example": f"Account lockout triggered for user {n} after repeated failures",
            "label": label,
        }
        for n, label in enumerate(["Security Alert"] * 5)
    ]
    entries.append({"source": "ModernHR", "example": "Quarterly payroll closed", "label": "Payroll Event"})
    teacher.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    options = TrainOptions(folds=3, features="embedding")
    plain = train(data, tmp_path / "plain", cfg, options, encoder=encoder, progress=False)
    options.extra = [teacher]
    taught = train(data, tmp_path / "taught", cfg, options, encoder=encoder, progress=False)
    # The 5 Security Alert rows (one template) join; a label the CSV lacks has no human row.
    taught_info, plain_info = taught.manifest.training, plain.manifest.training
    assert taught_info is not None and plain_info is not None
    assert taught_info.rows_training_side == plain_info.rows_training_side + 5
    assert taught_info.head_templates == plain_info.head_templates + 1
    assert taught.memory()["Account lockout triggered for user <NUM> after repeated failures"] == {"Security Alert": 5}
    assert "teacher.jsonl" in taught_info.extra_files
    assert len(taught.training_rows()) == len(plain.training_rows()) + 5
    assert "Payroll Event" not in taught.labels

    teacher.write_text('{"source": "a", "example": "b", "label": "c"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"teacher.jsonl:2: not a teacher entry"):
        train(data, tmp_path / "bad", cfg, options, encoder=encoder, progress=False)


def test_lessons_from_the_shared_store_join_like_a_learnt_file(
    tmp_path: Path, cfg: config.Settings, encoder: MemoEncoder
) -> None:
    """``--extra redis://...``: the cluster's lessons, read from a real redis-server."""
    import asyncio
    import dataclasses

    from logclass.core.learnt import ORIGIN_FEEDBACK, ORIGIN_LLM, Lesson
    from logclass.engine.lesson_sync import encode
    from logclass.store.base import lesson_field
    from logclass.store.redis import RedisStore
    from tests.store.redis_server import RedisServer

    server = RedisServer(tmp_path, password="s3cret")
    server.start()
    secret = tmp_path / "password"
    secret.write_text("s3cret", encoding="utf-8")
    store_settings = dataclasses.replace(cfg.store, password_file=str(secret), key_prefix="prod")
    lessons = [
        Lesson(
            f"Account lockout <*> stage {word}",
            "ModernHR",
            f"Account lockout 7 stage {word}",
            "Security Alert",
            1.0,
            ORIGIN_FEEDBACK,
            "",
            "",
        )
        for word in ("alpha", "beta", "gamma")
    ] + [
        Lesson(
            "Quarterly payroll closed",
            "ModernHR",
            "Quarterly payroll closed",
            "Payroll Event",
            0.9,
            ORIGIN_LLM,
            "qwen",
            "ModernHR",
        )
    ]

    async def publish() -> None:
        store = RedisStore(dataclasses.replace(store_settings, url=server.url))
        for lesson in lessons:
            await store.put_lesson(lesson_field(lesson.scope, lesson.template), encode(lesson), 100)
        await store.close()

    try:
        asyncio.run(publish())
        data = _write_csv(tmp_path / "small.csv", _subset(12, {}))
        options = TrainOptions(folds=3, features="embedding")
        plain = train(data, tmp_path / "plain", cfg, options, encoder=encoder, progress=False)
        with_store = dataclasses.replace(cfg, store=store_settings)
        url = f"redis://127.0.0.1:{server.port}/0"  # the password comes from store.password_file
        options.extra = [url]
        taught = train(data, tmp_path / "taught", with_store, options, encoder=encoder, progress=False)
        taught_info, plain_info = taught.manifest.training, plain.manifest.training
        assert taught_info is not None and plain_info is not None
        # The three corrections join; a label the CSV lacks has no human row.
        assert taught_info.rows_training_side == plain_info.rows_training_side + 3
        assert list(taught_info.extra_files) == [url]
        # Another key prefix holds none: the error names it.
        options.extra = [url]
        elsewhere = dataclasses.replace(cfg, store=dataclasses.replace(store_settings, key_prefix="staging"))
        with pytest.raises(DatasetError, match=r"holds no lessons under key prefix 'staging'"):
            train(data, tmp_path / "none", elsewhere, options, encoder=encoder, progress=False)
        server.stop()
        with pytest.raises(DatasetError, match=r"the store did not answer .*store.password_file"):
            train(data, tmp_path / "down", with_store, options, encoder=encoder, progress=False)
    finally:
        server.stop()


def test_rules_of_another_taxonomy_are_counted_not_listed() -> None:
    from logclass.training.train import _dropped_note

    dropped = {
        "a": "label 'X' is not in the training labels",
        "b": "label 'Y' is not in the training labels",
        "c": "agrees with 1 of the 4 training rows it matches",
    }
    assert _dropped_note(dropped) == (
        ", 2 whose labels are not in the training labels left out; "
        "dropped {'c': 'agrees with 1 of the 4 training rows it matches'}"
    )
    assert _dropped_note({}) == ""
