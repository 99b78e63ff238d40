"""The CPU side of the fast lane: what each stage of a record's way without any model costs.

Every stage a record takes through the gRPC service when no model is asked is timed on its own,
over the whole data set, in one run: request protobuf decode, record conversion (``to_record``),
the exact-message cache, validation, masking, the regex tier, the memory tier, the template
cache, and the response protobuf build and encode. ``router.fast`` (all router stages together,
with its per-record bookkeeping) is timed as well, so the loop's own overhead shows as ``rest``.

Three mixes:

- ``new``: every distinct (source, message) of the data, caches empty: all-new messages;
- ``repeat``: the same records again: the exact cache answers every one;
- ``known_templates``: digits 1-9 shifted, the exact cache emptied and the template cache holding
  every template of the first pass: new messages of known templates.

Figures are µs per record of the mix (a stage's total time over all the mix's records, so shares
add up), the best of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LOGHUB_DIR, SEED_CSV, finish, stage
from logclass import config
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.client import to_request
from logclass.core.bundle import load_bundle
from logclass.core.decision import Decision, LogRecord, TemplateKey
from logclass.engine.pipeline import DEFAULT_BUNDLE, build_engine
from logclass.engine.router import CACHEABLE_MAX_CHARS, PendingTemplate, Router
from logclass.service.classifier import to_record, to_result
from logclass.tiers.base import FastTier
from logclass.tiers.regex import RegexTier

REQUEST_RECORDS = 1000  # records per gRPC request, as bench-server's warm target
# 0 stays put so that "0x1f" stays hex and no number gains a leading zero (as bench_pipeline).
SHIFT_DIGITS = str.maketrans("123456789", "234567891")
MIXES = {
    "new": "all-new messages (caches empty)",
    "repeat": "exact repeats (exact cache answers)",
    "known_templates": "new messages of known templates (template cache answers)",
}
# A template decision as a model lane would leave it, so the template cache can answer.
LEARNT = Decision("Learnt", 0.9, "embedding", "0" * 16, "bench")


def load_records() -> list[LogRecord]:
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        records = [LogRecord(row["source"], row["log_message"]) for row in csv.DictReader(fh)]
    for path in sorted(LOGHUB_DIR.glob("*_2k.log_structured.csv")):
        system = path.name.split("_2k")[0]
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            records += [LogRecord(system, row["Content"]) for row in csv.DictReader(fh)]
    return records


def best_of(rounds: int, setup: Callable[[], None], body: Callable[[], object]) -> float:
    """Seconds of the fastest of ``rounds`` runs of ``body``, ``setup`` untimed before each."""
    best = float("inf")
    for _ in range(rounds):
        setup()
        gc.collect()
        start = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - start)
    return best


def nothing() -> None:
    return None


@dataclass
class Mix:
    """One mix's inputs, prepared untimed: wire bytes, records, and which records reach which stage."""

    name: str
    records: list[LogRecord]
    wire: list[bytes]
    decisions: list[Decision]


