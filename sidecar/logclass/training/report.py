"""Plain-text tables for training and evaluation reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_class_report(metrics: Mapping[str, Any]) -> str:
    per_class = metrics["per_class"]
    rows = [
        [label, v["precision"], v["recall"], v["f1-score"], int(v["support"])] for label, v in sorted(per_class.items())
    ]
    body = table(["label", "precision", "recall", "f1", "support"], rows)
    return f"{body}\naccuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   rows {metrics['rows']}"
