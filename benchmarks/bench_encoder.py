"""Encoder backends against raw torch fp32 encode, every figure measured in the same run.

1. Raw encode, messages/s (tokenisation included) of every backend this machine has, on distinct
   seed-set messages and on distinct Loghub messages, best of ``--rounds`` rounds with the
   backends' order rotated each round, so load from other work hits all of them alike.
2. Cosine of each backend's embeddings to torch fp32's on the same texts (mean, lowest).
3. Macro-F1 per backend on a subset of bench_accuracy.py's tasks, the head trained on the backend
   it serves with. Eligible as a default: no task more than 0.5 points below torch fp32.
4. Whole-process cold ``logclass classify`` of ``--cold-lines`` never-seen templates per backend
   (start to exit: interpreter, imports, model load, classification), against raw torch fp32
   encode of the same lines; for onnx-int8 also where its time went.

Targets (2 CPU cores): raw onnx-int8 >= 2.0x raw torch fp32; cold onnx-int8 classify >= 1.5x raw
torch fp32 encode of the same lines; an eligible backend within 0.5 points of macro-F1.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make bench-encoder` runs this file as a script, which puts benchmarks/, not the project root,
# on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import logclass
from benchmarks import bench_accuracy as accuracy
from benchmarks.bench_lanes import NewLines
from benchmarks.common import LOGHUB_DIR, ROOT, SEED_CSV, finish, stage
from logclass import config
from logclass.config.settings import Settings
from logclass.core.decision import LogRecord
from logclass.encoders import Encoder, EncoderError, open_encoder
from logclass.encoders.model import cuda_available
from logclass.engine.pipeline import masker_of
from logclass.tiers.registry import build_regex_tier

REFERENCE = "torch fp32"
INT8 = "onnx-int8"
RAW_INT8_TARGET = 2.0
COLD_TARGET = 1.5
F1_LOSS_LIMIT = 0.005  # half a point of macro-F1
COLD_SOURCE = "BenchCold"
LABELS_YAML = ROOT / "training" / "data" / "labels.yaml"
SPLIT_SCRIPT = Path(__file__).resolve().parent / "cli_split.py"
# bench_accuracy.py's tasks that train in well under a minute each on 2 cores; the full set takes
# 12-24 minutes per backend.
DEFAULT_ACCURACY_TASKS = "seed,Zookeeper:level,OpenStack:level,Proxifier:eventid"


# embedding.backend's values but auto: a row names the backend it measures.
Backend = Literal["torch", "onnx", "onnx-int8"]


@dataclass(frozen=True)
class Variant:
    name: str
    backend: Backend
    device: str


VARIANTS = (
    Variant(REFERENCE, "torch", "cpu"),
    Variant("onnx fp32", "onnx", "cpu"),
    Variant(INT8, "onnx-int8", "cpu"),
    Variant("torch fp16", "torch", "cuda"),
    Variant("onnx fp16", "onnx", "cuda"),
)


def variant_settings(settings: Settings, v: Variant) -> Settings:
    embedding = dataclasses.replace(settings.embedding, backend=v.backend, device=v.device)
    return dataclasses.replace(settings, embedding=embedding)


def open_variants(settings: Settings) -> tuple[dict[str, Encoder], dict[str, str]]:
    """Every variant this machine can run, and why each of the others is skipped."""
    encoders: dict[str, Encoder] = {}
    skipped: dict[str, str] = {}
    cuda = cuda_available()
    for v in VARIANTS:
        if v.device == "cuda" and not cuda:
            skipped[v.name] = "no CUDA device"
            continue
        stage(f"opening {v.name} (not timed)")
        try:
            encoders[v.name] = open_encoder(variant_settings(settings, v).embedding)
        except EncoderError as exc:
            skipped[v.name] = str(exc)
    for name, reason in skipped.items():
        stage(f"skipped {name}: {reason}")
    return encoders, skipped


# ------------------------------------------------------------------------------------------ data


def seed_messages() -> list[str]:
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        return list(dict.fromkeys(r["log_message"] for r in csv.DictReader(fh) if r["log_message"].strip()))


def loghub_records() -> list[LogRecord]:
    out: list[LogRecord] = []
    for path in sorted(LOGHUB_DIR.glob("*_2k.log_structured.csv")):
        system = path.name.split("_2k")[0]
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            out += [LogRecord(system, r["Content"]) for r in csv.DictReader(fh) if r["Content"].strip()]
    return out


def raw_texts(sample: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    sets = {"seed": seed_messages(), "loghub": list(dict.fromkeys(r.message for r in loghub_records()))}
    return {name: rng.sample(texts, min(sample, len(texts))) for name, texts in sets.items()}


def never_seen(settings: Settings, n: int, seed: int) -> tuple[list[LogRecord], dict[str, int]]:
    """``n`` lines, each its own template after the configured masks, none a seed template and none
    a regex rule decides: Loghub lines first (at most half), then lines of seed-set words."""
    masker, regex = masker_of(settings.templates), build_regex_tier(settings)
    taken = {masker.template(m) for m in seed_messages()}
    loghub: list[LogRecord] = []
    for record in loghub_records():
        template = masker.template(record.message)
        if template not in taken and regex.decide_now(record) is None:
            taken.add(template)
            loghub.append(record)
    rng = random.Random(seed)
    loghub = rng.sample(loghub, min(len(loghub), n // 2))
    synthetic = NewLines(COLD_SOURCE, seed)
    synthetic.templates = {masker.template(m) for m in seed_messages()} | {masker.template(r.message) for r in loghub}
    lines = loghub + synthetic.take(n - len(loghub))
    distinct = len({masker.template(r.message) for r in lines})
    if distinct != n:
        raise RuntimeError(f"{n} never-seen lines hold only {distinct} distinct templates")
    return lines, {"loghub": len(loghub), "synthetic": n - len(loghub), "distinct_templates": distinct}


# ------------------------------------------------------------------------------------ raw encode


def timed_encode(encoder: Encoder, texts: Sequence[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    return len(texts) / (time.perf_counter() - start), vectors


def raw_encode(
    encoders: dict[str, Encoder], sets: dict[str, list[str]], rounds: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, np.ndarray]]:
    """Messages/s of every round per variant and set, and each variant's vectors of all sets."""
    names = list(encoders)
    for encoder in encoders.values():  # the first pass pays one-off initialisation
        encoder.encode(next(iter(sets.values()))[:8])
    rates: dict[str, dict[str, list[float]]] = {n: {s: [] for s in sets} for n in names}
    vectors: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        for set_name, texts in sets.items():
            for name in order:
                rate, vectors[name][set_name] = timed_encode(encoders[name], texts)
                rates[name][set_name].append(rate)
                stage(f"  round {number + 1}/{rounds} {set_name:<7} {name:<11} {rate:8.1f} msgs/s")
    return rates, {n: np.concatenate([v[s] for s in sets]) for n, v in vectors.items()}


