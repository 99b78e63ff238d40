from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from logclass.engine.blocking import BlockingEngine as Router
from logclass.jobs.csv_classify import classify_csv
from logclass.jobs.rows import CsvInputError
from tests.conftest import SEED_TEST_CSV


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        return list(csv.DictReader(fh))


def test_seed_sample(router: Router, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    summary = classify_csv(SEED_TEST_CSV, out, router, progress=False)
    rows = _read(out)
    assert summary.rows == len(rows) == 10
    assert list(rows[0]) == ["source", "log_message", "target_label", "tier", "confidence", "error"]
    labels = [r["target_label"] for r in rows]
    assert labels[:4] == ["Security Alert", "User Action", "System Notification", "System Notification"]
    assert rows[5]["target_label"] == "Security Alert"
    assert [r["tier"] for r in rows[6:]] == ["none"] * 4  # LegacyCRM: no LLM tier yet
    # The leading space and quotes of the seed export are parsed, not kept.
    assert rows[0]["log_message"] == "IP 192.168.133.114 blocked due to potential attack"
    assert summary.by_tier["regex"] == 3


def test_other_columns_kept_and_collisions_renamed(router: Router, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "id,source,log_message,target_label\n1,ModernCRM,Backup completed successfully.,gold-1\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.csv"
    summary = classify_csv(src, out, router, progress=False)
    (row,) = _read(out)
    assert row["id"] == "1" and row["input_target_label"] == "gold-1"
    assert row["target_label"] == "System Notification"
    assert summary.renamed_columns == {"target_label": "input_target_label"}


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_a_spreadsheet_would_run_is_written_after_a_quote(router: Router, tmp_path: Path, start: str) -> None:
    """OWASP's CSV injection: =cmd|' /C calc'!A0 in a log line must not reach a spreadsheet as a
    formula through the output file (the console's download)."""
    formula = f"{start}cmd|' /C calc'!A0"
    src = tmp_path / "in.csv"
    with src.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["source", "log_message", formula], [formula, formula, formula]])
    out = tmp_path / "out.csv"
    classify_csv(src, out, router, progress=False)
    header, row = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert row[0] == row[1] == row[2] == "'" + formula
    # Column names are read stripped: a tab or CR before one is gone, and nothing is left to run.
    assert header[2] == ("'" + formula if start.strip() else formula.strip())
    assert row[3] and not row[3].startswith(("'", *"=+-@")), "the label is the classifier's own"


def test_bad_rows_are_flagged_and_nothing_is_lost(router: Router, tmp_path: Path) -> None:
    src = tmp_path / "messy.csv"
    huge = "A" * 200_000  # past csv's default field limit and the router's message limit
    src.write_bytes(
        b"source,log_message\n"
        b"ModernCRM,\n"
        b"ModernCRM,caf\xe9 latin-1 bytes\n" + f"ModernCRM,{huge}\n".encode() + b"ModernCRM\n"
        b"ModernCRM,unquoted, comma in message\n"
        b"\n"
        b"ModernCRM,Backup completed successfully.\n"
    )
    out = tmp_path / "out.csv"
    summary = classify_csv(src, out, router, progress=False)
    rows = _read(out)
    assert [r["error"] for r in rows] == [
        "empty_message",
        "invalid_utf8",
        "message_too_long",
        "empty_message",
        "malformed_row",
        "",
    ]
    # Surplus fields are folded back with a comma (skipinitialspace ate the space after it).
    assert rows[4]["log_message"] == "unquoted,comma in message"
    assert rows[-1]["target_label"] == "System Notification"
    # Undecodable bytes go out exactly as they came in.
    assert b"caf\xe9 latin-1 bytes" in out.read_bytes()
    assert len(rows[2]["log_message"]) == 200_000
    assert summary.errors["invalid_utf8"] == 1
    assert "--encoding" in summary.format()


def test_encoding_option(router: Router, tmp_path: Path) -> None:
    src = tmp_path / "latin.csv"
    src.write_bytes("source,log_message\nModernCRM,Backup completed successfully. café\n".encode("latin-1"))
    out = tmp_path / "out.csv"
    classify_csv(src, out, router, encoding="latin-1", progress=False)
    (row,) = _read(out)
    assert row["error"] == "" and row["log_message"].endswith("café")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "is empty"),
        ("source,message\na,b\n", "missing column(s) ['log_message']"),
        ("log_message\nb\n", "missing column(s) ['source']"),
    ],
)
def test_unusable_inputs(router: Router, tmp_path: Path, content: str, fragment: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text(content)
    with pytest.raises(CsvInputError) as err:
        classify_csv(src, tmp_path / "out.csv", router, progress=False)
    assert fragment in str(err.value)
    with pytest.raises(CsvInputError, match="cannot read"):
        classify_csv(tmp_path / "nope.csv", None, router, progress=False)


def test_chunks_preserve_order(router: Router, tmp_path: Path) -> None:
    src = tmp_path / "many.csv"
    messages = ["Backup completed successfully.", "Multiple login failures occurred on user 7 account"] * 50
    with src.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["n", "source", "log_message"])
        writer.writerows([i, "ModernCRM", m] for i, m in enumerate(messages))
    out = tmp_path / "out.csv"
    classify_csv(src, out, router, chunk_rows=7, progress=False)
    rows = _read(out)
    assert [int(r["n"]) for r in rows] == list(range(100))
    assert [r["target_label"] for r in rows[:2]] == ["System Notification", "Security Alert"]
    assert len({r["target_label"] for r in rows[::2]}) == 1


def test_table_output(router: Router) -> None:
    buffer = io.StringIO()
    classify_csv(SEED_TEST_CSV, None, router, progress=False, table_out=buffer)
    lines = buffer.getvalue().splitlines()
    assert lines[0].split()[:4] == ["source", "label", "tier", "conf"]
    assert len(lines) == 12 and "User Action" in lines[3]
