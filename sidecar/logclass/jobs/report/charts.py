"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state, no GUI
backend, safe to call from any thread) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from logclass.jobs.report.scores import CALIBRATION_BINS, Calibration, ClassScore, calibration
from logclass.jobs.report.stats import CONFIDENCE_BINS, OTHER, ReportStats

DPI = 100
WIDTH_IN = 10.0
# Past these, charts stop being readable; the excess is drawn as one OTHER bar.
MAX_BARS = 30
MAX_SOURCES = 12
MAX_MATRIX = 25
OTHER_COLOR = "#b0b0b0"
# A tier gets its own reliability line from this many rows: below it, bins of one or two rows
# draw noise. At most this many tier lines, so the overall line stays readable.
MIN_TIER_CALIBRATION_ROWS = 20
MAX_TIER_LINES = 6


@dataclass(frozen=True)
class Chart:
    name: str  # file stem for --png
    title: str
    alt: str
    png: bytes


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": "logclass report"})
    return out.getvalue()


def _height(bars: int, per_bar: float = 0.32, minimum: float = 2.5, maximum: float = 14.0) -> float:
    return min(max(minimum, 1.2 + per_bar * bars), maximum)


def label_colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per label, the same in every chart."""
    import matplotlib

    cmap: Colormap = matplotlib.colormaps["tab20"]
    colors = {}
    for i, label in enumerate(labels):
        r, g, b, _ = cmap(i % cmap.N)
        colors[label] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    colors[OTHER] = OTHER_COLOR
    return colors


def _top(counts: Mapping[str, int], limit: int) -> list[tuple[str, int]]:
    """The ``limit`` largest, the rest summed into OTHER."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) <= limit:
        return ranked
    head = [kv for kv in ranked[: limit - 1] if kv[0] != OTHER]
    kept = {name for name, _ in head}
    rest = sum(n for name, n in ranked if name not in kept)
    return [*head, (OTHER, rest)]


def _fold(counts: Mapping[tuple[str, str], int], rows: Sequence[str], cols: Sequence[str]) -> np.ndarray:
    """A (row, col) count table as a matrix over the shown names; the rest lands in OTHER."""
    row = {name: i for i, name in enumerate(rows)}
    col = {name: i for i, name in enumerate(cols)}
    matrix = np.zeros((len(rows), len(cols)))
    for (r_name, c_name), n in counts.items():
        r, c = row.get(r_name, row.get(OTHER)), col.get(c_name, col.get(OTHER))
        if r is not None and c is not None:
            matrix[r, c] += n
    return matrix


def _barh(fig: Figure, items: list[tuple[str, int]], total: int, colors: Mapping[str, str], xlabel: str) -> None:
    ax = fig.add_subplot()
    names = [name for name, _ in items][::-1]
    values = [n for _, n in items][::-1]
    bars = ax.barh(names, values, color=[colors.get(n, OTHER_COLOR) for n in names])
    ax.bar_label(bars, labels=[f"{v:,} ({v / total:.1%})" for v in values], padding=3, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.18)
    ax.spines[["top", "right"]].set_visible(False)


def label_chart(stats: ReportStats, colors: Mapping[str, str]) -> Chart:
    items = _top(stats.labels, MAX_BARS)
    fig = Figure(figsize=(WIDTH_IN, _height(len(items))), layout="constrained")
    _barh(fig, items, stats.rows, colors, "records")
    fig.suptitle("Records per label")
    alt = "; ".join(f"{name}: {n}" for name, n in items)
    return Chart("labels", "Label distribution", f"Records per label: {alt}", _png(fig))


def source_chart(stats: ReportStats, colors: Mapping[str, str]) -> Chart:
    sources = [name for name, _ in _top(stats.sources, MAX_SOURCES)]
    labels = [name for name, _ in _top(stats.labels, MAX_BARS)]
    fig = Figure(figsize=(WIDTH_IN, _height(len(sources), per_bar=0.42)), layout="constrained")
    ax = fig.add_subplot()
    counts = _fold(stats.source_labels, sources, labels)
    left = np.zeros(len(sources))
    for c, label in enumerate(labels):
        widths = counts[::-1, c]
        ax.barh(sources[::-1], widths, left=left, color=colors.get(label, OTHER_COLOR), label=label)
        left += widths
    ax.set_xlabel("records")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle("Labels per source")
    return Chart(
        "labels_by_source",
        "Labels per source",
        f"Stacked bars of labels for the {len(sources)} largest sources",
        _png(fig),
    )


