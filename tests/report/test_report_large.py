"""A million rows: progress on stderr, and peak memory that does not grow with the row count."""

from __future__ import annotations

import csv
import json
import re
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import NO_LLM, ROOT

LABELS = ["HTTP Status", "Security Alert", "User Action", "Error", "Resource Usage"]
SOURCES = [f"svc-{i}" for i in range(40)]
TIERS = ["regex", "embedding", "llm", "none"]

# Runs the CLI in a child and prints its own peak RSS: getrusage(RUSAGE_CHILDREN) in the test
# process would also count every server earlier tests started.
MEASURE = """
import json, resource, sys
from logclass.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _word(i: int) -> str:
    # Letters only: the template masks (numbers, hex, ids) leave it alone, so each is a new template.
    out = ""
    while True:
        i, r = divmod(i, 26)
        out += string.ascii_lowercase[r]
        if i == 0:
            return out


def _write(path: Path, rows: int) -> Counter[str]:
    """Classifier-shaped output: 90 % of rows from 50 templates, 10 % each a template of its own
    (the worst case for the template table). Returns the label counts."""
    labels: Counter[str] = Counter()
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "log_message", "target_label", "tier", "confidence", "error", "input_target_label"])
        for i in range(rows):
            label = LABELS[i % len(LABELS)]
            if i % 10 == 9:
                message = f"unusual event {_word(i)} seen"
            else:
                message = f"request {i} template{i % 50} took {i % 997} ms from 10.0.{i % 256}.{i % 199}"
            gold = label if i % 7 else LABELS[(i + 1) % len(LABELS)]
            confidence = f"{(i % 1000) / 1000:.4f}"
            writer.writerow([SOURCES[i % len(SOURCES)], message, label, TIERS[i % 4], confidence, "", gold])
            labels[label] += 1
    return labels


def _report(csv_path: Path, html: Path) -> tuple[dict[str, int], str]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, "report", str(csv_path), "-o", str(html)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**NO_LLM, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr[-2000:]
    return result, done.stderr


@pytest.mark.slow
def test_million_rows_in_bounded_memory(tmp_path: Path) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    _write(small, 100_000)
    labels = _write(large, 1_000_000)

    small_run, _ = _report(small, tmp_path / "small.html")
    large_run, stderr = _report(large, tmp_path / "large.html")

    # The progress bar went to the end, in bytes read.
    assert re.search(r"reading: 100%.*\d+(\.\d+)?M", stderr), stderr[-500:]
    assert "1,000,000 records, 7 charts" in stderr
    page = (tmp_path / "large.html").read_text(encoding="utf-8")
    assert "1,000,000 records from" in page
    assert 'id="fig-calibration"' in page and "calibration error (ECE)" in page
    for label, n in labels.items():
        assert f'<td>{label}</td><td class="n">{n:,}</td>' in page
    # Ten times the rows (and 90,000 more one-off templates) may not cost ten times the memory:
    # the growth allowed is what interpreter noise and larger bar-chart numbers can explain.
    growth_mib = (large_run["peak_kib"] - small_run["peak_kib"]) / 1024
    print(f"peak RSS: 100k rows {small_run['peak_kib'] / 1024:.0f} MiB, 1M rows {large_run['peak_kib'] / 1024:.0f} MiB")
    assert growth_mib < 40, f"peak RSS grew {growth_mib:.0f} MiB from 100k to 1M rows"
