"""Answer quality of the recommended embedded model, end to end through `logclass evaluate`.

tests/data/llm_eval.csv holds the seed's 7 LegacyCRM rows and 32 Workflow Error / Deprecation
Warning lines written for this test (LegacyCRM is routed straight to the LLM tier).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logclass.cli import main

pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: pip install 'logclass[llamacpp]'")

EVAL_CSV = Path(__file__).resolve().parent.parent / "data" / "llm_eval.csv"
TARGET_ACCURACY = 0.90


@pytest.mark.slow
def test_qwen_labels_legacy_crm_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    args = [
        "evaluate", str(EVAL_CSV), "--llm-backend", "llamacpp", "--llm-model", "qwen2.5-coder-1.5b",
        "--no-progress", "--json", str(report_path),
    ]  # fmt: skip
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    end_to_end = report["end_to_end"]
    with capsys.disabled():
        print(
            f"\nQwen2.5-Coder-1.5B on {end_to_end['rows']} LegacyCRM lines: accuracy {end_to_end['accuracy']:.3f}, "
            f"{report['records_per_second']:.2f} records/s"
        )
    assert end_to_end["rows"] == 39
    assert report["tier_calls"] == {"llm": 39}
    assert end_to_end["accuracy"] >= TARGET_ACCURACY, report
