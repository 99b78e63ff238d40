"""``bootstrap-report.json``: what a bootstrap run read, asked and trained, written into the work
folder and the bundle (`logclass report models/NAME` prints it) and printed at the end.

- labels by share of lines and of templates (the trained ones; the rest by outcome);
- the LLM's confidence distribution over its answers about these logs;
- LLM calls per 1,000 lines: this run's calls, and all the answers the bundle needed (cached
  ones from earlier runs included);
- minutes taken, by phase.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from logclass.core.files import read_json
from logclass.core.schema import load
from logclass.core.typed import Json, MayOmit, doc, to_plain
from logclass.training.bootstrap.errors import BootstrapError
from logclass.training.bootstrap.outcomes import TRAINED, Outcome
from logclass.training.report import table

REPORT_FILE = "bootstrap-report.json"
# Upper bounds of the confidence buckets; the last takes the rest.
BUCKETS = ((0.2, "<0.2"), (0.5, "0.2-0.5"), (0.8, "0.5-0.8"), (0.9, "0.8-0.9"), (1.01, ">=0.9"))
Count = Annotated[int, Json(minimum=0)]


@dataclass(frozen=True)
class Share:
    templates: Count
    lines: Count
    share_of_templates: float
    share_of_lines: float


@dataclass(frozen=True)
class InputInfo:
    logs: str
    files: Count
    lines: Annotated[int, doc("records read (the lines classified into templates)")]
    blank: Count
    skipped: Annotated[Mapping[str, int], doc("lines left out, by reason")]
    regex_misses: Annotated[int, doc("plain lines --source-regex did not match (given the default source)")]
    templates: Count


@dataclass(frozen=True)
class LlmInfo:
    models: tuple[str, ...]
    calls: Annotated[int, doc("questions sent this run")]
    example_calls: Annotated[
        int, MayOmit(0), doc("calls writing a worked example for a label without one (examples.yaml)")
    ]
    failed: Annotated[int, doc("calls without an answer (asked again next run)")]
    cached: Annotated[int, doc("answers reused from the answers file")]
    corrected: Annotated[int, doc("templates labelled by the review file")]
    unasked: Count
    stopped: Annotated[str | None, doc("why asking stopped early: max_llm_calls, max_minutes, llm_failing")]
    last_error: str
    calls_per_1000_lines: float
    answers_per_1000_lines: Annotated[float, doc("every answer the bundle used, cached ones included")]
    confidence: Annotated[Mapping[str, int], doc("the LLM's answers about these logs, by confidence")]


@dataclass(frozen=True)
class Minutes:
    reading: float
    asking: float
    training: float
    total: float


@dataclass(frozen=True)
class BootstrapReport:
    input: InputInfo
    llm: LlmInfo
    min_confidence: float
    labels: Annotated[Mapping[str, Share], doc("trained labels, most lines first")]
    outcomes: Annotated[Mapping[str, Share], doc("templates by what bootstrap did with them")]
    bundle: Annotated[str | None, doc("the bundle written; null: none (--no-train, or training refused)")]
    minutes: Minutes

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = to_plain(self)
        return out


def shares(outcomes: Sequence[Outcome], key: str) -> dict[str, Share]:
    """Templates and lines per label (``key`` "label", trained templates) or per status."""
    total_templates = max(1, len(outcomes))
    total_lines = max(1, sum(o.lines.count for o in outcomes))
    templates: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for outcome in outcomes:
        name = outcome.label if key == "label" else outcome.status
        if name is None:
            continue
        templates[name] += 1
        lines[name] += outcome.lines.count
    return {
        name: Share(templates[name], n, round(templates[name] / total_templates, 4), round(n / total_lines, 4))
        for name, n in lines.most_common()
    }


def confidence_buckets(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts = {name: 0 for _, name in BUCKETS}
    for outcome in outcomes:
        if outcome.answer is None:
            continue
        name = next(name for bound, name in BUCKETS if outcome.answer.confidence < bound)
        counts[name] += 1
    return counts


def write_report(report: BootstrapReport, *folders: Path) -> None:
    text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    for folder in folders:
        (folder / REPORT_FILE).write_text(text, encoding="utf-8")


def read_report(folder: Path) -> BootstrapReport:
    path = folder / REPORT_FILE
    if not path.is_file():
        raise BootstrapError(
            f"{folder} has no {REPORT_FILE}: `logclass report` on a folder reads the report of a bundle made by "
            "`logclass bootstrap`; for a classified CSV give the CSV"
        )
    return load(BootstrapReport, read_json(path, "bootstrap report", error=BootstrapError), str(path), BootstrapError)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def format_report(report: BootstrapReport) -> str:
    source, llm = report.input, report.llm
    skipped = sum(source.skipped.values())
    lines = [
        f"bootstrap of {source.logs}: {source.files} file(s), {source.lines:,} lines, {source.templates:,} templates"
        + (f"; {skipped:,} lines skipped ({_reasons(source.skipped)})" if skipped else ""),
        f"LLM {', '.join(llm.models) or '(none asked)'}: {llm.calls:,} calls this run ({llm.failed} failed)"
        + (f" and {llm.example_calls} writing worked examples" if llm.example_calls else "")
        + ", "
        f"{llm.cached:,} answers reused, {llm.corrected:,} templates from the review; "
        f"{llm.calls_per_1000_lines:.1f} calls per 1,000 lines ({llm.answers_per_1000_lines:.1f} with reused answers)",
    ]
    if llm.stopped is not None:
        why = {"max_llm_calls": "--max-llm-calls", "max_minutes": "--max-minutes"}.get(llm.stopped, "the LLM failing")
        lines.append(f"stopped asking early ({why}): {llm.unasked:,} templates unasked; run again to go on")
    if llm.last_error:
        lines.append(f"last LLM error: {llm.last_error}")
    rows = [
        [name, s.lines, _pct(s.share_of_lines), s.templates, _pct(s.share_of_templates)]
        for name, s in report.labels.items()
    ]
    lines += ["", table(["label (trained)", "lines", "of lines", "templates", "of templates"], rows), ""]
    rows = [
        [name + ("" if name in TRAINED else " (kept out)"), s.lines, _pct(s.share_of_lines), s.templates,
         _pct(s.share_of_templates)]
        for name, s in report.outcomes.items()
    ]  # fmt: skip
    lines += [table(["outcome", "lines", "of lines", "templates", "of templates"], rows), ""]
    lines.append(
        "the LLM's confidence, over its answers: "
        + ", ".join(f"{name} {n}" for name, n in llm.confidence.items())
        + f" (trained on >= {report.min_confidence:g})"
    )
    m = report.minutes
    lines.append(
        f"minutes: reading {m.reading:.2f}, asking {m.asking:.2f}, training {m.training:.2f}, total {m.total:.2f}"
    )
    lines.append(f"bundle: {report.bundle}" if report.bundle else "bundle: none written")
    return "\n".join(lines)


def _reasons(skipped: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n:,}" for reason, n in sorted(skipped.items()) if n)