def cosines(vectors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    reference = vectors[REFERENCE]
    out = {}
    for name, rows in vectors.items():
        cos = (rows * reference).sum(axis=1)
        out[name] = {"mean": float(cos.mean()), "min": float(cos.min())}
    return out


# -------------------------------------------------------------------------------------- accuracy


def accuracy_tasks(spec: str) -> list[tuple[str, str, list[accuracy.Row], float]]:
    """``seed`` or ``Dataset:task`` items: (dataset, task, rows, test size), as bench_accuracy.py."""
    tasks = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item == "seed":
            tasks.append(("seed", accuracy.SEED_SPLIT, accuracy.seed_rows(), accuracy.SEED_TEST_SIZE))
            continue
        dataset, _, task = item.partition(":")
        tasks.append((dataset, task, accuracy.task_rows(dataset, task), accuracy.LOGHUB_TEST_SIZE))
    return tasks


def run_accuracy(settings: Settings, names: Sequence[str], spec: str) -> dict[str, list[dict[str, Any]]]:
    """Per variant, one bench_accuracy.py result per task, trained and served on that variant."""
    by_name = {v.name: v for v in VARIANTS}
    tasks = accuracy_tasks(spec)
    out: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="logclass-bench-encoder-acc-") as tmp:
        for name in names:
            chosen = variant_settings(settings, by_name[name])
            out[name] = []
            for dataset, task, rows, test_size in tasks:
                workdir = Path(tmp) / f"{name}-{dataset}-{task}".replace(" ", "_")
                r = accuracy.run_task(dataset, task, rows, test_size, workdir, chosen)
                stage(f"  accuracy {name:<11} {dataset} {task}: {accuracy.describe(r)}")
                out[name].append({**dataclasses.asdict(r), "ratio": r.ratio})
    return out