def tier_chart(stats: ReportStats) -> Chart:
    tiers = _top(stats.tiers, MAX_BARS)
    labels = [name for name, _ in _top(stats.labels, MAX_BARS)]
    tier_colors = label_colors([name for name, _ in tiers])
    height = _height(max(len(tiers), len(labels)), per_bar=0.3, minimum=3.5)
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    share, split = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    names = [name for name, _ in tiers][::-1]
    values = [n for _, n in tiers][::-1]
    bars = share.barh(names, values, color=[tier_colors[n] for n in names])
    share.bar_label(bars, labels=[f"{v / stats.rows:.1%}" for v in values], padding=3, fontsize=8)
    share.set_title("Share of records per tier", fontsize=10)
    share.margins(x=0.2)
    counts = _fold(stats.label_tiers, labels, [name for name, _ in tiers])[::-1]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    left = np.zeros(len(labels))
    for c, (tier, _) in enumerate(tiers):
        split.barh(labels[::-1], shares[:, c], left=left, color=tier_colors[tier], label=tier)
        left += shares[:, c]
    split.set_title("Which tier decided each label", fontsize=10)
    split.set_xlim(0, 1)
    split.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    for ax in (share, split):
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    alt = "; ".join(f"{name}: {n / stats.rows:.1%}" for name, n in tiers)
    return Chart("tiers", "Tier shares", f"Share of records per tier: {alt}", _png(fig))


