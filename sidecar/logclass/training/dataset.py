"""Reading labelled log CSVs (source, log_message, target_label)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logclass.core.files import read_text
from logclass.errors import LogclassError

REQUIRED = ("source", "log_message", "target_label")


class DatasetError(LogclassError):
    pass


@dataclass(frozen=True, slots=True)
class LabelledRow:
    source: str
    message: str
    label: str


def load_labelled_csv(path: str | Path) -> list[LabelledRow]:
    path = Path(path)
    try:
        fh = path.open(encoding="utf-8", errors="replace", newline="")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from exc
    rows: list[LabelledRow] = []
    skipped = 0
    with fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {missing}; a training CSV needs {list(REQUIRED)} (found {header})"
            )
        reader.fieldnames = header
        for raw in reader:
            source = (raw.get("source") or "").strip()
            message = (raw.get("log_message") or "").strip()
            label = (raw.get("target_label") or "").strip()
            if not message or not label:
                skipped += 1
                continue
            rows.append(LabelledRow(source, message, label))
    if skipped:
        print(f"note: {path}: skipped {skipped} row(s) with an empty log_message or target_label")
    if not rows:
        raise DatasetError(f"{path}: no labelled rows")
    return rows


def load_teacher_jsonl(path: str | Path) -> list[LabelledRow]:
    """Rows from an LLM teacher file (``llm.teacher_file``) or a learnt memory
    (``memory.learnt_file``): one JSON object per line with ``source``, ``example`` and
    ``label``. A bad line names its number; nothing is half-read, except a last line cut short
    by a crash (no newline after it), which is skipped. Entries with an ``origin`` (the learnt
    memory's) are lessons about their ``template``: only a template's last one is kept, as the
    service answers it."""
    path = Path(path)
    # Unbounded: a teacher file grows with every LLM answer, and training reads all of it.
    text = read_text(path, "teacher file", max_bytes=None, error=DatasetError)
    lines = text.splitlines()
    torn = bool(lines) and not text.endswith("\n")
    rows: list[LabelledRow] = []
    lessons: dict[str, int] = {}  # template -> index in rows of its latest lesson
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            row = LabelledRow(str(entry["source"]), str(entry["example"]).strip(), str(entry["label"]).strip())
            template = str(entry["template"]) if "origin" in entry else None
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            if torn and number == len(lines):
                break
            raise DatasetError(
                f"{path}:{number}: not a teacher entry ({exc}); each line needs JSON with source, example and label"
            ) from exc
        if template is not None and template in lessons:
            rows[lessons[template]] = row
        else:
            if template is not None:
                lessons[template] = len(rows)
            rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: no teacher entries")
    return rows


def row_hashes(rows: Iterable[LabelledRow]) -> np.ndarray:
    """64-bit identity of each row, so a bundle can name its training rows without storing them."""
    out = []
    for row in rows:
        key = f"{row.source}\x1f{row.message}\x1f{row.label}".encode("utf-8", "surrogatepass")
        out.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))
    return np.array(out, dtype=np.uint64)
