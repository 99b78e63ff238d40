"""Accuracy of logclass on public real logs (the Loghub 2k samples) against a TF-IDF baseline,
both measured in the same run on the same splits.

Tasks:

- ``level``: predict ``Level`` from ``Content`` on every sample that has a Level column. Linux,
  Spark and Windows have a single Level value, so there is nothing to predict: they are skipped
  and the output says so.
- ``eventid``: predict ``EventId`` (the Loghub template) from ``Content`` on HPC, OpenSSH,
  Proxifier and HealthApp. These have no Level column, so without this task they would not be
  measured at all, and they span the range of a many-class task with rare labels: 8, 27, 46 and 75
  templates, the larger ones with many templates seen fewer than 7 times. Mac (341 templates, 135
  of them seen once) is left out: half of 2,000 lines holds too few examples per template to tell
  two methods apart.
- ``seed split``: the seed training set, ``training/data/synthetic_logs.csv``, stratified 70/30.
  Rows of ``LegacyCRM``, which the seed's router profile sends straight to the LLM, are left out
  on both sides: with the LLM off no tier answers them by design, and the baseline would be
  scored on work logclass gives to another tier.

Protocol: a stratified split with ``random_state`` 42 (50/50 for Loghub); a label with a single
row goes to the training side, because stratification cannot split it and its only example must
never be the one held out. logclass is run as a user would run it: the training side is written
as a labelled CSV (``source,log_message,target_label``; source is the dataset name), ``train()``
builds a bundle with the default config except ``llm.backend: none``, and the test side is
classified by the real engine (``build_engine`` with unbounded lanes, ``BlockingEngine`` waiting for
every answer, as ``logclass classify`` does). ``TrainOptions(test_size=0)``: the benchmark holds
its own test side out, so train() fits its head on the whole training side, as the baseline does;
every other option is the default, whatever it does with rare labels. The tier of every decision
is recorded.

Baseline: TF-IDF of word 1-2-grams and char_wb 3-5-grams (sublinear tf, each block L2-normalised)
feeding ``LogisticRegression(class_weight="balanced", max_iter=3000)`` with sklearn's default C, on
the same training side.

Scores: macro-F1 over the labels of the test side (a prediction of a label that is not in the test
side, such as the fallback ``Unclassified``, counts as a miss of the true label, not as an extra
class at F1 0), and accuracy. Target: logclass macro-F1 >= baseline on every task.

``--mix``: every Loghub line (all samples, source = dataset name) classified by the shipped bundle
(``logclass/models/default``, default config, LLM off): the share of records answered by each tier and the
most frequent labels per dataset. The shipped bundle knows the seed's labels only, so this measures
how much of a foreign real-log mix it decides confidently, not whether it is right.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make bench-accuracy` runs this file as a script, which puts benchmarks/, not the project root,
# on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.common import finish, stage
from logclass import config
from logclass.config.settings import Settings
from logclass.core.decision import TIER_NONE, TIER_PENDING, LogRecord
from logclass.engine.blocking import BlockingEngine
from logclass.engine.pipeline import build_engine, unbounded_lanes
from logclass.training.train import TrainOptions, train

ROOT = Path(__file__).resolve().parent.parent
LOGHUB = ROOT / "benchmarks" / "data" / "loghub"
SEED_CSV = ROOT / "training" / "data" / "synthetic_logs.csv"
SEED = 42
LOGHUB_TEST_SIZE = 0.5
SEED_TEST_SIZE = 0.3
EVENTID_DATASETS = ("HPC", "OpenSSH", "Proxifier", "HealthApp")
TASKS = ("level", "eventid")
SEED_SPLIT = "seed split"
# The seed's router profile sends these sources straight to the LLM (router.source_routes, since
# e0ede20 training/data/labels.yaml): named here, not read from either, so the seed split's rows
# stay the same whichever of the two carries the route.
SEED_LLM_SOURCES = ("LegacyCRM",)
# Records sent to the engine per call in --mix; the engine batches new templates across them anyway.
MIX_CHUNK = 1024
TOP_LABELS = 3


@dataclass(frozen=True, slots=True)
class Row:
    source: str
    message: str
    label: str


@dataclass
class TaskResult:
    dataset: str
    task: str
    train_rows: int = 0
    test_rows: int = 0
    labels: int = 0
    logclass_macro_f1: float = 0.0
    baseline_macro_f1: float = 0.0
    logclass_accuracy: float = 0.0
    baseline_accuracy: float = 0.0
    tiers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    @property
    def ratio(self) -> float:
        return self.logclass_macro_f1 / self.baseline_macro_f1 if self.baseline_macro_f1 else 0.0

    @property
    def ok(self) -> bool:
        return not self.error and self.logclass_macro_f1 >= self.baseline_macro_f1


# ---------------------------------------------------------------------------------------- data


def loghub_names() -> list[str]:
    return sorted(p.name.split("_")[0] for p in LOGHUB.glob("*_2k.log_structured.csv"))


def read_loghub(name: str) -> list[dict[str, str]]:
    path = LOGHUB / f"{name}_2k.log_structured.csv"
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        return list(csv.DictReader(fh))


def task_rows(name: str, task: str) -> list[Row]:
    """Loghub rows as (dataset, Content, label). Rows with an empty message are dropped, as
    train()'s CSV reader drops them, so both methods see the same rows."""
    column = {"level": "Level", "eventid": "EventId"}[task]
    out = []
    for raw in read_loghub(name):
        message, label = raw["Content"].strip(), (raw.get(column) or "").strip()
        if message and label:
            out.append(Row(name, message, label))
    return out


