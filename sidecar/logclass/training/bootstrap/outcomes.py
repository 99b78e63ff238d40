"""What each template becomes: a labelled training row, or a line for review.

- ``corrected``: the review file gives its label, which wins over the LLM's answer;
- ``answered``: the LLM answered at or above ``min_confidence``: trained on;
- ``unsure``: answered below it, kept out of the bundle (a wrong label in the memory would
  answer every later line of the template) and listed for review;
- ``guarded``: its line ordered a label and the guard took it out of the answer set: an answer
  to a hostile line teaches nothing, as in the LLM tier;
- ``none``: the LLM (or the reviewer) chose the fallback label, the line fits none of the labels;
  kept out, so the serving pipeline escalates such lines rather than learning a catch-all;
- ``unasked``: the budget ran out (or the LLM failed) before its turn.

Training rows carry each template's line count, capped: the counts weigh the memory's label
counts and the manifest's label counts; the head learns distinct templates whatever the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from logclass.training.bootstrap.answers import Answer
from logclass.training.bootstrap.templates import TemplateLines
from logclass.training.dataset import LabelledRow

CORRECTED, ANSWERED, UNSURE, GUARDED, NONE, UNASKED = "corrected", "answered", "unsure", "guarded", "none", "unasked"
TRAINED = (CORRECTED, ANSWERED)
# Rows per (source, template) in the training CSV: enough for counts to show which templates
# are common, few enough that the CSV stays small on a template that fills the logs.
MAX_ROWS_PER_TEMPLATE = 20


@dataclass(frozen=True)
class Correction:
    """A review file's row with a corrected label."""

    source: str
    template: str
    example: str
    count: int
    label: str


@dataclass(frozen=True)
class Outcome:
    lines: TemplateLines
    answer: Answer | None
    status: str
    # The label trained on; None when the template stays out of the bundle.
    label: str | None
    # The review file's label, kept so the next review file carries it on.
    correction: str | None = None

    @property
    def confidence(self) -> float | None:
        return self.answer.confidence if self.answer is not None else None


def decide(
    templates: Iterable[TemplateLines],
    answers: Mapping[str, Answer],
    corrections: Mapping[str, Correction],
    *,
    min_confidence: float,
    fallback: str,
) -> list[Outcome]:
    """An outcome per template; corrected templates the logs no longer hold join at the end
    (a reviewer's label is worth keeping whatever sample it came from)."""
    out = []
    seen = set()
    for lines in templates:
        seen.add(lines.template)
        out.append(
            _outcome(lines, answers.get(lines.template), corrections.get(lines.template), min_confidence, fallback)
        )
    for template, correction in corrections.items():
        if template not in seen:
            lines = TemplateLines(template, len(out), correction.count, {correction.source: correction.count})
            lines.examples[correction.source] = correction.example
            out.append(_outcome(lines, answers.get(template), correction, min_confidence, fallback))
    return out


def _outcome(
    lines: TemplateLines, answer: Answer | None, correction: Correction | None, min_confidence: float, fallback: str
) -> Outcome:
    if correction is not None:
        if correction.label == fallback:
            return Outcome(lines, answer, NONE, None, correction.label)
        return Outcome(lines, answer, CORRECTED, correction.label, correction.label)
    if answer is None:
        return Outcome(lines, None, UNASKED, None)
    if answer.guarded:
        return Outcome(lines, answer, GUARDED, None)
    if answer.label == fallback:
        return Outcome(lines, answer, NONE, None)
    if answer.confidence < min_confidence:
        return Outcome(lines, answer, UNSURE, None)
    return Outcome(lines, answer, ANSWERED, answer.label)


def training_rows(outcomes: Iterable[Outcome], cap: int = MAX_ROWS_PER_TEMPLATE) -> list[LabelledRow]:
    """Each trained template's first line per source, repeated by its line count up to ``cap``."""
    rows = []
    for outcome in outcomes:
        if outcome.label is None:
            continue
        for source, count in outcome.lines.by_source.items():
            row = LabelledRow(source, outcome.lines.examples[source], outcome.label)
            rows.extend([row] * min(count, cap))
    return rows
