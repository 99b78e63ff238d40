"""The encoder benchmark (benchmarks/bench_encoder.py): its never-seen lines, its eligibility rule,
and a tiny end-to-end run (raw encode, cosines, one cold classify process with its time split)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `.venv/bin/pytest` puts tests/, not the project root, on sys.path; benchmarks/ is not installed.
sys.path.insert(0, str(ROOT))

from benchmarks import bench_encoder as bench  # noqa: E402
from logclass import config  # noqa: E402
from logclass.engine.pipeline import masker_of  # noqa: E402


def test_never_seen_lines_are_distinct_templates_unlike_the_seed_set() -> None:
    settings = config.load()
    lines, composition = bench.never_seen(settings, 60, seed=3)
    masker = masker_of(settings.templates)
    templates = {masker.template(r.message) for r in lines}
    assert len(lines) == len(templates) == composition["distinct_templates"] == 60
    assert not templates & {masker.template(m) for m in bench.seed_messages()}
    assert composition["loghub"] == 30 and composition["synthetic"] == 30


def _task(name: str, dataset: str, f1: float, error: str = "") -> tuple[str, dict[str, object]]:
    return name, {"dataset": dataset, "task": "level", "logclass_macro_f1": f1, "error": error}


def test_a_backend_losing_more_than_half_a_point_anywhere_is_not_eligible() -> None:
    results: dict[str, list[dict[str, object]]] = {}
    for name, row in [
        _task(bench.REFERENCE, "A", 0.99),
        _task(bench.REFERENCE, "B", 0.90),
        _task("close", "A", 0.986),
        _task("close", "B", 0.91),
        _task("far", "A", 0.99),
        _task("far", "B", 0.894),
        _task("broken", "A", 0.99),
        _task("broken", "B", 0.0, error="ValueError: x"),
    ]:
        results.setdefault(name, []).append(row)
    verdict = bench.eligibility(results)
    assert verdict[bench.REFERENCE]["eligible"] and verdict["close"]["eligible"]
    assert not verdict["far"]["eligible"] and verdict["far"]["worst_loss"] == pytest.approx(0.006)
    assert not verdict["broken"]["eligible"]


def test_a_tiny_run_reports_every_cpu_backend_and_splits_the_int8_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    args = ["--raw-sample", "8", "--rounds", "1", "--cold-lines", "20", "--cold-backends", "onnx-int8"]
    assert bench.main([*args, "--accuracy-tasks", "", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"torch fp32", "onnx fp32", "onnx-int8"} <= set(result["raw"]["best"])
    assert result["cosine"]["onnx fp32"]["mean"] > 0.9999
    assert 0.97 < result["cosine"]["onnx-int8"]["mean"] < 1.0
    process = result["cold"]["processes"]["onnx-int8"]
    assert sum(process["tiers"].values()) == 20
    assert set(process["split"]) >= {"cli_imports", "model_load", "classify"}
    assert "raw_int8_vs_torch" in result["targets"]
    assert "cold `logclass classify` of 20" in capsys.readouterr().out
