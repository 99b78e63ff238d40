"""training/data/loghub_testset/: the 200 hand-labelled Loghub lines are well formed, in the seed
taxonomy, cover every Loghub sample, match their README's label counts, and are the rows its
make_sample.py picks from the repository's copy of the samples (benchmarks/data/loghub/)."""

from __future__ import annotations

import csv
import importlib.util
import re
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from logclass import config

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "training" / "data" / "loghub_testset"
CSV = HERE / "loghub_200.csv"
README = HERE / "README.md"
LOGHUB = ROOT / "benchmarks" / "data" / "loghub"
COLUMNS = ["system", "source", "log_message", "target_label", "event_id"]


def _rows() -> list[dict[str, str]]:
    with CSV.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def _make_sample() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loghub_make_sample", HERE / "make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_are_well_formed() -> None:
    rows = _rows()
    assert len(rows) == 200
    for row in rows:
        assert all(row[c] is not None for c in COLUMNS), row  # no short row
        assert row["source"] == row["system"]
        assert row["log_message"].strip(), row
        assert re.fullmatch(r"E\d+", row["event_id"]), row
    assert len({tuple(r.values()) for r in rows}) == 200, "duplicate rows"
    assert len({(r["system"], r["log_message"]) for r in rows}) == 200, "a line is labelled twice"


def test_labels_are_the_seed_taxonomy() -> None:
    labels = set(yaml.safe_load((ROOT / "training" / "data" / "labels.yaml").read_text(encoding="utf-8"))["labels"])
    assert len(labels) == 9
    assert {r["target_label"] for r in _rows()} <= labels


def test_every_loghub_system_is_present() -> None:
    systems = {p.name.removesuffix("_2k.log_structured.csv") for p in LOGHUB.glob("*_2k.log_structured.csv")}
    assert len(systems) >= 14
    per_system = Counter(r["system"] for r in _rows())
    assert set(per_system) == systems
    assert all(12 <= n <= 16 for n in per_system.values()), per_system


def test_messages_fit_the_size_limit() -> None:
    limit = config.defaults()["limits"]["max_message_bytes"]
    assert max(len(r["log_message"].encode("utf-8")) for r in _rows()) <= limit


def test_readme_label_counts_match_the_file() -> None:
    table = dict(re.findall(r"^\| ([A-Za-z ]+?) \| (\d+) \|$", README.read_text(encoding="utf-8"), re.MULTILINE))
    documented = {label: int(n) for label, n in table.items() if int(n)}
    assert documented == dict(Counter(r["target_label"] for r in _rows()))
    assert re.search(r"\| \*\*Total\*\* \| \*\*200\*\* \|", README.read_text(encoding="utf-8"))


def test_licence_and_citation_travel_with_the_copy() -> None:
    for name in ("LICENSE", "CITATION"):
        assert (HERE / name).read_bytes() == (LOGHUB / name).read_bytes()


@pytest.mark.skipif(not LOGHUB.is_dir(), reason="benchmarks/data/loghub is not in this checkout")
def test_the_rows_are_make_samples_pick() -> None:
    assert _make_sample().check(CSV, LOGHUB) == []
