"""One distill cycle on the Loghub mix: how much of it goes to the LLM before and after the LLM
has taught the bundle.

Each Loghub 2k sample (``benchmarks/data/loghub``, source = dataset name) is split in two halves
in file order: the first is "yesterday", the second "today".

1. **Yesterday, LLM on.** A prefix of each first half goes through the engine with the bundle
   tiers and the embedded llama.cpp LLM (``llm.backend: llamacpp``) and ``llm.teacher_file`` set.
   The LLM on two shared cores answers a question in seconds, so the prefix is bounded: at most
   ``--lines`` lines, cut so that at most ``--questions`` distinct templates reach the LLM (the
   templates the current bundle leaves undecided, found by a pass with the LLM off). The cut
   depends only on the data and the bundle, so the sample is the same on every run. Recorded:
   the share of records tier ``llm`` decided and the distinct templates it was asked.
2. **Distill.** ``logclass distill`` (the library call) with that teacher file and the seed CSV
   against ``--model``: accepted or refused, both hold-out macro-F1s.
3. **Measure, LLM off.** The current and the new bundle (if refused, the same training written
   without the gate, and the table says so) classify the yesterday prefix and the
   whole of today. With the LLM off, tier ``none`` is what would go to the LLM with it on (the
   bundle tiers left it undecided), so that share is the "LLM share"; it costs no model calls.

Caveat: the seed taxonomy does not fit Loghub and Loghub has no labels in it, so the shares say
how much the bundle decides without the LLM, not whether those decisions are right.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make bench-distill` runs this file as a script, which puts benchmarks/, not the project root,
# on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_accuracy import git_state, loghub_names, read_loghub
from benchmarks.common import SEED_CSV, finish, stage
from logclass import config
from logclass.config.settings import Settings
from logclass.core.bundle import ModelBundle, load_bundle
from logclass.core.decision import TIER_NONE, Decision, LogRecord
from logclass.engine.blocking import BlockingEngine
from logclass.engine.pipeline import DEFAULT_BUNDLE, build_engine, unbounded_lanes
from logclass.training.distill import DistillOptions, DistillRefused, distill
from logclass.training.train import TrainOptions

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "training" / "data" / "labels.yaml"
DEFAULT_MODEL = DEFAULT_BUNDLE
TIER_LLM = "llm"
# Records per engine call with the LLM on: small, so progress is printed while it answers.
LLM_CHUNK = 20
# A tolerance no macro-F1 drop reaches: distill writes the bundle whatever it scores.
UNGATED = 0.999


@dataclass
class Sample:
    name: str
    yesterday: list[LogRecord]
    today: list[LogRecord]


def halves(name: str) -> tuple[list[LogRecord], list[LogRecord]]:
    records = [LogRecord(name, r["Content"]) for r in read_loghub(name)]
    half = len(records) // 2
    return records[:half], records[half:]


def settings_without_llm() -> Settings:
    return config.load(overrides={"llm": {"backend": "none"}})


def settings_with_llm(teacher: Path, model: str, threads: int) -> Settings:
    llm = {"backend": "llamacpp", "teacher_file": str(teacher), "llamacpp": {"model": model, "threads": threads}}
    return config.load(overrides={"llm": llm})


def classify(bundle: ModelBundle, settings: Settings, records: Sequence[LogRecord]) -> list[Decision]:
    engine = BlockingEngine(build_engine(unbounded_lanes(settings), bundle=bundle), None)
    try:
        return engine.classify(list(records))
    finally:
        engine.close()


def bounded_prefix(decisions: Sequence[Decision], lines: int, questions: int) -> int:
    """The longest prefix of at most ``lines`` records whose undecided records hold at most
    ``questions`` distinct templates: those are what the LLM will be asked."""
    asked: set[str] = set()
    for i, d in enumerate(decisions[:lines]):
        if d.tier == TIER_NONE and d.template_id not in asked:
            if len(asked) == questions:
                return i
            asked.add(d.template_id)
    return min(lines, len(decisions))


def samples(bundle: ModelBundle, lines: int, questions: int) -> list[Sample]:
    settings = settings_without_llm()
    out = []
    for name in loghub_names():
        first, second = halves(name)
        cut = bounded_prefix(classify(bundle, settings, first), lines, questions)
        out.append(Sample(name, first[:cut], second))
    return out


def undecided(decisions: Sequence[Decision]) -> int:
    return sum(1 for d in decisions if d.tier == TIER_NONE)


def measure(bundle: ModelBundle, data: Sequence[Sample]) -> dict[str, dict[str, int]]:
    """Per dataset: records and tier-``none`` records of yesterday's prefix and of today, LLM off."""
    settings = settings_without_llm()
    return {
        s.name: {
            "yesterday": len(s.yesterday),
            "yesterday_none": undecided(classify(bundle, settings, s.yesterday)),
            "today": len(s.today),
            "today_none": undecided(classify(bundle, settings, s.today)),
        }
        for s in data
    }


