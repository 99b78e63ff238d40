"""`logclass evaluate`: end-to-end and per-tier report of the whole pipeline on a labelled CSV."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from logclass.core.bundle import ModelBundle
from logclass.core.decision import Decision, LogRecord
from logclass.engine.blocking import BlockingEngine
from logclass.jobs.chunks import pipelined
from logclass.training.dataset import LabelledRow, load_labelled_csv, row_hashes
from logclass.training.report import format_class_report, table


def holdout_rows(rows: Sequence[LabelledRow], bundle: ModelBundle) -> list[LabelledRow]:
    """Rows the bundle's classifier was not fitted on: regex and routed rows, and its hold-out."""
    seen = set(bundle.training_rows().tolist())
    hashes = row_hashes(rows).tolist()
    return [row for row, h in zip(rows, hashes, strict=True) if h not in seen]


def classify_rows(
    router: BlockingEngine, rows: Sequence[LabelledRow], batch_size: int = 512, progress: bool = True
) -> list[Decision]:
    decisions: list[Decision] = []
    batches = (
        (len(batch), [LogRecord(r.source, r.message) for r in batch])
        for batch in (rows[start : start + batch_size] for start in range(0, len(rows), batch_size))
    )
    with tqdm(total=len(rows), unit="rec", desc="classifying", disable=not progress) as bar:

        def show_queue() -> None:
            bar.set_postfix({f"{k} queue": v for k, v in router.queued().items()})

        for n, batch_decisions in pipelined(router, batches, on_wait=show_queue):
            decisions.extend(batch_decisions)
            bar.update(n)
            show_queue()
    return decisions


def metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    labels = sorted(set(gold))
    report = classification_report(gold, pred, labels=labels, output_dict=True, zero_division=0)
    return {
        "rows": len(gold),
        "accuracy": round(float(accuracy_score(gold, pred)), 4),
        "macro_f1": round(float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)), 4),
        "per_class": {label: {k: round(float(v), 4) for k, v in report[label].items()} for label in labels},
    }


def per_tier(gold: Sequence[str], decisions: Sequence[Decision]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for label, decision in zip(gold, decisions, strict=True):
        groups[decision.tier].append(label == decision.label)
    total = len(decisions)
    return {
        tier: {
            "records": len(hits),
            "share": round(len(hits) / total, 4),
            "accuracy": round(float(np.mean(hits)), 4),
        }
        for tier, hits in sorted(groups.items())
    }


def evaluate(
    data: str | Path,
    router: BlockingEngine,
    bundle: ModelBundle | None = None,
    holdout: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    rows = load_labelled_csv(data)
    if holdout:
        if bundle is None:
            raise ValueError("--holdout needs the model bundle whose training rows to leave out")
        total = len(rows)
        rows = holdout_rows(rows, bundle)
        print(f"hold-out: {len(rows)} of {total} rows were not used to fit {bundle.version}")
    started = time.monotonic()
    decisions = classify_rows(router, rows, progress=progress)
    elapsed = time.monotonic() - started
    gold = [r.label for r in rows]
    return {
        "data": str(data),
        "model_version": router.model_version,
        "end_to_end": metrics(gold, [d.label for d in decisions]),
        "tiers": per_tier(gold, decisions),
        "cache_hit_ratio": round(router.stats.cache_hit_ratio, 4),
        "tier_calls": dict(router.stats.tier_calls),
        "records_per_second": round(len(rows) / elapsed, 1) if elapsed else None,
        "unexpected_labels": dict(Counter(d.label for d in decisions if d.label not in set(gold))),
    }


def format_report(report: dict[str, Any]) -> str:
    tiers = table(
        ["tier", "records", "share", "accuracy"],
        [[t, v["records"], v["share"], v["accuracy"]] for t, v in report["tiers"].items()],
    )
    lines = [
        f"model {report['model_version']} on {report['data']}",
        "",
        "end to end:",
        format_class_report(report["end_to_end"]),
        "",
        "per tier (accuracy of the records each tier decided):",
        tiers,
        "",
        f"cache hit ratio {report['cache_hit_ratio']:.3f}; records sent to each model tier: {report['tier_calls']}",
        f"{report['records_per_second']} records/s",
    ]
    if report["unexpected_labels"]:
        lines.append(f"labels predicted that the data never uses: {report['unexpected_labels']}")
    return "\n".join(lines)
