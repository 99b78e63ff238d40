"""`logclass report` on real classifier output: the seed set, with and without a gold column."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from logclass import config
from logclass.core.bundle import ModelBundle
from logclass.jobs.csv_classify import classify_csv
from logclass.jobs.report import ReportOptions, build_report
from tests.conftest import NO_LLM, SEED_CSV, SEED_TEST_CSV, MemoEncoder, offline_engine, run_cli
from tests.report.chromium import artifacts_dir, require_chromium, visit

ALL_CHARTS = {"labels", "labels_by_source", "tiers", "confidence", "confusion", "precision_recall", "calibration"}
GOLD_CHARTS = {"confusion", "precision_recall", "calibration"}
# Tiers and flags whose confidence is no claim, left out of the calibration figures.
NO_CLAIM = {"none", "pending", "fallback"}
# Markup that would run, or fetch, if the report did not escape log lines.
HOSTILE = '<script>window.pwned = 1; console.error("pwned")</script><img src="http://127.0.0.1:9/x.png">'


@pytest.fixture(scope="module")
def classified(
    tmp_path_factory: pytest.TempPathFactory, cfg: config.Settings, bundle: ModelBundle, encoder: MemoEncoder
) -> dict[str, Path]:
    """The seed set (gold labels kept as input_target_label, plus a hostile line) and the 10-row
    seed sample (no gold), classified by the real router without an LLM."""
    work = tmp_path_factory.mktemp("classified")
    seed = work / "seed.csv"
    text = SEED_CSV.read_text(encoding="utf-8")
    hostile = HOSTILE.replace('"', '""')
    seed.write_text(text + f'2025-01-01 00:00:00,ModernCRM,"{hostile}",Security Alert,bert\n', encoding="utf-8")
    router = offline_engine(cfg, bundle=bundle, encoder=encoder)
    outputs = {"gold": work / "gold_out.csv", "sample": work / "sample_out.csv"}
    classify_csv(seed, outputs["gold"], router, progress=False)
    classify_csv(SEED_TEST_CSV, outputs["sample"], router, progress=False)
    router.close()
    return outputs


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _check_png(path_or_bytes: Path | bytes) -> Image.Image:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    width, height = image.size
    assert 400 <= width <= 2000 and 150 <= height <= 2000, image.size
    # A blank or single-colour canvas would pass the checks above; a chart has many colours.
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20
    return image


def test_report_with_gold_column(classified: dict[str, Path], cfg: config.Settings, tmp_path: Path) -> None:
    html_path, png_dir = tmp_path / "report.html", tmp_path / "png"
    result = build_report(classified["gold"], html_path, png_dir, cfg, ReportOptions(progress=False))

    rows = _rows(classified["gold"])
    assert result.rows == len(rows) == 2411
    assert set(result.charts) == ALL_CHARTS
    assert {p.name for p in png_dir.iterdir()} == {f"{name}.png" for name in ALL_CHARTS}
    for png in png_dir.iterdir():
        _check_png(png)

    page = html_path.read_text(encoding="utf-8")
    # Self-contained: every image is inline, nothing is fetched.
    assert page.count('src="data:image/png;base64,') == len(ALL_CHARTS)
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    # The figures agree with a count made here, independently of the report's code.
    right = sum(r["target_label"] == r["input_target_label"] for r in rows)
    assert f"{right / len(rows):.2%}</b><span>accuracy vs gold" in page
    # Calibration over the confident claims, computed here row by row.
    claims = [r for r in rows if r["tier"] not in NO_CLAIM and not r["error"]]
    bins: dict[int, list[tuple[float, bool]]] = {}
    for r in claims:
        conf = float(r["confidence"])
        bins.setdefault(min(int(conf * 10), 9), []).append((conf, r["target_label"] == r["input_target_label"]))
    ece = sum(abs(sum(ok for _, ok in b) - sum(c for c, _ in b)) for b in bins.values()) / len(claims)
    assert result.calibration is not None and result.calibration.rows == len(claims)
    assert result.calibration.ece == pytest.approx(ece)
    assert f"<b>{ece:.3f}</b><span>calibration error (ECE)" in page
    for label, n in Counter(r["target_label"] for r in rows).items():
        assert f'<td>{label}</td><td class="n">{n:,}</td>' in page
    assert "Against the gold column <code>input_target_label</code>" in page
    # The seed's Workflow Error rows come from LegacyCRM, which needs the LLM: recall 0 without one.
    assert re.search(r"<td>Workflow Error</td><td class=\"n\">&ndash;</td><td class=\"n\">0\.000</td>", page)
    # Log lines are data: the hostile line is shown escaped, never as markup.
    assert HOSTILE not in page
    assert "&lt;script&gt;window.pwned" in page


def test_report_without_gold(classified: dict[str, Path], cfg: config.Settings, tmp_path: Path) -> None:
    html_path = tmp_path / "report.html"
    result = build_report(classified["sample"], html_path, None, cfg, ReportOptions(progress=False))
    assert result.rows == 10
    assert set(result.charts) == ALL_CHARTS - GOLD_CHARTS
    assert result.calibration is None
    page = html_path.read_text(encoding="utf-8")
    assert "Against the gold column" not in page
    assert "Calibration</h2>" not in page and "fig-calibration" not in page
    assert "Low-confidence examples to review" in page
    assert result.pngs == []


def test_report_on_a_labelled_dataset_without_tiers(cfg: config.Settings, tmp_path: Path) -> None:
    """The raw seed set (labels but no tier/confidence): label and source views only."""
    result = build_report(SEED_CSV, None, tmp_path, cfg, ReportOptions(progress=False))
    assert set(result.charts) == {"labels", "labels_by_source"}
    for png in result.pngs:
        _check_png(png)


def test_confidence_thresholds_come_from_the_config(classified: dict[str, Path], tmp_path: Path) -> None:
    """A different embedding.min_confidence moves the line drawn on the histogram: the chart
    bytes differ, so the threshold is read from the config, not fixed in the chart."""
    base = config.load(environ=NO_LLM)
    moved = config.load(environ={**NO_LLM, "LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "0.9"})
    first = build_report(classified["sample"], None, tmp_path / "a", base, ReportOptions(progress=False))
    second = build_report(classified["sample"], None, tmp_path / "b", moved, ReportOptions(progress=False))
    assert (tmp_path / "a" / "labels.png").read_bytes() == (tmp_path / "b" / "labels.png").read_bytes()
    assert (tmp_path / "a" / "confidence.png").read_bytes() != (tmp_path / "b" / "confidence.png").read_bytes()
    assert first.charts == second.charts


def test_report_opens_in_headless_chromium(classified: dict[str, Path], cfg: config.Settings, tmp_path: Path) -> None:
    binary = require_chromium()
    html_path = tmp_path / "report.html"
    build_report(classified["gold"], html_path, None, cfg, ReportOptions(progress=False))

    page = visit(binary, html_path.as_uri(), tmp_path)

    screenshot = artifacts_dir() / "report-seed.png"
    screenshot.write_bytes(page.screenshot)
    print(f"screenshot: {screenshot}")
    assert page.errors == []
    assert page.title == "logclass report: gold_out.csv"
    assert page.headings[:3] == ["Labels", "Labels per source", "Tiers"]
    assert "Against the gold column input_target_label" in page.headings
    assert "Calibration" in page.headings
    assert len(page.images) == len(ALL_CHARTS)
    for image in page.images:
        assert image["complete"] and image["width"] > 400 and image["height"] > 150, image
    # Only the page itself and its inline images: the hostile <img> was not turned into a fetch.
    assert page.requests[0] == html_path.as_uri()
    assert all(url.startswith("data:image/png") for url in page.requests[1:]), page.requests
    shot = Image.open(io.BytesIO(page.screenshot))
    assert shot.size[0] == 1280 and shot.size[1] > 3000


def test_cli_report(classified: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    done = run_cli("report", str(classified["sample"]), "-o", str(out), "--png", str(tmp_path / "png"))
    assert done.returncode == 0, done.stderr
    assert "10 records, 4 charts: wrote" in done.stderr
    assert "reading: 100%" in done.stderr and "drawing: 100%" in done.stderr
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("source,log_message\nA,hello\n", [], "missing column(s) ['target_label']"),
        ("", [], "is empty: expected a header"),
        ("source,log_message,target_label\n", [], "has a header but no rows"),
        ("source,log_message,target_label\nA,b,C\n", ["--gold", "truth"], "--gold column 'truth' is not in the header"),
        ("source,log_message,target_label\nA,b,C\n", ["--templates", "0"], "--templates and --examples"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, content: str, args: list[str], message: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text(content, encoding="utf-8")
    done = run_cli("report", str(src), "-o", str(tmp_path / "r.html"), "--no-progress", *args)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_nothing_to_write_names_the_fix(tmp_path: Path) -> None:
    done = run_cli("report", str(SEED_TEST_CSV))
    assert done.returncode == 2
    assert "pass -o report.html and/or --png DIR" in done.stderr


def test_bad_rows_are_counted_not_fatal(cfg: config.Settings, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "source,log_message,target_label,tier,confidence,error\n"
        "A,disk full,Error,embedding,0.93,\n"
        "A,too,many,fields,here,0.5,x\n"
        "B,odd confidence,Error,embedding,high,\n"
        "B,out of range,Error,embedding,1.7,\n"
        "C,too long,Unclassified,none,0.0,message_too_long\n",
        encoding="utf-8",
    )
    html_path = tmp_path / "r.html"
    result = build_report(src, html_path, None, cfg, ReportOptions(progress=False))
    page = html_path.read_text(encoding="utf-8")
    assert result.rows == 4
    assert "1 rows had the wrong number of fields" in page
    assert "2 rows had a confidence that is not a number in [0, 1]" in page
    assert "<td>message_too_long</td>" in page


def test_rows_without_a_gold_answer_are_left_out_of_the_scores(cfg: config.Settings, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "source,log_message,target_label,tier,confidence,error,truth\n"
        "A,disk full,Error,embedding,0.93,,Error\n"
        "A,login ok,User Action,regex,1.0,,Security Alert\n"
        "B,disk low,Error,embedding,0.61,,\n"
        "B,disk gone,Error,embedding,0.55,,\n",
        encoding="utf-8",
    )
    html_path = tmp_path / "r.html"
    result = build_report(src, html_path, None, cfg, ReportOptions(gold="truth", progress=False))
    page = html_path.read_text(encoding="utf-8")
    assert "confusion" in result.charts
    assert "50.00%</b><span>accuracy vs gold" in page  # 1 of the 2 labelled rows
    assert "2 rows have an empty gold column <code>truth</code>" in page
    # Only the labelled mismatch is shaded in the review list.
    assert page.count('<tr class="wrong">') == 1