def teach(bundle: ModelBundle, data: Sequence[Sample], teacher: Path, model: str, threads: int) -> dict[str, Any]:
    """Yesterday's prefixes through the LLM tier, answers appended to ``teacher``."""
    settings = settings_with_llm(teacher, model, threads)
    engine = BlockingEngine(build_engine(unbounded_lanes(settings), bundle=bundle), None)
    per: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        stage(f"llm: loading {model}")
        engine.warm_up()
        for s in data:
            t0 = time.monotonic()
            decisions: list[Decision] = []
            for at in range(0, len(s.yesterday), LLM_CHUNK):
                decisions += engine.classify(s.yesterday[at : at + LLM_CHUNK])
                asked = len({d.template_id for d in decisions if d.tier == TIER_LLM})
                stage(
                    f"llm: {s.name} {len(decisions)}/{len(s.yesterday)} lines, {asked} templates asked "
                    f"({time.monotonic() - started:.0f}s in all)"
                )
            tiers = Counter(d.tier for d in decisions)
            per[s.name] = {
                "records": len(decisions),
                "llm_records": tiers.get(TIER_LLM, 0),
                "llm_templates": len({d.template_id for d in decisions if d.tier == TIER_LLM}),
                "none_records": tiers.get(TIER_NONE, 0),
                "labels": dict(Counter(d.label for d in decisions if d.tier == TIER_LLM).most_common(3)),
                "seconds": round(time.monotonic() - t0, 1),
            }
    finally:
        engine.close()
    return {"datasets": per, "seconds": round(time.monotonic() - started, 1)}


def run_distill(model: Path, teacher: Path, out: Path, tolerance: float) -> dict[str, Any]:
    started = time.monotonic()
    log_path = out.parent / f"{out.name}.distill.log"
    with log_path.open("w", encoding="utf-8") as log, contextlib.redirect_stderr(log):
        try:
            report = distill(
                SEED_CSV,
                [teacher],
                model,
                out,
                settings_without_llm(),
                DistillOptions(train=TrainOptions(labels_file=LABELS), tolerance=tolerance),
                progress=False,
            )
        except DistillRefused as exc:
            report = exc.report
    report["seconds"] = round(time.monotonic() - started, 1)
    report["log"] = str(log_path)
    return report


def pct(n: int, d: int) -> str:
    return f"{n / d:>7.1%}" if d else f"{'-':>7}"


