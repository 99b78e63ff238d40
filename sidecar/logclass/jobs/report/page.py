"""The report as one self-contained HTML page: inline CSS, images as data: URIs, no scripts, no
external fetches, so it opens offline and can be mailed or attached to a ticket as it is."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from logclass import __version__
from logclass.jobs.report.charts import Chart
from logclass.jobs.report.scores import CALIBRATION_BINS, Calibration, ClassScore, calibration
from logclass.jobs.report.stats import NO_CLAIM_TIERS, Example, ReportStats, TopEntry

MAX_CELL_CHARS = 300
# Shown where a ratio is undefined (no rows, a label never predicted).
UNDEFINED = "&ndash;"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0;
       color: #1d1d1f; background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #d8dbe0; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #5f6368; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #d8dbe0; border-radius: 6px; padding: 10px 14px; min-width: 130px; }
.card b { display: block; font-size: 20px; }
.card span { color: #5f6368; font-size: 12px; }
figure { margin: 8px 0; background: #fff; border: 1px solid #d8dbe0; border-radius: 6px; padding: 8px; }
figure img { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; background: #fff; width: 100%; margin: 6px 0; font-size: 13px; }
table.compact { width: auto; min-width: 40%; }
th, td { border: 1px solid #d8dbe0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef0f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.msg { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
tr.wrong td { background: #fdecea; }
.note { color: #5f6368; font-size: 12px; }
"""


@dataclass(frozen=True)
class Card:
    value: str
    caption: str


def _cell(text: str) -> str:
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return escape(text)