def eligibility(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Worst macro-F1 loss against torch fp32 over the tasks, and whether it is within the limit."""
    reference = {(r["dataset"], r["task"]): r for r in results.get(REFERENCE, [])}
    out = {}
    for name, rows in results.items():
        losses = [
            reference[(r["dataset"], r["task"])]["logclass_macro_f1"] - r["logclass_macro_f1"]
            for r in rows
            if (r["dataset"], r["task"]) in reference
        ]
        errors = [r["error"] for r in rows if r["error"]] + [r["error"] for r in reference.values() if r["error"]]
        worst = max(losses, default=0.0)
        out[name] = {"worst_loss": worst, "eligible": not errors and bool(losses) and worst <= F1_LOSS_LIMIT}
    return out


# ---------------------------------------------------------------------------------- cold process


def child_env(backend: str) -> dict[str, str]:
    return {**os.environ, "LOGCLASS_LLM__BACKEND": "none", "LOGCLASS_EMBEDDING__BACKEND": backend}


def run_cli(args: Sequence[str], backend: str, split: bool = False) -> tuple[float, str]:
    """Wall seconds from spawn to exit of one ``logclass`` process, and its stderr."""
    cmd = [sys.executable, str(SPLIT_SCRIPT) if split else "-m", *([] if split else ["logclass.cli"]), *args]
    env = child_env(backend)
    env["BENCH_SPAWNED_AT"] = repr(time.time())
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, done.stderr


def torch_bundle(path: Path | None, workdir: Path) -> Path:
    """A bundle trained on torch embeddings (the shipped one is int8 and refuses torch): ``path``
    when it already holds one, else trained there (or in ``workdir``) now."""
    target = path or workdir / "torch-bundle"
    manifest = target / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["embedding"]["backend"] in ("torch", "onnx"):
        stage(f"torch bundle: reusing {target}")
        return target
    stage(f"torch bundle: training on the seed set into {target} (not timed)")
    args = ["train", str(SEED_CSV), "--labels", str(LABELS_YAML), "--features", "embedding"]
    run_cli([*args, "--out", str(target), "--no-progress"], "torch")
    return target


def write_input(lines: Sequence[LogRecord], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "log_message"])
        writer.writerows((r.source, r.message) for r in lines)


def output_tiers(path: Path) -> dict[str, int]:
    with path.open(encoding="utf-8", newline="") as fh:
        return dict(Counter(r["tier"] for r in csv.DictReader(fh)))


def split_of(stderr: str, wall: float) -> dict[str, float]:
    """Seconds per phase of a cli_split.py process, from its SPLIT line and the parent's wall time."""
    line = next(ln for ln in stderr.splitlines() if ln.startswith("SPLIT "))
    s = json.loads(line[len("SPLIT ") :])
    return {
        "interpreter": s["ready"] - s["spawned"],
        "cli_imports": s["imported"] - s["ready"],
        "settings_and_command_imports": s["load_start"] - s["imported"],
        "model_load": s["load_end"] - s["load_start"],
        "classify": s["done"] - s["load_end"],
        "exit": wall - (s["done"] - s["spawned"]),
    }


def cold_classify(
    settings: Settings, reference: Encoder, args: argparse.Namespace, backends: Sequence[str]
) -> dict[str, Any]:
    """Rounds of raw reference encode and one timed process per backend, alternated so both sides
    see the same load; the best of each counts."""
    n = args.cold_lines
    lines, composition = never_seen(settings, n, args.seed)
    stage(f"cold: {n:,} never-seen templates ({composition['loghub']:,} Loghub, {composition['synthetic']:,} new)")
    result: dict[str, Any] = {"lines": n, "rounds": args.cold_rounds, "composition": composition}
    with tempfile.TemporaryDirectory(prefix="logclass-bench-encoder-cold-") as tmp:
        work = Path(tmp)
        source, warm_csv, out_csv = work / "in.csv", work / "warm.csv", work / "out.csv"
        write_input(lines, source)
        # Seed lines, not the timed ones: warms the export cache and the page cache, not the run.
        write_input([LogRecord("bench", m) for m in seed_messages()[:20]], warm_csv)
        models = {b: (torch_bundle(args.torch_bundle, work) if b in ("torch", "onnx") else None) for b in backends}
        commands = {
            b: ["classify", "--output", str(out_csv), "--no-progress", "--llm-backend", "none"]
            + (["--model", str(models[b])] if models[b] else [])
            for b in backends
        }
        for backend in backends:
            stage(f"cold: {backend}: one untimed warm-up run (export cache, page cache)")
            run_cli([*commands[backend], str(warm_csv)], backend)
        raw: list[float] = []
        walls: dict[str, list[float]] = {b: [] for b in backends}
        tiers: dict[str, dict[str, int]] = {}
        for number in range(args.cold_rounds):
            raw.append(timed_encode(reference, [r.message for r in lines])[0])
            stage(f"  round {number + 1}/{args.cold_rounds} raw {REFERENCE} encode {raw[-1]:8.1f} msgs/s")
            for backend in backends:
                walls[backend].append(run_cli([*commands[backend], str(source)], backend)[0])
                tiers[backend] = output_tiers(out_csv)
                rate = n / walls[backend][-1]
                stage(f"  round {number + 1}/{args.cold_rounds} classify {backend:<9} {rate:8.1f} records/s")
        result["raw_reference_all"], result["raw_reference"] = raw, max(raw)
        result["processes"] = {b: process_row(n, walls[b], tiers[b], max(raw)) for b in backends}
        if INT8 in backends:
            stage("cold: onnx-int8 once more through benchmarks/cli_split.py, for where the time goes")
            split_wall, stderr = run_cli([*commands[INT8], str(source)], INT8, split=True)
            result["processes"][INT8] |= {"split": split_of(stderr, split_wall), "split_seconds": split_wall}
    return result


def process_row(n: int, walls: list[float], tiers: dict[str, int], raw_reference: float) -> dict[str, Any]:
    seconds = min(walls)
    return {
        "seconds": seconds,
        "seconds_all": walls,
        "records_per_s": n / seconds,
        "vs_raw_reference": n / seconds / raw_reference,
        "tiers": tiers,
    }


# ---------------------------------------------------------------------------------------- output


def best(rounds: list[float]) -> float:
    return max(rounds) if rounds else 0.0


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    raw = result["raw"]["best"]
    if INT8 in raw and REFERENCE in raw:
        ratio = min(raw[INT8][s] / raw[REFERENCE][s] for s in raw[REFERENCE])
        out["raw_int8_vs_torch"] = {"value": ratio, "min": RAW_INT8_TARGET, "pass": ratio >= RAW_INT8_TARGET}
    cold = result.get("cold", {}).get("processes", {}).get(INT8)
    if cold:
        value = cold["vs_raw_reference"]
        out["cold_int8_classify_vs_raw_torch"] = {"value": value, "min": COLD_TARGET, "pass": value >= COLD_TARGET}
    if result.get("eligibility"):
        ok = result["eligibility"].get(INT8, {}).get("eligible", False)
        out["int8_f1_within_0.5_points"] = {"value": float(ok), "min": 1.0, "pass": ok}
    return out


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"machine: {m['cpus']} CPUs (load average {m['loadavg_at_start']:.1f} at start), encoder threads "
        f"{m['threads']}, Python {m['python']}, {m['platform']}; sidecar {m['sidecar']}"
    )
    raw, sizes = result["raw"], result["raw"]["texts"]
    print(
        f"raw encode: best of {raw['rounds']} rounds, {sizes['seed']:,} distinct seed-set messages and "
        f"{sizes['loghub']:,} distinct Loghub messages, tokenisation included; ratios to {REFERENCE} of this run"
    )
    print()
    acc = result.get("accuracy", {})
    task_names = [
        f"{r['dataset']} {r['task']}".replace("seed seed split", "seed split") for r in acc.get(REFERENCE, [])
    ]
    header = (
        f"{'backend':<12}{'seed msgs/s':>12}{'ratio':>7}{'Loghub msgs/s':>14}{'ratio':>7}"
        f"{'cos mean':>10}{'cos min':>9}" + "".join(f"{t[:18]:>20}" for t in task_names) + f"{'eligible':>10}"
    )
    print(header)
    print("-" * len(header))
    ref = raw["best"][REFERENCE]
    for name, rates in raw["best"].items():
        cos = result["cosine"][name]
        cells = f"{name:<12}{rates['seed']:>12.1f}{rates['seed'] / ref['seed']:>6.2f}x"
        cells += (
            f"{rates['loghub']:>14.1f}{rates['loghub'] / ref['loghub']:>6.2f}x{cos['mean']:>10.4f}{cos['min']:>9.4f}"
        )
        for r in acc.get(name, []):
            cells += f"{'ERROR' if r['error'] else format(r['logclass_macro_f1'], '.4f'):>20}"
        verdict = result.get("eligibility", {}).get(name)
        cells += f"{('yes' if verdict['eligible'] else 'no') if verdict else '-':>10}"
        print(cells)
    for name, reason in result["skipped"].items():
        print(f"{name:<12}skipped: {reason}")
    print_cold(result.get("cold"))
    print()
    for name, t in result["targets"].items():
        print(f"{name:<40}{t['value']:>8.2f}   target >= {t['min']:g}  {'PASS' if t['pass'] else 'FAIL'}")