def confidence_chart(stats: ReportStats, thresholds: Mapping[str, float]) -> Chart:
    tiers = [name for name, _ in _top(stats.tiers, MAX_BARS) if name in stats.confidence] or sorted(stats.confidence)
    cols = min(3, len(tiers))
    rows = -(-len(tiers) // cols)
    fig = Figure(figsize=(WIDTH_IN, 2.6 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    for ax, tier in zip(axes, tiers, strict=False):
        hist = stats.confidence[tier]
        ax.bar(edges[:-1], hist, width=1.0 / CONFIDENCE_BINS, align="edge", color="#4c72b0", edgecolor="white")
        ax.set_title(f"{tier or '(no tier)'}  ({int(hist.sum()):,} records)", fontsize=10)
        nonzero = hist[hist > 0]
        if nonzero.size and nonzero.max() > 20 * nonzero.min():
            # Confident tiers pile up near 1.0; a log axis keeps the informative tail visible.
            ax.set_yscale("log")
            ax.set_ylabel("records (log)", fontsize=8)
        ax.set_xlim(0, 1)
        threshold = thresholds.get(tier)
        if threshold:
            ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1)
            ax.annotate(
                "min_confidence",
                (threshold, 0.95),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="#c44e52",
                ha="right",
            )
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    for ax in axes[len(tiers) :]:
        ax.set_visible(False)
    fig.supxlabel("confidence", fontsize=9)
    fig.suptitle("Confidence per tier")
    return Chart(
        "confidence",
        "Confidence per tier",
        f"Histograms of confidence for tiers {', '.join(tiers)}",
        _png(fig),
    )


def _matrix_labels(confusion: Counter[tuple[str, str]]) -> list[str]:
    totals: Counter[str] = Counter()
    for (gold, predicted), n in confusion.items():
        totals[gold] += n
        totals[predicted] += n
    return [name for name, _ in _top(totals, MAX_MATRIX)]


def confusion_chart(confusion: Counter[tuple[str, str]], gold_name: str) -> Chart:
    labels = _matrix_labels(confusion)
    matrix = _fold(confusion, labels, labels).astype(np.int64)
    # Colour by row share so that rare classes are as visible as common ones; cells show counts.
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(max(5.0, 0.45 * len(labels) + 2.5), 14.0)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted (target_label)")
    ax.set_ylabel(f"gold ({gold_name})")
    for g in range(len(labels)):
        for p in range(len(labels)):
            if matrix[g, p]:
                color = "white" if shares[g, p] > 0.6 else "black"
                ax.text(p, g, f"{matrix[g, p]:,}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold row")
    fig.suptitle("Confusion matrix")
    return Chart("confusion", "Confusion matrix", f"Confusion matrix over {len(labels)} labels", _png(fig))


def scores_chart(scores: Sequence[ClassScore]) -> Chart:
    shown = [s for s in scores if s.support or s.predicted][:MAX_BARS]
    fig = Figure(figsize=(WIDTH_IN, _height(len(shown), per_bar=0.45)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(shown))[::-1]
    precision = [s.precision or 0.0 for s in shown]
    recall = [s.recall or 0.0 for s in shown]
    ax.barh(y + 0.2, precision, height=0.4, label="precision", color="#4c72b0")
    ax.barh(y - 0.2, recall, height=0.4, label="recall", color="#dd8452")
    ax.set_yticks(y, [s.label for s in shown], fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("Precision and recall per class")
    alt = "; ".join(f"{s.label}: P {s.precision or 0:.2f} R {s.recall or 0:.2f}" for s in shown)
    return Chart("precision_recall", "Precision and recall per class", alt, _png(fig))


def _reliability_line(cal: Calibration) -> tuple[list[float], list[float]]:
    shown = [b for b in cal.bins if b.rows]
    return [b.confidence or 0.0 for b in shown], [b.accuracy or 0.0 for b in shown]


def calibration_chart(stats: ReportStats, overall: Calibration) -> Chart:
    fig = Figure(figsize=(WIDTH_IN, 6.2), layout="constrained")
    curve, counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve.plot([0, 1], [0, 1], linestyle="--", color="#808080", linewidth=1, label="perfectly calibrated")
    per_tier = sorted(
        ((tier, calibration(c)) for tier, c in stats.calibration.items() if c.total >= MIN_TIER_CALIBRATION_ROWS),
        key=lambda tc: -tc[1].rows,
    )[:MAX_TIER_LINES]
    if len(per_tier) > 1:
        # The same colour per tier as in the tier chart.
        tier_colors = label_colors([name for name, _ in _top(stats.tiers, MAX_BARS)])
        for tier, cal in per_tier:
            x, y = _reliability_line(cal)
            curve.plot(
                x,
                y,
                marker=".",
                linewidth=1,
                alpha=0.8,
                color=tier_colors.get(tier, OTHER_COLOR),
                label=f"{tier or '(no tier)'}: {cal.rows:,} rows, ECE {cal.ece or 0:.3f}",
            )
    x, y = _reliability_line(overall)
    curve.plot(
        x,
        y,
        marker="o",
        linewidth=2.2,
        color="#1d1d1f",
        label=f"all: {overall.rows:,} rows, ECE {overall.ece or 0:.3f}",
    )
    curve.set_xlim(0, 1)
    # A little room below 0 so that a bin with no correct rows is not drawn on the axis line.
    curve.set_ylim(-0.03, 1.03)
    curve.set_ylabel("accuracy (label = gold)")
    curve.legend(loc="best", fontsize=8, frameon=False)
    rows = np.array([b.rows for b in overall.bins])
    bars = counts.bar(
        [b.low for b in overall.bins],
        rows,
        width=1.0 / CALIBRATION_BINS,
        align="edge",
        color="#4c72b0",
        edgecolor="white",
    )
    counts.bar_label(bars, labels=[f"{n:,}" if n else "" for n in rows], padding=2, fontsize=7)
    nonzero = rows[rows > 0]
    if nonzero.size and nonzero.max() > 20 * nonzero.min():
        # Most rows sit in the top bin; a log axis keeps the sparse bins' bars visible.
        counts.set_yscale("log")
    counts.set_ylabel("rows per bin", fontsize=8)
    counts.set_xlabel("confidence")
    counts.margins(y=0.25)
    for ax in (curve, counts):
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    fig.suptitle("Reliability diagram: accuracy against confidence")
    return Chart(
        "calibration",
        "Reliability diagram",
        f"Accuracy against mean confidence in {CALIBRATION_BINS} bins over {overall.rows:,} rows with a gold label; "
        f"ECE {overall.ece or 0:.3f}",
        _png(fig),
    )
