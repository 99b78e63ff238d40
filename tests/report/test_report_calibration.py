"""Calibration in `logclass report`: bins, ECE and the reliability diagram on a CSV whose numbers
are worked out by hand below."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from logclass import config
from logclass.jobs.report import ReportOptions, build_report
from logclass.jobs.report.scores import CalibrationCounts, calibration, calibration_bin
from logclass.jobs.report.stats import collect

HEADER = "source,log_message,target_label,tier,confidence,error,truth\n"
# Seven rows count: bin [0.9, 1.0] holds 0.95 ok, 0.95 ok, 1.0 ok, 0.9 wrong (mean 0.95, accuracy
# 0.75); bin [0.7, 0.8) holds 0.75 ok, 0.75 wrong (mean 0.75, accuracy 0.5); bin [0.2, 0.3) holds
# 0.25 wrong. ECE = (4 * 0.2 + 2 * 0.25 + 1 * 0.25) / 7 = 1.55 / 7 = 31/140.
# |confidence - correct| = 0.05 + 0.05 + 0 + 0.9 + 0.25 + 0.75 + 0.25 = 2.25, / 7 = 9/28.
COUNTED = (
    "A,disk full on sda,Error,embedding,0.95,,Error\n"
    "A,disk full on sdb,Error,embedding,0.95,,Error\n"
    "A,login ok,User Action,regex,1.0,,User Action\n"
    "B,cpu high,Resource Usage,llm,0.9,,Error\n"
    "B,user created,User Action,embedding,0.75,,User Action\n"
    "B,backup done,Error,llm,0.75,,System Notification\n"
    "C,odd line,Error,embedding,0.25,,Security Alert\n"
)
# Rows that are no confident claim, no answer, or no number: none of them may move the figures.
LEFT_OUT = (
    "C,unknown thing,Unclassified,none,0.0,,Error\n"
    "C,slow answer,Unclassified,pending,0.0,,Error\n"
    "C,relay gave up,Unclassified,fallback,0.0,,Error\n"
    "C,way too long,Unclassified,embedding,0.6,message_too_long,Error\n"
    "D,no answer here,Error,embedding,0.9,,\n"
    "D,bad number,Error,embedding,high,,Error\n"
)
ECE = 31 / 140
MEAN_ABS_ERROR = 9 / 28


@pytest.fixture
def handmade(tmp_path: Path) -> Path:
    path = tmp_path / "classified.csv"
    path.write_text(HEADER + COUNTED + LEFT_OUT, encoding="utf-8")
    return path


def _chart_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size[0] > 400 and image.size[1] > 300
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20


def test_bins_are_equal_width_and_closed_below() -> None:
    assert [calibration_bin(c) for c in (0.0, 0.0999, 0.1, 0.3, 0.7, 0.8999, 0.9, 1.0)] == [0, 0, 1, 3, 7, 8, 9, 9]
    # A decimal k/10 must land in bin k, not k - 1, through the float product.
    assert [calibration_bin(k / 10) for k in range(10)] == list(range(10))


def test_no_rows_is_undefined_not_zero() -> None:
    empty = calibration(CalibrationCounts())
    assert empty.rows == 0 and empty.ece is None and empty.mean_abs_error is None
    assert [b.rows for b in empty.bins] == [0] * 10


def test_bins_and_ece_of_the_handmade_csv(handmade: Path) -> None:
    stats = collect(handmade, lambda m: m, gold="truth", progress=False)
    overall = calibration(stats.calibration_overall())
    assert overall.rows == 7
    assert overall.ece == pytest.approx(ECE, abs=1e-12)
    assert overall.mean_abs_error == pytest.approx(MEAN_ABS_ERROR, abs=1e-12)
    filled = [b for b in overall.bins if b.rows]
    assert [(b.low, b.high, b.rows) for b in filled] == [(0.2, 0.3, 1), (0.7, 0.8, 2), (0.9, 1.0, 4)]
    assert [b.confidence for b in filled] == pytest.approx([0.25, 0.75, 0.95])
    assert [b.accuracy for b in filled] == [0.0, 0.5, 0.75]
    assert [(b.low, b.high) for b in overall.bins] == [(k / 10, (k + 1) / 10) for k in range(10)]
    assert stats.not_calibrated == {"tier none": 1, "tier pending": 1, "tier fallback": 1, "error": 1}
    per_tier = {tier: calibration(counts) for tier, counts in stats.calibration.items()}
    assert {tier: cal.rows for tier, cal in per_tier.items()} == {"embedding": 4, "regex": 1, "llm": 2}
    # embedding: 0.95 ok, 0.95 ok in one bin (gap 0.05 x 2), 0.75 ok (0.25), 0.25 wrong (0.25): 0.6 / 4.
    assert per_tier["embedding"].ece == pytest.approx(0.15)
    assert per_tier["regex"].ece == pytest.approx(0.0)
    # llm: 0.9 wrong and 0.75 wrong, each alone in its bin: (0.9 + 0.75) / 2.
    assert per_tier["llm"].ece == pytest.approx(0.825)


def test_report_shows_the_calibration(handmade: Path, cfg: config.Settings, tmp_path: Path) -> None:
    html_path, png_dir = tmp_path / "report.html", tmp_path / "png"
    result = build_report(handmade, html_path, png_dir, cfg, ReportOptions(gold="truth", progress=False))
    assert "calibration" in result.charts
    assert result.calibration is not None
    assert result.calibration.ece == pytest.approx(ECE, abs=1e-12)
    assert result.calibration.mean_abs_error == pytest.approx(MEAN_ABS_ERROR, abs=1e-12)
    _chart_png((png_dir / "calibration.png").read_bytes())

    page = html_path.read_text(encoding="utf-8")
    assert "<b>0.221</b><span>calibration error (ECE)</span>" in page
    assert "<b>0.321</b><span>mean |confidence - correct|</span>" in page
    assert '<h2 id="calibration">Calibration</h2>' in page
    assert '<figure id="fig-calibration"><img src="data:image/png;base64,' in page
    assert "(1 error, 1 tier fallback, 1 tier none, 1 tier pending)" in page
    for row in (
        ("[0.0, 0.1)", "0", "&ndash;", "&ndash;"),
        ("[0.2, 0.3)", "1", "0.250", "0.000"),
        ("[0.7, 0.8)", "2", "0.750", "0.500"),
        ("[0.9, 1.0]", "4", "0.950", "0.750"),
        ("embedding", "4", "0.150", "0.150"),
        ("llm", "2", "0.825", "0.825"),
    ):
        first, *numbers = row
        assert f"<tr><td>{first}</td>" + "".join(f'<td class="n">{n}</td>' for n in numbers) + "</tr>" in page


@pytest.mark.parametrize(
    ("content", "gold"),
    [
        # The same rows, but no gold column named and no input_target_label: nothing to judge against.
        (HEADER + COUNTED, None),
        # A gold column but no confidence column.
        ("source,log_message,target_label,truth\nA,disk full,Error,Error\n", "truth"),
        # Gold and confidence, but only rows whose confidence is no claim.
        (HEADER + "C,unknown thing,Unclassified,none,0.0,,Error\nC,x,Error,embedding,0.4,internal,Error\n", "truth"),
    ],
)
def test_no_calibration_without_judged_rows(
    cfg: config.Settings, tmp_path: Path, content: str, gold: str | None
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(content, encoding="utf-8")
    html_path, png_dir = tmp_path / "report.html", tmp_path / "png"
    result = build_report(src, html_path, png_dir, cfg, ReportOptions(gold=gold, progress=False))
    assert "calibration" not in result.charts
    assert result.calibration is None
    assert not (png_dir / "calibration.png").exists()
    page = html_path.read_text(encoding="utf-8")
    assert "Calibration</h2>" not in page
    assert "calibration error (ECE)" not in page
