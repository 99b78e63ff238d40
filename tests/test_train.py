from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sidecar import config
from sidecar.core.bundle import load_bundle
from sidecar.core.decision import LogRecord
from tests.conftest import NO_LLM, SEED_CSV, MemoEncoder, offline_engine
from training.dataset import DatasetError, load_labelled_csv
from training.evaluate import evaluate, format_report, holdout_rows
from training.train import TrainError, TrainOptions, train

SEED_MACRO_F1 = 0.976  # the seed notebook's figure on the same split


@pytest.mark.slow
def test_seed_split_reaches_the_seed_macro_f1(tmp_path: Path, cfg: config.Config, encoder: MemoEncoder) -> None:
    # The seed's own split: rows not decided by regex and not LegacyCRM, 30 % test, random_state=42,
    # unstratified as the seed notebook did.
    options = TrainOptions(split="random", test_size=0.3, random_state=42)
    bundle = train(SEED_CSV, tmp_path / "seed", cfg, options, encoder=encoder, progress=False)
    holdout = bundle.manifest["metrics"]["holdout"]
    assert holdout["rows"] == 571
    assert holdout["macro_f1"] >= SEED_MACRO_F1, holdout
    training = bundle.manifest["training"]
    assert training["excluded"] == {"decided_by_regex": 500, "routed_past_embedding": 7}
    assert training["rows_used"] == 1903
    assert len(load_bundle(tmp_path / "seed").training_rows()) == 1332


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


def test_rare_labels_are_reported_and_left_to_the_llm(
    tmp_path: Path, cfg: config.Config, encoder: MemoEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    subset = _subset(25, {"Resource Usage": 3})
    data = _write_csv(tmp_path / "small.csv", subset)
    bundle = train(data, tmp_path / "small", cfg, TrainOptions(folds=3), encoder=encoder, progress=False)
    err = capsys.readouterr().err
    assert "label 'Resource Usage' has 3 row(s)" in err and "--min-class-rows" in err
    assert "Resource Usage" not in bundle.labels
    assert bundle.manifest["training"]["rare_labels"] == {"Resource Usage": 3}
    assert "cv_macro_f1" in bundle.manifest["training"]
    # A 50-row model is not confident; the point here is that the bundle serves.
    lenient = config.load(environ={**NO_LLM, "LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "0"})
    router = offline_engine(lenient, bundle=bundle, encoder=encoder)
    source, message, label = next(r for r in subset if r[2] == "Security Alert")
    decision = router.classify([LogRecord(source, message)])[0]
    assert decision.label == label and decision.model_version == bundle.version


def test_training_errors_are_clear(tmp_path: Path, cfg: config.Config, encoder: MemoEncoder) -> None:
    one_label = _write_csv(tmp_path / "one.csv", [("a", f"Disk {i} full", "Resource Usage") for i in range(20)])
    with pytest.raises(TrainError, match="needs at least two"):
        train(one_label, tmp_path / "x", cfg, encoder=encoder, progress=False)
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("source,log_message\na,b\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['target_label'\]"):
        train(no_label, tmp_path / "y", cfg, encoder=encoder, progress=False)
    with pytest.raises(TrainError, match="split"):
        train(
            one_label,
            tmp_path / "z",
            cfg,
            TrainOptions(split="alphabetical"),
            encoder=encoder,
            progress=False,
        )


@pytest.mark.slow
def test_evaluate_holdout_end_to_end(cfg: config.Config, encoder: MemoEncoder) -> None:
    from sidecar.engine.pipeline import DEFAULT_BUNDLE

    bundle = load_bundle(DEFAULT_BUNDLE)
    rows = load_labelled_csv(SEED_CSV)
    held = holdout_rows(rows, bundle)
    # Exact duplicates of training rows are not held out either, hence <=.
    assert 1000 < len(held) <= len(rows) - len(bundle.training_rows())
    router = offline_engine(cfg, bundle=bundle, encoder=encoder)
    report = evaluate(SEED_CSV, router, bundle=bundle, holdout=True, progress=False)
    tiers = report["tiers"]
    assert tiers["regex"]["records"] == 500 and tiers["regex"]["accuracy"] == 1.0
    assert tiers["none"]["records"] >= 7  # LegacyCRM rows have no LLM to go to
    assert tiers["embedding"]["accuracy"] >= 0.98
    assert report["end_to_end"]["rows"] == len(held)
    assert report["end_to_end"]["accuracy"] >= 0.97
    text = format_report(report)
    assert "per tier" in text and "cache hit ratio" in text


def test_teacher_rows_join_the_training_side_only(tmp_path: Path, cfg: config.Config, encoder: MemoEncoder) -> None:
    import json

    data = _write_csv(tmp_path / "small.csv", _subset(12, {}))
    teacher = tmp_path / "teacher.jsonl"
    entries = [
        {
            "source": "ModernHR",
            "example": f"Account lockout triggered for user {n} after repeated failures",
            "label": "Security Alert",
        }
        for n in range(5)
    ]
    entries.append(
        {"source": "LegacyCRM", "example": "Lead conversion failed for prospect 1", "label": "Workflow Error"}
    )
    entries.append({"source": "ModernHR", "example": "Quarterly payroll closed", "label": "Payroll Event"})
    teacher.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    plain = train(data, tmp_path / "plain", cfg, TrainOptions(folds=3), encoder=encoder, progress=False)
    taught = train(
        data, tmp_path / "taught", cfg, TrainOptions(folds=3, extra=[teacher]), encoder=encoder, progress=False
    )
    # The 5 Security Alert rows are added; LegacyCRM is routed past the embedding tier and a label
    # the CSV lacks has no hold-out, so both stay out. The hold-out is the CSV's alone.
    assert taught.manifest["training"]["rows_used"] == plain.manifest["training"]["rows_used"] + 5
    assert taught.manifest["metrics"]["holdout"]["rows"] == plain.manifest["metrics"]["holdout"]["rows"]
    assert "teacher.jsonl" in taught.manifest["training"]["extra_files"]
    assert (
        len(load_bundle(tmp_path / "taught").training_rows())
        == len(load_bundle(tmp_path / "plain").training_rows()) + 5
    )

    teacher.write_text('{"source": "a", "example": "b", "label": "c"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"teacher.jsonl:2: not a teacher entry"):
        train(data, tmp_path / "bad", cfg, TrainOptions(folds=3, extra=[teacher]), encoder=encoder, progress=False)
