"""The whole default pipeline on lines nobody trained on: tests/data/fresh_seed.csv, 90 lines in
the seed taxonomy written unlike the seed set (LegacyCRM included), classified end to end by the
shipped bundle with the recommended embedded LLM. Most of them are new templates far from the
training data, so the out-of-distribution check hands them to the LLM, which answers within the
bundle's label set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logclass.cli import main

pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: pip install 'logclass[llamacpp]'")

FRESH_CSV = Path(__file__).resolve().parent.parent / "data" / "fresh_seed.csv"
TARGET_MACRO_F1 = 0.90


@pytest.mark.slow
def test_fresh_lines_in_the_seed_taxonomy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    args = [
        "evaluate", str(FRESH_CSV), "--llm-backend", "llamacpp", "--llm-model", "qwen2.5-coder-1.5b",
        "--no-progress", "--json", str(report_path),
    ]  # fmt: skip
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    end_to_end, tiers = report["end_to_end"], report["tiers"]
    with capsys.disabled():
        shares = ", ".join(f"{tier} {v['share']:.0%} (accuracy {v['accuracy']:.2f})" for tier, v in tiers.items())
        print(f"\nfresh seed-taxonomy lines: macro-F1 {end_to_end['macro_f1']:.3f}; {shares}")
    assert end_to_end["rows"] == 90 and len(end_to_end["per_class"]) == 9
    # Unknown lines never get a confident guess from nothing: each is a model's answer.
    assert set(tiers) <= {"regex", "memory", "embedding", "llm"}, tiers
    assert end_to_end["macro_f1"] >= TARGET_MACRO_F1, end_to_end