class Profile:
    def __init__(self, router: Router, rounds: int) -> None:
        self.router = router
        self.rounds = rounds
        regex = next(t for _, t in router.fast_tiers if t.name == "regex")
        assert isinstance(regex, RegexTier)
        self.regex = regex
        self.memory: FastTier | None = next((t for _, t in router.fast_tiers if t.name == "memory"), None)

    def time(self, body: Callable[[], object], setup: Callable[[], None] = nothing) -> float:
        return best_of(self.rounds, setup, body)

    def stages(self, mix: Mix, fill_caches: Callable[[], None]) -> dict[str, float]:
        """Seconds per stage over the whole mix; caches set by ``fill_caches`` before each round."""
        router, records = self.router, mix.records
        keys = [(r.source, r.message) for r in records]
        fill_caches()
        # Which records reach which stage, as router.fast routes them.
        hit = [k in router.exact_cache._data for k in keys]
        misses = [r for r, h in zip(records, hit, strict=True) if not h]
        templates = [router.masker.template(r.message) for r in misses]
        by_rule = [self.regex.decide_now(r, t) is not None for r, t in zip(misses, templates, strict=True)]
        to_memory = [(r, t) for r, t, m in zip(misses, templates, by_rule, strict=True) if not m]
        memory = self.memory
        by_memory = [memory is not None and memory.decide_now(r, t) is not None for r, t in to_memory]
        to_cache = [(r.source, t) for (r, t), m in zip(to_memory, by_memory, strict=True) if not m]
        requests = [pb.ClassifyRequest.FromString(w) for w in mix.wire]
        exact, template_cache, regex, masker = router.exact_cache, router.template_cache, self.regex, router.masker

        def run_fast() -> None:
            out: list[Decision | None] = [None] * len(records)
            pending: dict[TemplateKey, PendingTemplate] = {}
            for i in range(0, len(records), REQUEST_RECORDS):
                router.fast(records[i : i + REQUEST_RECORDS], out, pending, i)

        def build_responses() -> list[Any]:
            out = []
            for n, request in enumerate(requests):
                chunk = mix.decisions[n * REQUEST_RECORDS : (n + 1) * REQUEST_RECORDS]
                results = [to_result(r.id, d) for r, d in zip(request.records, chunk, strict=True)]
                out.append(pb.ClassifyResponse(results=results, request_id=request.request_id))
            return out

        responses = build_responses()
        timed: dict[str, float] = {
            "request decode": self.time(lambda: [pb.ClassifyRequest.FromString(w) for w in mix.wire]),
            "to_record": self.time(lambda: [to_record(r) for q in requests for r in q.records]),
            "exact cache": self.time(lambda: [exact.get(k) for k in keys], fill_caches),
            "validate": self.time(lambda: [router._validate(r) for r in misses]),
            "masking": self.time(lambda: [masker.template(r.message) for r in misses]),
            "regex tier": self.time(lambda: [regex.decide_now(r) for r in misses]),
        }
        if memory is not None:
            timed["memory tier"] = self.time(lambda: [memory.decide_now(r, t) for r, t in to_memory])
        timed["template cache"] = self.time(lambda: [template_cache.get(k) for k in to_cache], fill_caches)
        timed["response build"] = self.time(build_responses)
        timed["response encode"] = self.time(lambda: [r.SerializeToString() for r in responses])
        timed["router.fast"] = self.time(run_fast, fill_caches)
        timed.update(self.before(misses))
        return timed

    def before(self, misses: list[LogRecord]) -> dict[str, float]:
        """The two stages as they were before their prefilters, on the same records: masking with
        every mask in the alternation, the regex tier searching every message."""
        masker, regex = self.router.masker, self.regex
        full = masker._regex
        scope = regex._pattern_for("")
        timed = {}
        if full is not None:
            timed[BEFORE_MASKING] = self.time(lambda: [full.sub(masker._replace, r.message) for r in misses])
        if scope.pattern is not None and not regex._scoped:
            search = scope.pattern.search
            timed[BEFORE_REGEX] = self.time(lambda: [search(r.message) for r in misses])
        return timed


def mix_inputs(name: str, records: list[LogRecord], router: Router) -> Mix:
    wire = [
        to_request(records[i : i + REQUEST_RECORDS]).SerializeToString()
        for i in range(0, len(records), REQUEST_RECORDS)
    ]
    # Ids as a shipper sends them; to_request leaves them empty.
    for n, data in enumerate(wire):
        request = pb.ClassifyRequest.FromString(data)
        for j, record in enumerate(request.records):
            record.id = f"r{n * REQUEST_RECORDS + j}"
        wire[n] = request.SerializeToString()
    out: list[Decision | None] = [None] * len(records)
    pending: dict[TemplateKey, PendingTemplate] = {}
    router.fast(records, out, pending)
    for entry in pending.values():
        for i in entry.indexes:
            out[i] = LEARNT
    decisions: list[Decision] = [d for d in out if d is not None]
    return Mix(name, records, wire, decisions)


def fresh_router(settings: Any, bundle: Any) -> Router:
    return build_engine(settings, bundle=bundle, tiers={"embedding": None, "llm": None}).router


