"""The HTTP benchmark (benchmarks/bench_http.py): a tiny end-to-end run against real servers (JSON
and gRPC passes, a CSV upload against `logclass classify`), and its output comparison."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `.venv/bin/pytest` puts tests/, not the project root, on sys.path; benchmarks/ is not installed.
sys.path.insert(0, str(ROOT))

from benchmarks import bench_http as bench  # noqa: E402


def test_first_difference_names_the_line_where_outputs_part(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_bytes(b"h\nx,1\ny,2\n")
    b.write_bytes(b"h\nx,1\ny,2\n")
    c.write_bytes(b"h\nx,1\ny,3\n")
    assert bench.first_difference(a, b) == ""
    assert bench.first_difference(a, c).startswith("line 3: b'y,2' != b'y,3'")
    c.write_bytes(b"h\nx,1\n")
    assert "prefix" in bench.first_difference(a, c)


def test_a_tiny_run_measures_both_front_ends_and_identical_csv_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    # 1000-record requests carry the JSON target: here one request of all 250 records per pass.
    args = ["--records", "250", "--request-sizes", "1000,50", "--rounds", "1", "--csv-rows", "500"]
    assert bench.main([*args, "--callers", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["json"]["rows"]
    assert set(rows) == {"cold 1000-record requests", "warm 1000-record requests", "warm 50-record requests"}
    for row in rows.values():
        assert row["grpc_rps"] > 0 and row["http_rps"] > 0
        assert row["ratio"] == pytest.approx(row["http_rps"] / row["grpc_rps"])
    csv_part = result["csv"]
    assert csv_part["rows"] == 500 and csv_part["repeats"] == 2
    assert csv_part["cli"]["classify_rps"] > csv_part["cli"]["rows_per_s"] > 0
    for upload in csv_part["uploads"].values():
        assert upload["identical"], upload["difference"]
        assert 0 < upload["ttfb_s"] <= upload["wall_s"]
    assert len(result["targets"]) == 3 and any("HTTP JSON" in name for name in result["targets"])
    text = capsys.readouterr().out
    for line in ("warm 50-record requests", "logclass classify, classify phase", "POST /classify, warm"):
        assert line in text
    assert "PASS  CSV upload outputs byte-identical to `logclass classify`'s" in text
