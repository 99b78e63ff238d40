"""Throughput of the logclass pipeline against the seed algorithm, measured in the same run.

Prints records/s for: the seed baseline, raw batched MiniLM, the pipeline with a cold cache,
warm on the same records, and warm on new messages of known templates (every digit but 0 changed,
so only the template cache can help). Ratios are against numbers from this run only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.seed_baseline import seed_classify
from sidecar import config
from sidecar.bundle import load_bundle
from sidecar.decision import LogRecord
from sidecar.encoder import Encoder
from sidecar.pipeline import DEFAULT_BUNDLE, build_encoder, build_router
from sidecar.router import Router

ROOT = Path(__file__).resolve().parent.parent
SEED_CSV = ROOT / "training" / "data" / "synthetic_logs.csv"
LOGHUB = ROOT / "benchmarks" / "data" / "loghub"
BATCH = 1024
WARM_TARGET = 1000.0
COLD_TARGET = 0.9
# Zero stays put so that "0x1f" stays hex: only values change, never the shape of a token.
_SHIFT_DIGITS = str.maketrans("123456789", "234567891")


def load_records() -> list[LogRecord]:
    records = []
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        records += [LogRecord(r["source"], r["log_message"]) for r in csv.DictReader(fh)]
    for path in sorted(LOGHUB.glob("*_2k.log_structured.csv")):
        system = path.name.split("_")[0]
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            records += [LogRecord(system, r["Content"]) for r in csv.DictReader(fh)]
    return records


def timed(label: str, n: int, fn: Callable[[], object]) -> float:
    print(f"  {label} ({n:,} records)...", end="", flush=True, file=sys.stderr)
    start = time.perf_counter()
    fn()
    rate = n / (time.perf_counter() - start)
    print(f" {rate:,.0f}/s", file=sys.stderr)
    return rate


def run_pipeline(router: Router, records: Sequence[LogRecord]) -> None:
    for i in range(0, len(records), BATCH):
        router.classify(records[i : i + BATCH])


def measure(baseline_sample: int, raw_sample: int, seed: int) -> dict[str, Any]:
    cfg = config.load(environ={})
    bundle = load_bundle(DEFAULT_BUNDLE)
    encoder: Encoder = build_encoder(cfg)
    records = load_records()
    rng = random.Random(seed)
    print(f"{len(records):,} records (seed set + 14 Loghub samples); model load excluded", file=sys.stderr)

    sample = rng.sample(records, baseline_sample)
    baseline = timed(
        "seed baseline: sequential regex, one encode per record",
        len(sample),
        lambda: seed_classify(sample, encoder, bundle.head),
    )
    distinct = list(dict.fromkeys(r.message for r in records))
    raw_texts = rng.sample(distinct, min(raw_sample, len(distinct)))
    raw = timed("raw batched MiniLM encode", len(raw_texts), lambda: encoder.encode(raw_texts))

    router = build_router(cfg, bundle=bundle, encoder=encoder)
    cold = timed("pipeline, cold cache", len(records), lambda: run_pipeline(router, records))
    cold_stats = {
        "embedding_calls": router.stats.tier_calls["embedding"],
        "cache_hit_ratio": round(router.stats.cache_hit_ratio, 4),
    }
    warm = timed("pipeline, warm (same records)", len(records), lambda: run_pipeline(router, records))
    shifted = [LogRecord(r.source, r.message.translate(_SHIFT_DIGITS)) for r in records]
    calls_before = router.stats.tier_calls["embedding"]
    template_warm = timed(
        "pipeline, warm templates (new messages)", len(shifted), lambda: run_pipeline(router, shifted)
    )
    import torch

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": encoder.device,
            "python": platform.python_version(),
        },
        "records": len(records),
        "records_per_second": {
            "seed_baseline": round(baseline, 1),
            "raw_batched_model": round(raw, 1),
            "pipeline_cold": round(cold, 1),
            "pipeline_warm": round(warm, 1),
            "pipeline_warm_templates": round(template_warm, 1),
        },
        "cold": cold_stats,
        "warm_templates_new_embedding_calls": router.stats.tier_calls["embedding"] - calls_before,
        "ratios": {
            "warm_vs_baseline": round(warm / baseline, 1),
            "warm_templates_vs_baseline": round(template_warm / baseline, 1),
            "cold_vs_baseline": round(cold / baseline, 1),
            "cold_vs_raw_batched": round(cold / raw, 2),
        },
    }


def report(result: dict[str, Any]) -> bool:
    rates, ratios = result["records_per_second"], result["ratios"]
    print(f"\nmachine: {result['machine']}")
    print(f"{'measure':<42}{'records/s':>12}")
    for name, rate in rates.items():
        print(f"{name:<42}{rate:>12,.1f}")
    print(
        f"\ncold: {result['cold']['embedding_calls']:,} of {result['records']:,} records reached the embedding "
        f"tier (cache hit ratio {result['cold']['cache_hit_ratio']:.3f}); warm templates: "
        f"{result['warm_templates_new_embedding_calls']:,} new embedding calls"
    )
    warm_ok = bool(ratios["warm_vs_baseline"] >= WARM_TARGET)
    cold_ok = bool(ratios["cold_vs_raw_batched"] >= COLD_TARGET)
    print(
        f"warm / seed baseline            {ratios['warm_vs_baseline']:>10,.1f}x  "
        f"(target >= {WARM_TARGET:,.0f}x) {'PASS' if warm_ok else 'FAIL'}"
    )
    print(f"warm templates / seed baseline  {ratios['warm_templates_vs_baseline']:>10,.1f}x")
    print(f"cold / seed baseline            {ratios['cold_vs_baseline']:>10,.1f}x")
    print(
        f"cold / raw batched model        {ratios['cold_vs_raw_batched']:>10,.2f}x  "
        f"(target >= {COLD_TARGET}x) {'PASS' if cold_ok else 'FAIL'}"
    )
    return warm_ok and cold_ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline-sample", type=int, default=300, help="records timed for the ~40/s baseline")
    parser.add_argument("--raw-sample", type=int, default=2000, help="distinct messages for raw batched encode")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    result = measure(args.baseline_sample, args.raw_sample, args.seed)
    ok = report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
