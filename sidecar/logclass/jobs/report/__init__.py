"""`logclass report`: a classified CSV as charts and tables in one self-contained HTML page.

``stats`` reads the CSV once into bounded summaries, ``charts`` draws them with matplotlib,
``scores`` turns a gold column into precision/recall and calibration, ``page`` writes the HTML.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from logclass.config.settings import Settings
from logclass.core.bundle import BundleError, load_bundle
from logclass.core.decision import TIER_NONE
from logclass.engine.pipeline import bundle_path, masker_of
from logclass.errors import LogclassError
from logclass.jobs.report.scores import Calibration, ClassScore, accuracy, calibration, class_scores
from logclass.jobs.report.stats import ReportStats
from logclass.tiers import registry

if TYPE_CHECKING:
    # Both import matplotlib, which is optional: imported once _import_matplotlib has checked.
    from logclass.jobs.report.charts import Chart
    from logclass.jobs.report.page import Card


class ReportError(LogclassError):
    pass


class ReportDependencyError(ReportError):
    """The optional charting library is not installed: a fix on the host, not in the input."""


@dataclass(frozen=True)
class ReportOptions:
    gold: str | None = None
    templates_per_label: int = 10
    examples: int = 25
    encoding: str = "utf-8"
    progress: bool = True


@dataclass(frozen=True)
class ReportResult:
    rows: int
    html: Path | None
    pngs: list[Path]
    charts: list[str]
    # With a gold column and confidences: ECE and mean |confidence - correct| over the claims.
    calibration: Calibration | None = None


def _import_matplotlib() -> None:
    try:
        import matplotlib

        # No display here, and none wanted: render straight to PNG.
        matplotlib.use("Agg")
    except ImportError as exc:
        raise ReportDependencyError(
            "the report's charts need matplotlib: pip install 'logclass[report]' (make install includes it)"
        ) from exc


def thresholds(settings: Settings) -> dict[str, float]:
    """Each tier's escalation threshold, drawn on its confidence histogram: the config's, else
    the model bundle's (left out when there is no bundle to read)."""
    bundle = functools.cache(lambda: load_bundle(bundle_path(settings)))
    out: dict[str, float] = {}
    for spec in registry.TIERS:
        with contextlib.suppress(BundleError):
            value = spec.min_confidence(settings, bundle)
            if value is not None:
                out[spec.name] = float(value)
    return out


@dataclass(frozen=True)
class ReportContent:
    """What a report shows, before anything is written: `logclass report` writes it as HTML
    and PNG files, the HTTP API returns it as JSON."""

    stats: ReportStats
    cards: list[Card]
    # By chart name, in drawing order.
    charts: dict[str, Chart]
    scores: list[ClassScore]
    # With a gold column and confidences: ECE and mean |confidence - correct| over the claims.
    calibration: Calibration | None

    @property
    def rows(self) -> int:
        return self.stats.rows


def report_content(csv_path: Path, settings: Settings, options: ReportOptions) -> ReportContent:
    """Reads a classified CSV once and draws its charts (matplotlib, in memory)."""
    _import_matplotlib()
    from logclass.jobs.report import charts as ch
    from logclass.jobs.report.stats import collect

    masker = masker_of(settings.templates)
    stats = collect(
        csv_path,
        masker.template,
        gold=options.gold,
        top_n=options.templates_per_label,
        examples=options.examples,
        encoding=options.encoding,
        progress=options.progress,
    )
    if stats.rows == 0:
        raise ReportError(f"{csv_path} has a header but no rows: nothing to report")

    scores = class_scores(stats.confusion)
    overall = calibration(stats.calibration_overall()) if stats.calibration else None
    colors = ch.label_colors([name for name, _ in stats.labels.most_common()])
    drawers: list[Callable[[], ch.Chart]] = [
        lambda: ch.label_chart(stats, colors),
        lambda: ch.source_chart(stats, colors),
    ]
    if stats.has_tiers:
        drawers.append(lambda: ch.tier_chart(stats))
    if stats.confidence:
        drawers.append(lambda: ch.confidence_chart(stats, thresholds(settings)))
    if stats.confusion:
        drawers.append(lambda: ch.confusion_chart(stats.confusion, stats.columns.gold_name or "gold"))
        drawers.append(lambda: ch.scores_chart(scores))
    if overall is not None:
        drawers.append(partial(ch.calibration_chart, stats, overall))
    charts: dict[str, ch.Chart] = {}
    for draw in tqdm(drawers, desc="drawing", unit="chart", disable=not options.progress):
        chart = draw()
        charts[chart.name] = chart
    return ReportContent(stats, _cards(stats, settings, overall), charts, scores, overall)


def _cards(stats: ReportStats, settings: Settings, overall: Calibration | None) -> list[Card]:
    from logclass.jobs.report.page import Card

    fallback = settings.router.fallback_label
    cards = [Card(f"{stats.rows:,}", "records"), Card(f"{len(stats.labels)}", "labels")]
    cards.append(Card(f"{len(stats.sources)}", "sources"))
    if stats.has_tiers:
        llm = sum(n for tier, n in stats.tiers.items() if tier.startswith("llm"))
        cards.append(Card(f"{llm / stats.rows:.1%}", "reached the LLM"))
        cards.append(Card(f"{stats.tiers.get(TIER_NONE, 0) / stats.rows:.1%}", "undecided (tier none)"))
    cards.append(Card(f"{stats.labels.get(fallback, 0) / stats.rows:.1%}", f"labelled {fallback}"))
    if stats.confusion:
        cards.append(Card(f"{accuracy(stats.confusion):.2%}", "accuracy vs gold"))
    if overall is not None:
        cards.append(Card(f"{overall.ece or 0:.3f}", "calibration error (ECE)"))
        cards.append(Card(f"{overall.mean_abs_error or 0:.3f}", "mean |confidence - correct|"))
    if stats.errors:
        cards.append(Card(f"{sum(stats.errors.values()):,}", "flagged records"))
    return cards


def build_report(
    csv_path: Path,
    html_path: Path | None,
    png_dir: Path | None,
    settings: Settings,
    options: ReportOptions,
) -> ReportResult:
    if html_path is None and png_dir is None:
        raise ReportError("nothing to write: pass -o report.html and/or --png DIR")
    content = report_content(csv_path, settings, options)
    from logclass.jobs.report.page import render

    pngs = [_write(png_dir / f"{chart.name}.png", chart.png) for chart in content.charts.values()] if png_dir else []
    if html_path is not None:
        page = render(
            content.stats,
            content.cards,
            content.charts,
            content.scores,
            content.calibration,
            templates_per_label=options.templates_per_label,
        )
        _write(html_path, page.encode("utf-8"))
    return ReportResult(content.rows, html_path, pngs, list(content.charts), content.calibration)


def _write(path: Path, data: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror}") from exc
    return path