def seed_rows() -> list[Row]:
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        raw = list(csv.DictReader(fh))
    rows = [Row(r["source"].strip(), r["log_message"].strip(), r["target_label"].strip()) for r in raw]
    return [r for r in rows if r.source not in SEED_LLM_SOURCES and r.message and r.label]


def split_indexes(labels: Sequence[str], test_size: float, seed: int = SEED) -> tuple[list[int], list[int]]:
    """Stratified train/test indexes; a label with one row always goes to the training side."""
    from sklearn.model_selection import train_test_split

    counts = Counter(labels)
    single = [i for i, label in enumerate(labels) if counts[label] == 1]
    rest = [i for i, label in enumerate(labels) if counts[label] > 1]
    train_idx, test_idx = train_test_split(
        rest, test_size=test_size, random_state=seed, stratify=[labels[i] for i in rest]
    )
    return sorted([*train_idx, *single]), sorted(test_idx)


# ------------------------------------------------------------------------------------- methods


def logclass_config() -> Settings:
    """The default config as `logclass` loads it (LOGCLASS_* variables included), LLM tier off."""
    return config.load(overrides={"llm": {"backend": "none"}})


def write_training_csv(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "log_message", "target_label"])
        writer.writerows((r.source, r.message, r.label) for r in rows)


def logclass_predict(
    train_rows: Sequence[Row], test_rows: Sequence[Row], workdir: Path, settings: Settings | None = None
) -> tuple[list[str], list[str]]:
    """Train a bundle on ``train_rows`` and classify ``test_rows`` with it: (labels, tiers).

    The only place that touches logclass's training and engine APIs, through their public entry
    points, so that a change there is mended here once. train()'s own report goes to
    ``workdir/train.log`` to keep the benchmark's output readable. ``settings``: both training and
    classifying use them (bench_encoder.py passes one per encoder backend); default
    ``logclass_config()``."""
    settings = settings or logclass_config()
    data = workdir / "train.csv"
    write_training_csv(train_rows, data)
    log_path = workdir / "train.log"
    with log_path.open("w", encoding="utf-8") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        bundle = train(
            data, workdir / "bundle", settings, TrainOptions(test_size=0.0, random_state=SEED), progress=False
        )
    engine = BlockingEngine(build_engine(unbounded_lanes(settings), bundle=bundle), None)
    try:
        decisions = engine.classify([LogRecord(r.source, r.message) for r in test_rows])
    finally:
        engine.close()
    return [d.label for d in decisions], [d.tier for d in decisions]


def baseline_predict(train_rows: Sequence[Row], test_rows: Sequence[Row]) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True),
    )
    model = make_pipeline(features, LogisticRegression(class_weight="balanced", max_iter=3000))
    model.fit([r.message for r in train_rows], [r.label for r in train_rows])
    return [str(label) for label in model.predict([r.message for r in test_rows])]


