"""The accuracy benchmark (benchmarks/bench_accuracy.py): its split and scores, and lower bounds
on a subset of its tasks, run through the same functions `make bench-accuracy` runs."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `.venv/bin/pytest` puts tests/, not the project root, on sys.path; benchmarks/ is not installed.
sys.path.insert(0, str(ROOT))

from benchmarks import bench_accuracy as bench  # noqa: E402

# Zookeeper: its ERROR level has 6 training rows, the rare-label case (below the bound at 6dc47cb,
# when train() left out labels with fewer than 7 rows: 0.66 against 0.998; equal since e0ede20).
# OpenStack: a 2-level task both score 0.98 on. Android (a 3-row level) and Hadoop are in
# `make bench-accuracy` only: each trains for 1.5-3 minutes on 2 busy cores.
SUBSET = ("Zookeeper", "OpenStack")
# logclass may trail the baseline by this factor here; the benchmark's own target is >= 1.0, but a
# test must not fail on one borderline template moving between runs or library versions.
RATIO_BOUND = 0.97
SEED_SPLIT_BOUND = 0.97


def test_split_keeps_single_row_labels_in_training_and_stratifies() -> None:
    labels = ["a"] * 10 + ["b"] * 6 + ["c"] * 2 + ["only-1", "only-2"]
    train, test = bench.split_indexes(labels, 0.5)
    assert sorted(train + test) == list(range(len(labels)))
    assert not set(train) & set(test)
    assert {labels.index("only-1"), labels.index("only-2")} <= set(train)
    assert Counter(labels[i] for i in test) == {"a": 5, "b": 3, "c": 1}
    assert bench.split_indexes(labels, 0.5) == (train, test)
    assert bench.split_indexes(labels, 0.5, seed=7) != (train, test)


def test_seed_split_is_stratified_70_30_without_llm_sources() -> None:
    rows = bench.seed_rows()
    assert rows and not {r.source for r in rows} & {"LegacyCRM"}
    labels = [r.label for r in rows]
    _, test = bench.split_indexes(labels, bench.SEED_TEST_SIZE)
    held_out = Counter(labels[i] for i in test)
    for label, n in Counter(labels).items():
        assert abs(held_out[label] - 0.3 * n) <= 1, label


def test_scores_count_the_fallback_label_as_a_miss_not_as_a_class() -> None:
    truth = ["x", "x", "y", "y"]
    f1, accuracy = bench.scores(truth, ["x", "x", "y", "Unclassified"])
    assert accuracy == 0.75
    # x: P 1, R 1 -> 1.0; y: P 1, R 0.5 -> 2/3. An "Unclassified" class at F1 0 would give 5/9.
    assert f1 == pytest.approx((1.0 + 2 / 3) / 2)


def test_single_class_level_datasets_are_skipped_and_said_so() -> None:
    pairs, notes = bench.loghub_tasks(["Spark", "Zookeeper"], ["level"])
    assert pairs == [("Zookeeper", "level")]
    assert len(notes) == 1 and notes[0].startswith("Spark level skipped")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", SUBSET)
def test_level_keeps_up_with_the_tfidf_baseline(dataset: str, tmp_path: Path) -> None:
    r = bench.run_task(dataset, "level", bench.task_rows(dataset, "level"), bench.LOGHUB_TEST_SIZE, tmp_path)
    table = bench.format_table([r])
    assert not r.error, table
    assert r.test_rows > 0 and sum(r.tiers.values()) == pytest.approx(1.0), table
    assert r.logclass_macro_f1 >= RATIO_BOUND * r.baseline_macro_f1, table


@pytest.mark.slow
def test_seed_split_keeps_up_with_the_tfidf_baseline(tmp_path: Path) -> None:
    rows = bench.seed_rows()
    r = bench.run_task("seed", bench.SEED_SPLIT, rows, bench.SEED_TEST_SIZE, tmp_path)
    table = bench.format_table([r])
    assert not r.error, table
    assert r.logclass_macro_f1 >= RATIO_BOUND * r.baseline_macro_f1, table
    assert r.logclass_macro_f1 >= SEED_SPLIT_BOUND, table