def _figure(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return (
        f'<figure id="fig-{escape(chart.name)}"><img src="data:image/png;base64,{data}" '
        f'alt="{escape(chart.alt)}" title="{escape(chart.title)}"></figure>'
    )


def _table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: Sequence[int] = (),
    msg: int = -1,
    flagged: Sequence[bool] = (),
    compact: bool = False,
) -> str:
    out = ['<table class="compact">' if compact else "<table>", "<thead><tr>"]
    out += [*(f"<th>{escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r, row in enumerate(rows):
        out.append('<tr class="wrong">' if r < len(flagged) and flagged[r] else "<tr>")
        for i, value in enumerate(row):
            cls = ' class="n"' if i in numeric else ' class="msg"' if i == msg else ""
            out.append(f"<td{cls}>{value}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _pct(n: int, total: int) -> str:
    return f"{n / total:.1%}" if total else UNDEFINED


def _score(value: float | None) -> str:
    return UNDEFINED if value is None else f"{value:.3f}"


def _count(entry: TopEntry) -> str:
    # Space-saving may overcount keys that entered late; say so rather than print a false exact.
    return f"{entry.count:,}" if entry.error == 0 else f"≤ {entry.count:,}"


def _label_table(stats: ReportStats) -> str:
    rows = [(escape(name), f"{n:,}", _pct(n, stats.rows)) for name, n in stats.labels.most_common()]
    return _table(["label", "records", "share"], rows, numeric=(1, 2), compact=True)


def _tier_table(stats: ReportStats) -> str:
    rows = [(escape(name or "(empty)"), f"{n:,}", _pct(n, stats.rows)) for name, n in stats.tiers.most_common()]
    return _table(["tier", "records", "share"], rows, numeric=(1, 2), compact=True)


def _templates(stats: ReportStats, per_label: int) -> str:
    out = []
    for label, _ in stats.labels.most_common():
        top = stats.templates.get(label)
        if top is None:
            continue
        rows = [
            (_count(entry), _pct(entry.count, stats.labels[label]), _cell(template), _cell(entry.example))
            for template, entry in top.top(per_label)
        ]
        out.append(f"<h3>{escape(label)} <span class='note'>({stats.labels[label]:,} records)</span></h3>")
        out.append(_table(["records", "of label", "template", "example"], rows, numeric=(0, 1), msg=3))
    return "".join(out)


def _examples(examples: Sequence[Example], gold: bool) -> str:
    head = ["confidence", "label", "tier", "source", "message"] + (["gold"] if gold else [])
    rows = [
        (
            f"{e.confidence:.3f}",
            escape(e.label),
            escape(e.tier),
            escape(e.source),
            _cell(e.message),
            *([escape(e.gold or "")] if gold else []),
        )
        for e in examples
    ]
    wrong = [e.gold is not None and e.gold != e.label for e in examples]
    return _table(head, rows, numeric=(0,), msg=4, flagged=wrong)


def _scores_table(scores: Sequence[ClassScore]) -> str:
    rows = [
        (escape(s.label), _score(s.precision), _score(s.recall), _score(s.f1), f"{s.support:,}", f"{s.predicted:,}")
        for s in scores
    ]
    return _table(["label", "precision", "recall", "F1", "gold rows", "predicted rows"], rows, numeric=(1, 2, 3, 4, 5))


def _calibration(stats: ReportStats, overall: Calibration, figure: str) -> str:
    left_out = stats.not_calibrated
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(left_out.items(), key=lambda kv: (-kv[1], kv[0])))
    excluded = "/".join(NO_CLAIM_TIERS)
    note = (
        f"Rows with a gold label and a confidence, binned by confidence into {CALIBRATION_BINS} equal-width bins; "
        "each point is a bin's mean confidence against its accuracy (label = gold), so a calibrated "
        "classifier lies on the diagonal. ECE is the row-weighted mean of |accuracy - mean confidence| "
        "over the bins. "
        f"Rows with tier {excluded} or an error are left out: their confidence is not a claim"
        + (f" ({kinds})." if kinds else ".")
    )
    bins = [
        (
            f"[{b.low:.1f}, {b.high:.1f}{']' if b.high == 1.0 else ')'}",
            f"{b.rows:,}",
            _score(b.confidence),
            _score(b.accuracy),
        )
        for b in overall.bins
    ]
    tiers = [(name, calibration(counts)) for name, counts in stats.calibration.items()]
    tiers.sort(key=lambda tc: (-tc[1].rows, tc[0]))
    per_tier = [
        (escape(name or "(no tier)"), f"{cal.rows:,}", _score(cal.ece), _score(cal.mean_abs_error))
        for name, cal in tiers
    ]
    return "".join(
        [
            '<h2 id="calibration">Calibration</h2>',
            f'<p class="note">{escape(note)}</p>',
            figure,
            _table(["confidence", "rows", "mean confidence", "accuracy"], bins, numeric=(1, 2, 3), compact=True),
            _table(["tier", "rows", "ECE", "mean |confidence - correct|"], per_tier, numeric=(1, 2, 3), compact=True),
        ]
    )


def render(
    stats: ReportStats,
    cards: Sequence[Card],
    charts: dict[str, Chart],
    scores: Sequence[ClassScore],
    overall: Calibration | None = None,
    *,
    templates_per_label: int,
) -> str:
    def fig(name: str) -> str:
        return _figure(charts[name]) if name in charts else ""

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>logclass report: {escape(stats.path.name)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>logclass report: {escape(stats.path.name)}</h1>",
        f'<p class="meta">{stats.rows:,} records from <code>{escape(str(stats.path))}</code>, '
        f"generated {now} by logclass {escape(__version__)}</p>",
        '<div class="cards">',
        *(f'<div class="card"><b>{escape(c.value)}</b><span>{escape(c.caption)}</span></div>' for c in cards),
        "</div>",
        '<h2 id="labels">Labels</h2>',
        fig("labels"),
        _label_table(stats),
        '<h2 id="sources">Labels per source</h2>',
        fig("labels_by_source"),
    ]
    if stats.has_tiers:
        parts += ['<h2 id="tiers">Tiers</h2>', fig("tiers"), _tier_table(stats)]
    if "confidence" in charts:
        parts += [
            '<h2 id="confidence">Confidence per tier</h2>',
            '<p class="note">Dashed lines: the tier\'s min_confidence in the config the report was run with; '
            "records below it escalate to the next tier.</p>",
            fig("confidence"),
        ]
    parts += [
        '<h2 id="templates">Most frequent templates per label</h2>',
        '<p class="note">Templates are messages with their variable parts masked (templates.masks). '
        "Counts marked ≤ are upper bounds: the report keeps a bounded number of templates per label.</p>",
        _templates(stats, templates_per_label),
    ]
    if stats.has_confidence:
        parts += [
            '<h2 id="review">Low-confidence examples to review</h2>',
            '<p class="note">The lowest-confidence records, one per source and template'
            + ("; rows where the label differs from the gold column are shaded." if stats.has_gold else ".")
            + "</p>",
            _examples(stats.low.sorted(), stats.has_gold),
        ]
    if stats.confusion:
        parts += [
            f'<h2 id="quality">Against the gold column <code>{escape(stats.columns.gold_name or "")}</code></h2>',
            fig("confusion"),
            fig("precision_recall"),
            _scores_table(scores),
        ]
    if overall is not None:
        parts.append(_calibration(stats, overall, fig("calibration")))
    if stats.unlabelled:
        parts.append(
            f'<p class="note">{stats.unlabelled:,} rows have an empty gold column '
            f"<code>{escape(stats.columns.gold_name or '')}</code> and are left out of the scores.</p>"
        )
    if stats.errors:
        rows = [(escape(kind), f"{n:,}", _pct(n, stats.rows)) for kind, n in stats.errors.most_common()]
        table = _table(["error", "records", "share"], rows, numeric=(1, 2), compact=True)
        parts += ['<h2 id="errors">Flagged records</h2>', table]
    if stats.malformed:
        parts.append(f'<p class="note">{stats.malformed:,} rows had the wrong number of fields and were left out.</p>')
    if stats.bad_confidence:
        parts.append(
            f'<p class="note">{stats.bad_confidence:,} rows had a confidence that is not a number in [0, 1]: '
            "counted everywhere except the confidence charts.</p>"
        )
    parts.append("</main></body></html>\n")
    return "\n".join(p for p in parts if p)