def scores(truth: Sequence[str], predicted: Sequence[str]) -> tuple[float, float]:
    """(macro-F1 over the test side's labels, accuracy)."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(truth))
    f1 = f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
    return float(f1), float(accuracy_score(truth, predicted))


def shares(values: Sequence[str]) -> dict[str, float]:
    counts = Counter(values)
    return {key: n / len(values) for key, n in counts.most_common()} if values else {}


def run_task(
    dataset: str, task: str, rows: Sequence[Row], test_size: float, workdir: Path, settings: Settings | None = None
) -> TaskResult:
    """One row of the table; a failure of either method is reported in it, not raised."""
    started = time.monotonic()
    result = TaskResult(dataset, task, labels=len({r.label for r in rows}))
    try:
        train_idx, test_idx = split_indexes([r.label for r in rows], test_size)
        train_rows, test_rows = [rows[i] for i in train_idx], [rows[i] for i in test_idx]
        result.train_rows, result.test_rows = len(train_rows), len(test_rows)
        truth = [r.label for r in test_rows]
        result.baseline_macro_f1, result.baseline_accuracy = scores(truth, baseline_predict(train_rows, test_rows))
        workdir.mkdir(parents=True, exist_ok=True)
        labels, tiers = logclass_predict(train_rows, test_rows, workdir, settings)
        result.logclass_macro_f1, result.logclass_accuracy = scores(truth, labels)
        result.tiers = shares(tiers)
    except Exception as exc:  # a dataset train() rejects is a result to report, not a crash
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    result.seconds = time.monotonic() - started
    return result


def loghub_tasks(datasets: Sequence[str], tasks: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(dataset, task) pairs to run, and notes on what was skipped and why."""
    pairs: list[tuple[str, str]] = []
    notes: list[str] = []
    for name in datasets:
        header = read_loghub(name)[0].keys()
        if "level" in tasks and "Level" in header:
            levels = {r.label for r in task_rows(name, "level")}
            if len(levels) > 1:
                pairs.append((name, "level"))
            else:
                notes.append(f"{name} level skipped: a single Level class ({', '.join(sorted(levels))})")
        if "eventid" in tasks and name in EVENTID_DATASETS:
            pairs.append((name, "eventid"))
    return pairs, notes


# -------------------------------------------------------------------------------------- output


def git_state() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "sidecar", "training")
    return commit + (" + uncommitted changes in sidecar/training" if dirty else "")


def format_tiers(tiers: dict[str, float]) -> str:
    return " ".join(f"{tier} {share:.1%}" for tier, share in tiers.items())


