"""The review file: one CSV row per template, what a reviewer should look at first on top.

Columns: ``source, count, template, example, llm_label, confidence, status, corrected_label``.
Rows are sorted by ``count x (1 - confidence)``, then by count: a frequent template the LLM was
unsure of costs the most lines if wrong. A template kept out of the bundle (unsure, fits none,
guarded, unasked) counts as confidence 0, a corrected one as 1.
``status`` says what bootstrap did with the template (``outcomes``).

A reviewer fills ``corrected_label`` (empty: keep the LLM's answer; the fallback label: the
template fits none of the labels) and gives the file back with ``bootstrap --review-in``, where a
corrected label wins over the LLM's, or to ``train --extra``, which adds the corrected rows.
To accept an unsure answer, copy ``llm_label`` into ``corrected_label``. The review file a run
writes carries the corrections it was given, so the same file can be reviewed again and again;
a run without ``--review-in`` refuses to overwrite a review file holding corrections.

Cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first) are
written after a ``'``, as `logclass classify` writes them, and so are cells starting with ``'``
itself, so reading strips exactly one leading ``'`` and gets every cell back.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable
from pathlib import Path

from logclass.core.files import read_text
from logclass.core.masking import TemplateMasker
from logclass.core.private_files import make_folder, open_private
from logclass.training.bootstrap.errors import BootstrapError
from logclass.training.bootstrap.outcomes import ANSWERED, CORRECTED, Correction, Outcome
from logclass.training.dataset import LabelledRow

COLUMNS = ("source", "count", "template", "example", "llm_label", "confidence", "status", "corrected_label")
REQUIRED = ("source", "template", "example", "corrected_label")
_ESCAPED = ("=", "+", "-", "@", "\t", "\r", "'")
# Far above a review of every template of a large sample (100,000 templates of 1 KiB lines).
MAX_BYTES = 256 << 20


def _safe(cell: str) -> str:
    return "'" + cell if cell.startswith(_ESCAPED) else cell


def _unsafe(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def priority(outcome: Outcome) -> tuple[float, int]:
    """Lines that may be wrong or unlabelled: a trained answer's lines times its doubt; a
    template kept out counts in full (none of its lines is labelled by the bundle's memory), a
    corrected one not at all (it was reviewed)."""
    if outcome.status == CORRECTED:
        doubt = 0.0
    elif outcome.status == ANSWERED and outcome.answer is not None:
        doubt = 1.0 - outcome.answer.confidence
    else:
        doubt = 1.0
    return (-outcome.lines.count * doubt, -outcome.lines.count)


def write_review(path: Path, outcomes: Iterable[Outcome]) -> int:
    """The review file at ``path`` (readable by this user only: it holds log lines), corrections
    carried on; its rows."""
    ordered = sorted(outcomes, key=priority)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for outcome in ordered:
        lines, answer = outcome.lines, outcome.answer
        confidence = "" if answer is None else f"{answer.confidence:.4f}"
        cells = [lines.source, str(lines.count), lines.template, lines.example]
        cells += [answer.label if answer is not None else "", confidence, outcome.status, outcome.correction or ""]
        writer.writerow([_safe(cell) for cell in cells])
    make_folder(path.parent)
    with open_private(path, append=False) as fh:
        fh.write(buffer.getvalue().encode("utf-8"))
    return len(ordered)


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The file's rows with their line numbers, cells unescaped."""
    text = read_text(path, "review file", max_bytes=MAX_BYTES, error=BootstrapError)
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise BootstrapError(
            f"review file {path}: missing column(s) {missing}; it needs {list(REQUIRED)} as `logclass bootstrap "
            f"--review` writes them (found {header})"
        )
    reader.fieldnames = header
    out = []
    try:
        for raw in reader:
            out.append((reader.line_num, {k: _unsafe(v or "") for k, v in raw.items() if k is not None}))
    except csv.Error as exc:
        raise BootstrapError(f"review file {path}:{reader.line_num}: unreadable CSV ({exc}); fix that row") from exc
    return out


def read_corrections(
    path: Path, labels: Collection[str], fallback: str, masker: TemplateMasker
) -> dict[str, Correction]:
    """Template -> its correction, for the rows with a ``corrected_label``; a label that is neither
    in ``labels`` nor the fallback label is an error naming the row. Templates are those of the
    examples under the current masks, as the answers file's are."""
    out: dict[str, Correction] = {}
    allowed = [*labels, fallback]
    for line, row in _rows(path):
        label = row["corrected_label"].strip()
        if not label:
            continue
        if label not in allowed:
            raise BootstrapError(
                f"review file {path}:{line}: corrected_label {label!r} is not a label of labels.yaml; use one of "
                f"{allowed} (the last: fits none), or leave it empty"
            )
        template = masker.template(row["example"]) if row["example"] else row["template"]
        out[template] = Correction(row["source"], template, row["example"], _count(row.get("count", "")), label)
    return out


def _count(cell: str) -> int:
    try:
        return max(1, int(cell))
    except ValueError:
        return 1


def corrected_rows(path: Path) -> list[LabelledRow]:
    """The corrected rows as labelled rows (source, example, corrected label), for
    `logclass train --extra review.csv`; train keeps those whose label its CSV has."""
    rows = []
    for _, row in _rows(path):
        label = row["corrected_label"].strip()
        if label and row["example"].strip():
            rows.append(LabelledRow(row["source"].strip(), row["example"].strip(), label))
    if not rows:
        raise BootstrapError(f"review file {path}: no row has a corrected_label; fill some in, or leave the file out")
    return rows


def check_overwrite(path: Path, review_in: Path | None) -> None:
    """Refuses to replace a review file holding corrections the run was not given: a rerun
    without ``--review-in`` would otherwise throw a reviewer's work away."""
    if not path.is_file() or (review_in is not None and review_in.resolve() == path.resolve()):
        return
    corrected = sum(1 for _, row in _rows(path) if row["corrected_label"].strip())
    if corrected:
        raise BootstrapError(
            f"review file {path} has {corrected} corrected label(s) this run would overwrite: fold them in with "
            f"--review-in {path}, or move the file away"
        )