def print_cold(cold: dict[str, Any] | None) -> None:
    if not cold:
        return
    c = cold["composition"]
    print(
        f"\ncold `logclass classify` of {cold['lines']:,} never-seen templates ({c['loghub']:,} Loghub lines not in "
        f"the seed set, {c['synthetic']:,} of seed-set words; {c['distinct_templates']:,} distinct after masking), "
        f"whole process, best of {cold['rounds']} rounds alternated with the raw encode, export cache warm "
        "(one untimed run first), LLM off"
    )
    print(f"{'raw ' + REFERENCE + ' encode, same lines':<36}{cold['raw_reference']:>10.1f} msgs/s")
    for backend, row in cold["processes"].items():
        tiers = ", ".join(f"{t} {n}" for t, n in row["tiers"].items())
        print(
            f"{'classify, ' + backend:<36}{row['records_per_s']:>10.1f} records/s {row['seconds']:>7.1f} s "
            f"{row['vs_raw_reference']:>6.2f}x raw {REFERENCE}   tiers: {tiers}"
        )
        if "split" in row:
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in row["split"].items())
            print(f"{'  where the time went':<36}({row['split_seconds']:.1f} s run) {parts}")


# ------------------------------------------------------------------------------------------ main


@contextmanager
def opened(settings: Settings) -> Iterator[tuple[dict[str, Encoder], dict[str, str]]]:
    encoders, skipped = open_variants(settings)
    try:
        yield encoders, skipped
    finally:
        for encoder in encoders.values():
            encoder.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = config.load(overrides={"llm": {"backend": "none"}})
    result: dict[str, Any] = {}
    with opened(settings) as (encoders, skipped):
        if REFERENCE not in encoders:
            raise SystemExit(f"{REFERENCE} is the reference and could not be opened: {skipped.get(REFERENCE)}")
        reference = encoders[REFERENCE]
        result["machine"] = {
            "cpus": os.cpu_count(),
            "threads": reference.threads,
            "python": platform.python_version(),
            "platform": platform.platform(),
            # The checkout measured (a worktree needs PYTHONPATH=<it>/build/typecheck), and how busy
            # the machine was: ratios hold under load, absolute figures do not.
            "sidecar": str(Path(logclass.__file__).resolve().parent),
            "loadavg_at_start": os.getloadavg()[0],
        }
        result["skipped"] = skipped
        sets = raw_texts(args.raw_sample, args.seed)
        stage(f"raw encode: {args.rounds} rounds over {', '.join(f'{len(t)} {s}' for s, t in sets.items())} texts")
        rates, vectors = raw_encode(encoders, sets, args.rounds)
        result["raw"] = {
            "rounds": args.rounds,
            "texts": {s: len(t) for s, t in sets.items()},
            "all": rates,
            "best": {n: {s: best(r) for s, r in per.items()} for n, per in rates.items()},
        }
        result["cosine"] = cosines(vectors)
        if args.cold_lines:
            backends = [b.strip() for b in args.cold_backends.split(",") if b.strip()]
            result["cold"] = cold_classify(settings, reference, args, backends)
        names = [n for n in encoders if n in (args.accuracy_backends or encoders)]
    if args.accuracy_tasks:
        stage(f"accuracy: {args.accuracy_tasks} per backend ({', '.join(names)})")
        result["accuracy"] = run_accuracy(settings, names, args.accuracy_tasks)
        result["eligibility"] = eligibility(result["accuracy"])
    result["targets"] = targets(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-sample", type=int, default=600, help="distinct messages per set for raw encode")
    parser.add_argument("--rounds", type=int, default=3, help="raw encode rounds (the best counts)")
    parser.add_argument("--cold-lines", type=int, default=4000, help="never-seen templates classified (0: skip)")
    parser.add_argument("--cold-rounds", type=int, default=2, help="cold rounds (the best counts)")
    parser.add_argument("--cold-backends", default="onnx-int8,torch", help="backends of the cold classify runs")
    parser.add_argument("--torch-bundle", type=Path, help="bundle trained on torch for the torch run (made if absent)")
    parser.add_argument(
        "--accuracy-tasks", default=DEFAULT_ACCURACY_TASKS, help="seed and/or Dataset:task items ('' to skip)"
    )
    parser.add_argument("--accuracy-backends", type=lambda s: s.split(","), help="variants scored (default: all)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the samples")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    result = measure(args)
    print_table(result)
    return finish(result, all(t["pass"] for t in result["targets"].values()), args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