def format_table(results: Sequence[TaskResult]) -> str:
    header = (
        f"{'dataset':<11} {'task':<11} {'#train':>6} {'#test':>6} {'#labels':>7} {'logclass F1':>11} "
        f"{'baseline F1':>11} {'ratio':>6} {'logclass acc':>12} {'base acc':>8}  tiers (share of test records)"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        start = f"{r.dataset:<11} {r.task:<11} {r.train_rows:>6} {r.test_rows:>6} {r.labels:>7}"
        if r.error:
            lines.append(f"{start}  ERROR {r.error}")
            continue
        lines.append(
            f"{start} {r.logclass_macro_f1:>11.4f} {r.baseline_macro_f1:>11.4f} {r.ratio:>6.3f} "
            f"{r.logclass_accuracy:>12.4f} {r.baseline_accuracy:>8.4f}  {format_tiers(r.tiers)}"
        )
    return "\n".join(lines)


def report(results: Sequence[TaskResult], notes: Sequence[str], seconds: float) -> bool:
    print(f"logclass accuracy benchmark, commit {git_state()}, LLM tier off, {seconds:.0f} s")
    print()
    print(format_table(results))
    for note in notes:
        print(f"note: {note}")
    misses = [r for r in results if not r.ok]
    ok = bool(results) and not misses
    print()
    print(f"logclass macro-F1 >= baseline on every dataset: {'yes' if ok else 'no'}", end="")
    print(f" (misses: {', '.join(f'{r.dataset} {r.task}' for r in misses)})" if misses else "")
    return ok


# ------------------------------------------------------------------------------------------ mix


def run_mix() -> dict[str, Any]:
    """Every Loghub line through the shipped bundle: records and shares per tier, top labels."""
    import logclass

    settings = logclass_config()
    imported = str(Path(logclass.__file__).parent)
    stage(f"mix: sidecar from {imported}, bundle {settings.model.bundle or 'logclass/models/default'}")
    engine = BlockingEngine(build_engine(unbounded_lanes(settings)), None)
    per_dataset: dict[str, dict[str, Any]] = {}
    all_tiers: Counter[str] = Counter()
    try:
        for name in loghub_names():
            started = time.monotonic()
            records = [LogRecord(name, r["Content"]) for r in read_loghub(name)]
            decisions = []
            for at in range(0, len(records), MIX_CHUNK):
                decisions += engine.classify(records[at : at + MIX_CHUNK])
            tiers = Counter(d.tier for d in decisions)
            all_tiers.update(tiers)
            per_dataset[name] = {
                "records": len(records),
                "tiers": dict(tiers),
                "top_labels": Counter(d.label for d in decisions).most_common(TOP_LABELS),
            }
            stage(f"mix: {name}: {len(records)} records in {time.monotonic() - started:.1f}s")
    finally:
        engine.close()
    # Every configured tier gets a column, so a tier that answered nothing shows as 0, not absent.
    tier_names = [*settings.router.tiers, TIER_NONE, TIER_PENDING]
    tier_names += sorted(set(all_tiers) - set(tier_names))
    return {
        "sidecar": imported,
        "tier_names": tier_names,
        "datasets": per_dataset,
        "tiers": dict(all_tiers),
        "records": sum(all_tiers.values()),
    }


def report_mix(mix: dict[str, Any]) -> None:
    tier_names = mix["tier_names"]
    print(f"Loghub mix through the shipped bundle (logclass/models/default), LLM off, commit {git_state()}")
    print(f"sidecar imported from {mix['sidecar']}; share of records per tier (tier of the decision)")
    print()
    header = f"{'dataset':<11} {'records':>7} " + " ".join(f"{t:>9}" for t in tier_names) + "  top labels"
    print(header)
    print("-" * len(header))
    for name, d in mix["datasets"].items():
        cells = " ".join(f"{d['tiers'].get(t, 0) / d['records']:>9.1%}" for t in tier_names)
        top = ", ".join(f"{label} {n / d['records']:.1%}" for label, n in d["top_labels"])
        print(f"{name:<11} {d['records']:>7} {cells}  {top}")
    total = mix["records"]
    cells = " ".join(f"{mix['tiers'].get(t, 0) / total:>9.1%}" for t in tier_names)
    print(f"{'all':<11} {total:>7} {cells}")


# ----------------------------------------------------------------------------------------- main


def run_all(datasets: Sequence[str], tasks: Sequence[str], with_seed: bool) -> tuple[list[TaskResult], list[str]]:
    pairs, notes = loghub_tasks(datasets, tasks)
    total = len(pairs) + int(with_seed)
    results: list[TaskResult] = []
    with tempfile.TemporaryDirectory(prefix="logclass-bench-accuracy-") as tmp:
        for number, (name, task) in enumerate(pairs, 1):
            rows = task_rows(name, task)
            stage(f"[{number}/{total}] {name} {task}: {len(rows)} rows, {len({r.label for r in rows})} labels")
            results.append(run_task(name, task, rows, LOGHUB_TEST_SIZE, Path(tmp) / f"{name}-{task}"))
            stage(f"        {describe(results[-1])}")
        if with_seed:
            rows = seed_rows()
            stage(f"[{total}/{total}] {SEED_SPLIT}: {len(rows)} rows")
            results.append(run_task("seed", SEED_SPLIT, rows, SEED_TEST_SIZE, Path(tmp) / "seed"))
            stage(f"        {describe(results[-1])}")
    return results, notes


def describe(r: TaskResult) -> str:
    if r.error:
        return f"error after {r.seconds:.0f}s: {r.error}"
    return f"logclass {r.logclass_macro_f1:.4f} baseline {r.baseline_macro_f1:.4f} in {r.seconds:.0f}s"


def names_option(value: str | None, known: Sequence[str], what: str) -> list[str]:
    if value is None:
        return list(known)
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return wanted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", metavar="A,B", help="Loghub datasets to run (default: all that have a task)")
    parser.add_argument("--tasks", metavar="level,eventid", help="Loghub tasks to run (default: both)")
    parser.add_argument("--no-seed", action="store_true", help="leave out the seed split row")
    parser.add_argument("--mix", action="store_true", help="only the Loghub mix through the shipped bundle")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when logclass is below the baseline anywhere")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.mix:
        mix = run_mix()
        report_mix(mix)
        return finish({"commit": git_state(), "mix": mix}, True, args.json, args.strict)
    datasets = names_option(args.datasets, loghub_names(), "dataset")
    tasks = names_option(args.tasks, TASKS, "task")
    # --datasets alone asks about those datasets; the seed split stays unless --no-seed.
    results, notes = run_all(datasets, tasks, with_seed=not args.no_seed)
    seconds = time.monotonic() - started
    ok = report(results, notes, seconds)
    result = {
        "commit": git_state(),
        "seconds": round(seconds, 1),
        "ok": ok,
        "notes": notes,
        "tasks": [{**asdict(r), "ratio": r.ratio} for r in results],
    }
    return finish(result, ok, args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