def format_report(result: dict[str, Any]) -> str:
    taught, before, after = result["teach"]["datasets"], result["before"], result["after"]
    d = result["distill"]
    new_is = "the new bundle" if d["accepted"] else "the REFUSED new bundle, trained without the gate"
    lines = [
        f"One distill cycle on the Loghub mix, commit {result['commit']}, LLM {result['llm_model']} "
        f"({result['threads']} threads), current bundle {d['current']['version']}",
        f"yesterday: first half of each sample, prefix of <= {result['lines']} lines with <= "
        f"{result['questions']} templates for the LLM; today: whole second half",
        "LLM on: share of records tier llm decided; LLM off: share at tier none (what the LLM would get)",
        f"old: {d['current']['version']}; new: {new_is}",
        "",
        f"{'dataset':<10} {'y.lines':>7} {'y.llm on':>8} {'asked':>5} {'y.old':>7} {'y.new':>7} "
        f"{'t.lines':>7} {'t.old':>7} {'t.new':>7}",
    ]
    lines.append("-" * len(lines[-1]))
    tot: Counter[str] = Counter()
    for name, t in taught.items():
        b, a = before[name], after.get(name) if after else None
        tot.update({"y": b["yesterday"], "llm": t["llm_records"], "asked": t["llm_templates"]})
        tot.update({"yo": b["yesterday_none"], "t": b["today"], "to": b["today_none"]})
        if a:
            tot.update({"yn": a["yesterday_none"], "tn": a["today_none"]})
        lines.append(
            f"{name:<10} {b['yesterday']:>7} {pct(t['llm_records'], b['yesterday']):>8} {t['llm_templates']:>5} "
            f"{pct(b['yesterday_none'], b['yesterday'])} "
            f"{pct(a['yesterday_none'], b['yesterday']) if a else '      -'} "
            f"{b['today']:>7} {pct(b['today_none'], b['today'])} {pct(a['today_none'], b['today']) if a else '      -'}"
        )
    lines.append(
        f"{'all':<10} {tot['y']:>7} {pct(tot['llm'], tot['y']):>8} {tot['asked']:>5} {pct(tot['yo'], tot['y'])} "
        f"{pct(tot['yn'], tot['y']) if after else '      -'} {tot['t']:>7} {pct(tot['to'], tot['t'])} "
        f"{pct(tot['tn'], tot['t']) if after else '      -'}"
    )
    verdict = "accepted" if d["accepted"] else "REFUSED"
    lines += [
        "",
        f"distill: {verdict}; seed hold-out macro-F1 current {d['current']['macro_f1']:.4f}, new "
        f"{d['new']['macro_f1']:.4f} (accuracy {d['current']['accuracy']:.4f} -> {d['new']['accuracy']:.4f}, "
        f"{d['holdout']['rows_scored']} rows, tolerance {d['tolerance']:g}); teacher rows {result['teacher_rows']}",
        f"hold-out rows changed: {d['changed']['now_wrong']} now wrong, {d['changed']['now_right']} now right, "
        f"{d['changed']['other']} wrong either way"
        + "".join(
            f"\n  {r['source']}: {r['message'][:70]!r} ({r['label']}): {r['current']} -> {r['new']}"
            for r in d["changed"]["rows"]
        ),
        f"times: samples {result['seconds']['samples']}s, LLM {result['teach']['seconds']}s, distill "
        f"{d['seconds']}s, measuring {result['seconds']['measure']}s, total {result['seconds']['total']}s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the current bundle")
    parser.add_argument("--lines", type=int, default=500, help="most yesterday lines per dataset")
    parser.add_argument("--questions", type=int, default=15, help="most LLM questions (templates) per dataset")
    parser.add_argument("--llm-model", default="qwen2.5-coder-1.5b", help="llm.llamacpp.model")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--tolerance", type=float, default=0.0, help="distill --tolerance")
    parser.add_argument("--workdir", type=Path, help="keep the teacher file and the new bundle here")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--teacher", type=Path, help="distill this teacher file instead of asking the LLM (LLM-on columns empty)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return cycle(args, work)


def cycle(args: argparse.Namespace, work: Path) -> int:
    started = time.monotonic()
    teacher, out = work / "teacher.jsonl", work / "distilled"
    if teacher.exists() or out.exists() or (work / "refused").exists():
        raise SystemExit(f"{work} holds a teacher.jsonl or distilled/ already: give an empty --workdir")
    current = load_bundle(args.model)
    stage(f"samples: cutting yesterday's prefixes with {current.version}, LLM off")
    data = samples(current, args.lines, args.questions)
    t_samples = time.monotonic()
    stage(f"before: {current.version} on yesterday and today, LLM off")
    before = measure(current, data)
    t_before = time.monotonic() - t_samples
    if args.teacher:
        shutil.copyfile(args.teacher, teacher)
        taught = {"datasets": {s.name: {"llm_records": 0, "llm_templates": 0} for s in data}, "seconds": 0}
    else:
        taught = teach(current, data, teacher, args.llm_model, args.threads)
    teacher_rows = sum(1 for _ in teacher.open(encoding="utf-8")) if teacher.exists() else 0
    stage(f"distill: {teacher_rows} teacher rows + {SEED_CSV.name} against {args.model}")
    report = run_distill(args.model, teacher, out, args.tolerance)
    measured = out
    if not report["accepted"]:
        # The would-be bundle, to show what the gate kept out: same training, no gate.
        stage("distill refused; training the same bundle without the gate to measure it")
        measured = work / "refused"
        run_distill(args.model, teacher, measured, UNGATED)
    t0 = time.monotonic()
    stage(f"after: {measured.name} on yesterday and today, LLM off")
    after = measure(load_bundle(measured), data)
    result = {
        "commit": git_state(),
        "llm_model": args.llm_model,
        "threads": args.threads,
        "lines": args.lines,
        "questions": args.questions,
        "teacher_rows": teacher_rows,
        "teach": taught,
        "before": before,
        "after": after,
        "after_bundle": "accepted" if report["accepted"] else "refused (measured anyway)",
        "distill": report,
        "seconds": {
            "samples": round(t_samples - started, 1),
            "measure": round(t_before + time.monotonic() - t0, 1),
            "total": round(time.monotonic() - started, 1),
        },
    }
    code = finish(result, True, args.json, False)
    print(format_report(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
