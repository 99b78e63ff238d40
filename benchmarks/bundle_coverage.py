"""How much of real logs a bundle decides without the LLM, and how well (issue 32, item 4).

For each bundle given, with the LLM off (router.tiers: the bundle's tiers only):
- the share of the 28,000-line Loghub mix (the repo's benchmarks/data/loghub samples, `Content`
  with the system as source) each tier decides: what is not `none` is decided without the LLM;
- accuracy and macro-F1 on training/data/loghub_testset/loghub_200.csv (200 Loghub lines labelled
  by hand, independently of any model), records no tier decides counting as wrong;
- macro-F1 on the seed's hold-out (stratified 30 %, seed 42; its LegacyCRM rows, which the seed
  routes to the LLM, left out), which must not drop.

    python benchmarks/bundle_coverage.py sidecar/logclass/models/default build/default-loghub
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SEED_CSV
from logclass import config
from logclass.core.bundle import load_bundle
from logclass.core.decision import TIER_NONE, LogRecord
from logclass.engine.blocking import BlockingEngine
from logclass.engine.pipeline import build_engine
from logclass.training.dataset import load_labelled_csv
from logclass.training.splits import holdout_split

LOGHUB = ROOT / "benchmarks" / "data" / "loghub"
TESTSET = ROOT / "training" / "data" / "loghub_testset" / "loghub_200.csv"


def loghub_mix() -> list[LogRecord]:
    records = []
    for path in sorted(LOGHUB.glob("*_2k.log_structured.csv")):
        system = path.name.split("_")[0]
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            messages = (row["Content"].strip() for row in csv.DictReader(fh))
            records += [LogRecord(system, message) for message in messages if message]
    return records


def engine_of(bundle_path: Path) -> BlockingEngine:
    bundle = load_bundle(bundle_path)
    env = {"LOGCLASS_LLM__BACKEND": "none", "LOGCLASS_ROUTER__TIERS": "[regex, memory, embedding]"}
    cfg = config.load(environ=env)
    return BlockingEngine(build_engine(cfg, bundle=bundle), settings=cfg)


def macro_f1(gold: list[str], pred: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, average="macro", labels=sorted(set(gold)), zero_division=0))


def measure(bundle_path: Path) -> dict[str, object]:
    engine = engine_of(bundle_path)
    try:
        mix = engine.classify(loghub_mix())
        tiers = Counter(d.tier for d in mix)
        with TESTSET.open(encoding="utf-8", newline="") as fh:
            test = list(csv.DictReader(fh))
        answers = engine.classify([LogRecord(r["source"], r["log_message"]) for r in test])
        gold = [r["target_label"] for r in test]
        pred = [d.label if d.tier != TIER_NONE else "(none)" for d in answers]
        # The seed's own measure: its LLM-routed source left out (the LLM is off here).
        every = load_labelled_csv(SEED_CSV)
        _, split = holdout_split([r.label for r in every], 0.3, 42, True)
        rows, held = every, [i for i in split if every[i].source != "LegacyCRM"]
        seed = engine.classify([LogRecord(rows[i].source, rows[i].message) for i in held])
        seed_gold = [rows[i].label for i in held]
    finally:
        engine.close()
    total = sum(tiers.values())
    return {
        "bundle": str(bundle_path),
        "loghub_lines": total,
        "loghub_tier_shares": {t: round(n / total, 4) for t, n in tiers.most_common()},
        "loghub_decided_without_llm": round(1 - tiers.get(TIER_NONE, 0) / total, 4),
        "testset_accuracy": round(sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold), 4),
        "testset_macro_f1": round(macro_f1(gold, pred), 4),
        "testset_undecided": sum(p == "(none)" for p in pred),
        "seed_holdout_macro_f1": round(macro_f1(seed_gold, [d.label for d in seed]), 4),
        "seed_holdout_rows": len(held),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    for path in args.bundles:
        print(f"measuring {path} ...", file=sys.stderr, flush=True)
        results.append(measure(path))
    print(f"{'bundle':<44}{'Loghub w/o LLM':>15}{'200-set acc':>13}{'200-set F1':>12}{'seed F1':>9}")
    for r in results:
        print(
            f"{r['bundle']:<44}{r['loghub_decided_without_llm']:>15.1%}{r['testset_accuracy']:>13.3f}"
            f"{r['testset_macro_f1']:>12.3f}{r['seed_holdout_macro_f1']:>9.4f}"
        )
        print(f"  tiers on the Loghub mix: {r['loghub_tier_shares']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