def measure(rounds: int, limit: int | None) -> dict[str, Any]:
    stage("loading bundle and data (not timed)")
    settings = config.load(overrides={"llm": {"backend": "none"}})
    bundle = load_bundle(DEFAULT_BUNDLE)
    records = list(dict.fromkeys(load_records()))
    if limit:
        records = records[:limit]
    shifted = list(dict.fromkeys(LogRecord(r.source, r.message.translate(SHIFT_DIGITS)) for r in records))
    router = fresh_router(settings, bundle)

    # The template cache as the model lanes leave it after the first pass.
    learnt: dict[TemplateKey, Decision] = {}
    out: list[Decision | None] = [None] * len(records)
    pending: dict[TemplateKey, PendingTemplate] = {}
    router.fast(records, out, pending)
    learnt = {key: LEARNT for key in pending if len(key[1]) <= CACHEABLE_MAX_CHARS}

    def empty() -> None:
        router.exact_cache.clear()
        router.template_cache.clear()

    def warm_exact() -> None:
        empty()
        for r in records:
            router.exact_cache.put((r.source, r.message), LEARNT)

    def known_templates() -> None:
        empty()
        for key, decision in learnt.items():
            router.template_cache.put(key, decision)

    profile = Profile(router, rounds)
    results: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for name, data, fill in (
        ("new", records, empty),
        ("repeat", records, warm_exact),
        ("known_templates", shifted, known_templates),
    ):
        stage(f"{MIXES[name]}: {len(data):,} records, best of {rounds}")
        fill()
        mix = mix_inputs(name, data, router)
        seconds = profile.stages(mix, fill)
        results[name] = {stage_name: s / len(data) * 1e6 for stage_name, s in seconds.items()}
        counts[name] = len(data)
    return {
        "us_per_record": results,
        "records": counts,
        "request_records": REQUEST_RECORDS,
        "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


BEFORE_MASKING = "masking, no prefilter"
BEFORE_REGEX = "regex tier, no prefilter"
BEFORES = {BEFORE_MASKING: "masking", BEFORE_REGEX: "regex tier"}
ROUTER_STAGES = ("exact cache", "validate", "masking", "regex tier", "memory tier", "template cache")


def report(result: dict[str, Any]) -> None:
    table = result["us_per_record"]
    names = list(next(iter(table.values())))
    stages = [n for n in names if n != "router.fast" and n not in BEFORES]
    print(f"fast lane, µs per record (best of {result['rounds']}; {result['request_records']}-record requests)")
    header = f"{'stage':<22}" + "".join(f"{m:>24}" for m in table)
    print(header)
    totals = {m: sum(table[m][s] for s in stages) for m in table}
    for s in stages:
        cells = "".join(f"{table[m][s]:>13.3f} ({table[m][s] / totals[m]:>6.1%})" for m in table)
        print(f"{s:<22}{cells}")
    print(f"{'sum of stages':<22}" + "".join(f"{totals[m]:>13.3f}{'':>11}" for m in table))
    print(f"{'router.fast':<22}" + "".join(f"{table[m]['router.fast']:>13.3f}{'':>11}" for m in table))
    rest = {m: table[m]["router.fast"] - sum(table[m].get(s, 0.0) for s in ROUTER_STAGES) for m in table}
    print(f"{'  rest (loop, puts)':<22}" + "".join(f"{rest[m]:>13.3f}{'':>11}" for m in table))
    whole = {m: totals[m] - sum(table[m].get(s, 0.0) for s in ROUTER_STAGES) + table[m]["router.fast"] for m in table}
    print(f"{'whole path':<22}" + "".join(f"{whole[m]:>13.3f}{'':>11}" for m in table))
    print(f"{'records/s, one core':<22}" + "".join(f"{1e6 / whole[m]:>13,.0f}{'':>11}" for m in table))
    print("before the prefilters (same records, same run; not in the sums):")
    for before, now in BEFORES.items():
        if all(before in table[m] for m in table):
            cells = "".join(
                f"{table[m][before]:>13.3f} ({table[m][before] / max(table[m][now], 1e-9):>5.1f}x)" for m in table
            )
            print(f"{before:<26}{cells[4:]}")
    print("records: " + ", ".join(f"{m} {n:,}" for m, n in result["records"].items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="rounds per stage; the fastest counts (default 5)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N distinct records")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = parser.parse_args(argv)
    result = measure(args.repeat, args.limit)
    report(result)
    return finish(result, True, args.json, False)


if __name__ == "__main__":
    sys.exit(main())
