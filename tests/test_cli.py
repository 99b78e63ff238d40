"""The `logclass` command as users run it: real subprocesses, real model."""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SEED_TEST_CSV, run_cli


def test_classify_prints_a_table() -> None:
    result = run_cli("classify", str(SEED_TEST_CSV))
    assert result.returncode == 0, result.stderr
    assert "User Action" in result.stdout and "regex" in result.stdout
    assert "10 rows" in result.stderr and "by tier:" in result.stderr


def test_offline_jobs_are_not_bounded_by_the_servers_lane_queues(tmp_path: Path) -> None:
    # A lane bound far below the file's new templates: a server would refuse, an offline job waits.
    out = tmp_path / "out.csv"
    env = {"LOGCLASS_SERVER__LANES__EMBEDDING__MAX_QUEUE": "1", "LOGCLASS_LLM__BACKEND": "none"}
    result = run_cli("classify", str(SEED_TEST_CSV), "-o", str(out), "--chunk-rows", "2", env=env)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 10 and "pending" not in {r["tier"] for r in rows}
    assert "embedding" in {r["tier"] for r in rows}


def test_errors_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("message\nx\n")
    result = run_cli("classify", str(bad))
    assert result.returncode == 2
    assert "missing column(s) ['source', 'log_message']" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("classify", str(SEED_TEST_CSV), "--model", str(tmp_path / "nomodel"))
    assert result.returncode == 2 and "logclass train" in result.stderr
    result = run_cli("config", env={"LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "2"})
    assert result.returncode == 2 and "embedding.min_confidence" in result.stderr


_HEAVY = ("torch", "transformers", "onnxruntime", "grpc", "numpy", "pandas", "sklearn", "matplotlib", "fastapi")


def test_help_imports_no_heavy_module() -> None:
    # `logclass --help` and every command's start: handlers import what they need when they run.
    code = (
        "import sys; from logclass.cli import build_parser; build_parser(); "
        f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_command_module_is_registered() -> None:
    from logclass import cli

    folder = ROOT / "sidecar" / "logclass" / "cli"
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__", "common"}
    # A command module left out of the registry would be silently missing from `logclass`.
    assert {c.__name__.rsplit(".", 1)[-1] for c in cli.COMMANDS} == modules


def test_config_shows_the_effective_config() -> None:
    result = run_cli("config", env={"LOGCLASS_ROUTER__FALLBACK_LABEL": "unknown"})
    assert result.returncode == 0
    assert "fallback_label: unknown" in result.stdout


def _rows(n: int, path: Path) -> None:
    # Realistic mix: a few templates, numbers varying, so the exact cache churns and stays bounded.
    templates = [
        "User User{} logged in.",
        "Multiple login failures occurred on user {} account",
        'nova.osapi_compute.wsgi.server [req-{}] 10.11.10.1 "GET /v2/servers/detail HTTP/1.1" status: 200',
        "Disk usage at {} percent on node",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "log_message"])
        for i in range(n):
            writer.writerow(["ModernCRM", templates[i % 4].format(i)])


def _peak_rss_mib(rows: int, tmp_path: Path) -> float:
    src, out = tmp_path / f"in{rows}.csv", tmp_path / f"out{rows}.csv"
    _rows(rows, src)
    code = (
        "import resource, sys; from logclass.cli import main; "
        f"rc = main(['classify', {str(src)!r}, '-o', {str(out)!r}, '--no-progress']); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        # Small caches so that the long run fills them; memory must then stay flat.
        "LOGCLASS_TEMPLATES__EXACT_CACHE_SIZE": "5000",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as fh:
        assert sum(1 for _ in fh) == rows + 1
    return int(result.stdout.strip().splitlines()[-1]) / 1024


@pytest.mark.slow
def test_memory_stays_flat_with_input_size(tmp_path: Path) -> None:
    small = _peak_rss_mib(20_000, tmp_path)
    large = _peak_rss_mib(400_000, tmp_path)
    # 20x the rows must not mean more memory: streaming in chunks, bounded caches.
    assert large - small < 40, (small, large)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


@pytest.mark.slow
def test_train_and_evaluate_commands(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    with (
        (ROOT / "training" / "data" / "synthetic_logs.csv").open(newline="") as src,
        data.open("w", newline="") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        for i, row in enumerate(reader):
            if i < 400:
                writer.writerow(row)
    out = tmp_path / "m"
    labels = ROOT / "training" / "data" / "labels.yaml"
    args = ["--labels", str(labels), "--test-size", "0.3", "--features", "embedding", "--folds", "3"]
    result = run_cli("train", str(data), "--out", str(out), *args, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "[6/6] wrote bundle m@" in result.stderr and "CV macro-F1" in result.stderr
    assert "hold-out (" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["rows_total"] == 399
    report = tmp_path / "r.json"
    result = run_cli("evaluate", str(data), "--model", str(out), "--holdout", "--json", str(report), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "per tier" in result.stdout
    assert json.loads(report.read_text())["model_version"] == f"m@{manifest_version(out)}"


def manifest_version(path: Path) -> str:
    import hashlib

    return hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()[:12]


def test_serve_print_config_redacts_the_token() -> None:
    result = run_cli(
        "serve", "--print-config", "--listen", "127.0.0.1:6000", env={"LOGCLASS_SERVER__AUTH__TOKEN": "hunter2"}
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "<redacted>" in result.stdout
    assert "listen: 127.0.0.1:6000" in result.stdout
