"""One classifier per cluster (issue 30): N sidecars on one Valkey/Redis store against N sidecars
alone, in the same run.

The benchmark starts a real ``redis-server`` on 127.0.0.1 (in a temporary directory, nothing saved)
and N real ``logclass serve`` processes on loopback (the shipped bundle; HTTP off; each its own gRPC
and metrics port; the Admin service on with a token made for the run). Each sidecar has its own
LLM: an OpenAI-compatible stub on 127.0.0.1 in a thread of the benchmark (``LlmStub``: it answers
``POST /v1/chat/completions`` after ``--llm-latency-ms``, standing in for a real model's time, with
one of the labels the request allows, picked by a hash of the question, and records every
question), reached as vLLM is (``llm.backend: vllm``, no retries). ``--llm off`` runs the sidecars
without an LLM, the embedding tier then being the only model tier. The whole of what follows runs
twice: once with ``store.url`` pointing at that redis-server, once with ``store.url`` null (each
sidecar decides alone: the baseline).

- **New templates.** The same stream of never-seen templates goes to every sidecar at the same
  moment: for each template, one ``Classify`` call (``wait_for_all``) per sidecar, all started
  together, and the next template once all have answered. The templates are seed-set lines
  changed a word or two (a word inserted, dropped or doubled), so each is a template of its own
  after masking; an in-process engine (no LLM) sorts them beforehand into those the embedding head
  decides (``--templates``) and those it escalates, the out-of-distribution check leaving them
  ``Unclassified`` with tier ``none`` there, and to the LLM in the sidecars (``--undecided``).
  A third kind are LegacyCRM lines changed the same way (``--llm-routed``), which the bundle
  routes past the fast tiers and the head straight to the LLM (not sent with ``--llm off``). The
  kinds go as separate streams, so the metrics can tell them apart.
- **Model-tier decisions per template**: the sum over sidecars of ``logclass_tier_records_total``
  for each stream's first model tier (the embedding tier's; the LLM's for LegacyCRM), scraped
  before and after each stream, over the templates sent: how many nodes decided each template.
  Target <= 1.05 with the store; alone, each sidecar decides each template (N). An escalated
  template also enters the LLM's lane on the node deciding it: the row of lane calls (both tiers)
  shows that, without a target.
- **LLM calls per template**: the questions the cluster's stubs had during the escalated and
  LegacyCRM streams over the distinct questions among them (the templates the LLM was asked
  about at least once). Target <= 1.05 with the store; alone N. An LLM answer is shared through
  the store as the template's decision and as a lesson, which the memory tier answers afterwards.
- **New-template latency**: each of those calls, p50/p99, with the store against without: what
  the store's lookups, claims and waits add to a new template's answer.
- **Warm callers**: beside the streams, one caller per sidecar (in a process of its own, so the
  benchmark's own work does not hold its interpreter) classifies a small set of known seed lines
  (warmed first) every ``--warm-interval-ms``; p50/p99 per sidecar during the streams (the JSON
  also has them over the whole run, corrections included). Target p99 <= 50 ms in both runs.
- **Disagreements**: after the streams, every template classified again on every sidecar; the
  templates whose labels differ between sidecars. Target 0 with the store. Counted again after
  the corrections (a correction that reached one sidecar only is a disagreement).
- **Correction propagation**: for ``--corrections`` templates the model decided, one Admin
  ``Feedback`` to sidecar 0 with a label other than the template's current one, then sidecars
  1..N-1 asked for the same record every 10 ms until each answers the corrected label: the time
  from the Feedback call's return to the last one's agreement. Target p99 <= 1 s with the store.
  A template not agreed on within ``--propagation-timeout`` never propagated; after
  ``--give-up-after`` of those in a row the rest are not tried, so a cluster that does not
  propagate corrections costs seconds, not K timeouts. Without the store one template is tried
  for 2 s and the row reads "never".

Progress goes to stderr, the table to stdout; ``--json PATH`` writes every figure. A missed target
is printed, not an error (``--strict`` makes it one); a setup failure (no redis-server, a sidecar
that does not start) exits nonzero.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import multiprocessing
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The engine that sorts the templates runs without an LLM: what the head decides does not depend on
# an LLM behind it, and a template the head escalates gets tier none there. The sidecars are given
# their LLM (or none, with --llm off) in their own environment.
os.environ["LOGCLASS_LLM__BACKEND"] = "none"
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

import logclass
from benchmarks.common import SEED_CSV, LogclassProcess, finish, free_port, stage
from benchmarks.loadgen import wait_ready
from logclass.api.logclass.v1 import admin_pb2 as admin_pb
from logclass.api.logclass.v1 import admin_pb2_grpc as admin_grpc
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.core.decision import LogRecord

RATIO_TARGET = 1.05  # model-tier decisions (and LLM calls) per new template, summed over the cluster
WARM_P99_TARGET_MS = 50.0
PROPAGATION_P99_TARGET_S = 1.0
MODEL_TIERS = ("embedding", "llm")
LLM_SOURCE = "LegacyCRM"  # the shipped bundle routes this source straight to the LLM tier
NEW_CALL_TIMEOUT_S = 120.0  # one new template with wait_for_all, on busy cores
POLL_INTERVAL_S = 0.01
POLL_CALL_TIMEOUT_S = 1.0
BASELINE_PROPAGATION_TIMEOUT_S = 2.0
WARM_DEADLINE_S = 5.0
CHUNK = 500  # records per request when classifying every template again
# Separate connections per caller: grpc shares subchannels between channels to one target.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
# Words a changed seed line may gain: plain English that keeps the line in the head's domain.
FILLERS = (
    "again",
    "now",
    "today",
    "unexpectedly",
    "during",
    "nightly",
    "run",
    "the",
    "quickly",
    "partially",
    "remote",
    "primary",
    "secondary",
    "service",
    "cluster",
)


# --- the store -----------------------------------------------------------------------------------


class RedisServer:
    """One redis-server on 127.0.0.1, nothing persisted, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("no redis-server here: `make store-deps` installs it (Debian's redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not listen within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# --- the LLM stand-in ----------------------------------------------------------------------------


class LlmStub(ThreadingHTTPServer):
    """An OpenAI-compatible chat server on 127.0.0.1 standing in for one sidecar's LLM: each
    question (the last message of ``POST /v1/chat/completions``) is answered after ``latency_s``
    with one of the labels the request allows (``structured_outputs.choice``), picked by a hash of
    the question, so the same question gets the same label from every stub; each question is
    recorded. It runs in a thread of the benchmark's process (one handler thread per connection)."""

    daemon_threads = True

    def __init__(self, latency_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _LlmStubHandler)
        self.latency_s = latency_s
        self._questions: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="llm-stub", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL, as ``llm.server.url`` takes it."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def asked(self, question: str) -> None:
        with self._lock:
            self._questions.append(question)

    def questions(self, start: int = 0) -> list[str]:
        """The questions asked so far, from the ``start``-th on."""
        with self._lock:
            return self._questions[start:]

    def count(self) -> int:
        with self._lock:
            return len(self._questions)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)


def stub_answer(question: str, choices: Sequence[str]) -> str:
    """The label a stub gives ``question``: deterministic, and spread over the allowed labels."""
    digest = hashlib.sha256(question.encode("utf-8", "surrogatepass")).digest()
    return choices[int.from_bytes(digest[:8], "big") % len(choices)]


class _LlmStubHandler(BaseHTTPRequestHandler):
    server: LlmStub
    protocol_version = "HTTP/1.1"  # keep-alive, as the sidecar's HTTP client expects of a server
    # The headers and the body go out as two writes: with Nagle's algorithm the body would wait
    # for the client's delayed ACK of the headers (40 ms on Linux) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._reply(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        else:
            self._reply(404, {"error": {"message": f"no {self.path} here"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._reply(404, {"error": {"message": f"no {self.path} here"}})
            return
        try:
            question = str(body["messages"][-1]["content"])
            choices = [str(c) for c in body["structured_outputs"]["choice"]]
        except (KeyError, IndexError, TypeError):
            self._reply(400, {"error": {"message": "want messages and structured_outputs.choice"}})
            return
        if not choices:
            self._reply(400, {"error": {"message": "structured_outputs.choice is empty"}})
            return
        self.server.asked(question)
        time.sleep(self.server.latency_s)  # a real LLM's time, in this handler's thread only
        message = {"role": "assistant", "content": stub_answer(question, choices)}
        self._reply(200, {"object": "chat.completion", "model": "stub", "choices": [{"index": 0, "message": message}]})


# --- the templates -------------------------------------------------------------------------------


@dataclass
class Templates:
    decided: list[LogRecord]  # the embedding head decides each
    undecided: list[LogRecord]  # the head escalates each (without an LLM: tier none)
    routed: list[LogRecord]  # LegacyCRM lines: routed past the fast tiers and the head to the LLM
    warm: list[LogRecord]  # seed lines the fast tiers decide: the warm callers' records

    @property
    def all(self) -> list[LogRecord]:
        return self.decided + self.undecided + self.routed


def _changed(message: str, rng: random.Random) -> str:
    words = message.split()
    for _ in range(2):
        op = rng.randrange(3)
        if op == 0:
            words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
        elif op == 1 and len(words) > 3:
            del words[rng.randrange(len(words))]
        else:
            i = rng.randrange(len(words))
            words.insert(i, words[i])
    return " ".join(words)


def legacy_lines() -> list[LogRecord]:
    """The seed set's distinct lines of the source the bundle routes to the LLM."""
    seen: dict[str, None] = {}
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["source"] == LLM_SOURCE and row["log_message"].strip():
                seen[row["log_message"]] = None
    return [LogRecord(LLM_SOURCE, message) for message in seen]


def make_templates(decided: int, undecided: int, routed: int, warm: int, seed: int) -> Templates:
    """Never-seen templates sorted by what the shipped bundle does with them, decided by an
    in-process engine on the same settings the sidecars read (LLM off)."""
    from benchmarks.bench_lanes import seed_lines
    from logclass import config
    from logclass.engine.blocking import BlockingEngine
    from logclass.engine.pipeline import build_engine, masker_of

    settings = config.load()
    masker = masker_of(settings.templates)
    engine = BlockingEngine(build_engine(settings), settings=settings)
    rng = random.Random(seed)
    try:
        seeds = seed_lines()
        seen = {masker.template(r.message) for r in seeds}
        out: dict[str, list[LogRecord]] = {"embedding": [], "none": []}
        wanted = {"embedding": decided, "none": undecided}
        for _ in range(50):  # bounded: about four in five changed lines are the head's
            if all(len(out[k]) >= wanted[k] for k in wanted):
                break
            batch: list[LogRecord] = []
            for record in rng.sample(seeds, 200):
                changed = LogRecord(record.source, _changed(record.message, rng))
                template = masker.template(changed.message)
                if template not in seen:
                    seen.add(template)
                    batch.append(changed)
            for record, decision in zip(batch, engine.classify(batch), strict=True):
                if decision.tier in out and len(out[decision.tier]) < wanted[decision.tier]:
                    out[decision.tier].append(record)
        for kind, n in wanted.items():
            if len(out[kind]) < n:
                raise RuntimeError(f"could only make {len(out[kind])} of {n} new templates with tier {kind}")
        # LegacyCRM lines changed the same way: routed to the LLM, so without one no tier decides
        # them (tier none); a line some fast tier would still answer is not taken.
        legacy = legacy_lines()
        legacy_seen = {masker.template(r.message) for r in legacy}
        routes: list[LogRecord] = []
        for _ in range(50):
            if len(routes) >= routed or not legacy:
                break
            batch = []
            for _ in range(max(20, 2 * (routed - len(routes)))):
                changed = LogRecord(LLM_SOURCE, _changed(rng.choice(legacy).message, rng))
                template = masker.template(changed.message)
                if template not in legacy_seen:
                    legacy_seen.add(template)
                    batch.append(changed)
            for record, decision in zip(batch, engine.classify(batch), strict=True):
                if decision.tier == "none" and len(routes) < routed:
                    routes.append(record)
        if len(routes) < routed:
            raise RuntimeError(f"could only make {len(routes)} of {routed} new {LLM_SOURCE} templates")
        sample = rng.sample(seeds, min(len(seeds), warm * 5))
        known = [r for r, d in zip(sample, engine.classify(sample), strict=True) if d.tier in ("regex", "memory")]
    finally:
        engine.close()
    if len(known) < warm:
        raise RuntimeError(f"only {len(known)} of {warm} warm seed lines are decided by the fast tiers")
    return Templates(out["embedding"], out["none"], routes, known[:warm])


# --- the warm callers (a process of their own) ---------------------------------------------------


def _warm_calls(
    targets: list[str], records: list[tuple[str, str]], interval: float, ready: Any, stop: Any, out: Any
) -> None:
    """One thread per sidecar: the known records every ``interval`` s on a fixed schedule (a late
    answer does not push the schedule back) until ``stop``; then each call's (end time, seconds,
    ok) per sidecar go back through ``out``. ``perf_counter`` is CLOCK_MONOTONIC, shared by both
    processes."""
    request = pb.ClassifyRequest(records=[pb.LogRecord(source=s, message=m) for s, m in records])
    calls: list[list[tuple[float, float, bool]]] = [[] for _ in targets]
    started = threading.Barrier(len(targets) + 1)

    def caller(i: int, target: str) -> None:
        with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
            stub.Classify(request, timeout=60)  # the connection made, not counted
            started.wait()
            begin = time.perf_counter()
            n = 0
            while not stop.is_set():
                sent = time.perf_counter()
                try:
                    response = stub.Classify(request, timeout=WARM_DEADLINE_S)
                    ok = len(response.results) == len(records) and not any(r.error for r in response.results)
                except grpc.RpcError:
                    ok = False
                end = time.perf_counter()
                calls[i].append((end, end - sent, ok))
                n += 1
                delay = begin + n * interval - time.perf_counter()
                if delay > 0:
                    stop.wait(delay)

    threads = [threading.Thread(target=caller, args=(i, t), daemon=True) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    started.wait()
    ready.set()
    for thread in threads:
        thread.join()
    out.send(calls)


class WarmCallers:
    def __init__(self, targets: list[str], records: Sequence[LogRecord], interval: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        self._stop = context.Event()
        self._results, child = context.Pipe(duplex=False)
        pairs = [(r.source, r.message) for r in records]
        args = (targets, pairs, interval, self._ready, self._stop, child)
        self._process = context.Process(target=_warm_calls, args=args, daemon=True)
        self._process.start()
        self.calls: list[list[tuple[float, float, bool]]] = [[] for _ in targets]
        self.answered = True

    def wait_ready(self, timeout: float = 120) -> None:
        if not self._ready.wait(timeout):
            raise RuntimeError("the warm callers did not start")

    def stop(self) -> None:
        self._stop.set()
        if self._results.poll(60):
            self.calls = self._results.recv()
        else:
            self.answered = False
        self._process.join(timeout=10)

    def window(self, i: int, start: float, end: float) -> dict[str, Any]:
        picked = [(s, ok) for t, s, ok in self.calls[i] if start <= t <= end]
        ms = [s * 1000 for s, _ in picked]
        return {
            "calls": len(picked),
            "failed": sum(not ok for _, ok in picked) + (0 if self.answered else 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms else None,
            "max_ms": round(max(ms), 2) if ms else None,
        }


# --- the sidecars --------------------------------------------------------------------------------


class Sidecar(LogclassProcess):
    def __init__(
        self, index: int, store_url: str | None, admin_token: str, store_timeout_ms: int | None, llm: LlmStub | None
    ) -> None:
        self.index = index
        self.target = f"127.0.0.1:{free_port()}"
        self.llm = llm
        env = {
            "LOGCLASS_STORE__URL": store_url or "null",
            "LOGCLASS_SERVER__HTTP_LISTEN": "null",
            "LOGCLASS_SERVER__ADMIN_AUTH__TOKEN": admin_token,
        }
        if llm is None:
            env["LOGCLASS_LLM__BACKEND"] = "none"
        else:
            # Its own stub, as each pod would reach an LLM; no retries: a stub that fails is a
            # benchmark fault to see, not to paper over.
            env["LOGCLASS_LLM__BACKEND"] = "vllm"
            env["LOGCLASS_LLM__SERVER__URL"] = llm.url
            env["LOGCLASS_LLM__SERVER__MODEL"] = "stub"
            env["LOGCLASS_LLM__SERVER__RETRIES"] = "0"
        if store_timeout_ms is not None:
            env["LOGCLASS_STORE__TIMEOUT_MS"] = str(store_timeout_ms)
        super().__init__(["serve", "--listen", self.target], env, "LOGCLASS_SERVER__METRICS_LISTEN", f"cluster{index}")

    async def wait_ready(self, timeout: float = 600.0) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
            ready = asyncio.ensure_future(wait_ready(stub, timeout))
            # A sidecar that dies while loading would leave wait_for_ready waiting the whole timeout.
            while not ready.done():
                if self.proc.poll() is not None:
                    ready.cancel()
                    raise RuntimeError(f"sidecar {self.index} exited with {self.proc.returncode}\n{self.log_tail()}")
                await asyncio.wait([ready], timeout=0.5)
            try:
                ready.result()
            except grpc.aio.AioRpcError as exc:
                raise RuntimeError(f"sidecar {self.index} not ready: {exc.details()}\n{self.log_tail()}") from exc

    def counters(self) -> dict[str, float]:
        """Every counter sample of the metrics endpoint, as ``name{label="value",...}``."""
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                    key = f"{sample.name}{{{labels}}}" if labels else sample.name
                    out[key] = out.get(key, 0.0) + float(sample.value)
        return out


def _tier_calls(counters: dict[str, float], tier: str) -> float:
    """Templates handed to ``tier``'s lane (``logclass_tier_records_total``)."""
    return counters.get(f'logclass_tier_records_total{{tier="{tier}"}}', 0.0)


def _llm_marks(sidecars: Sequence[Sidecar]) -> list[int]:
    """How many questions each sidecar's LLM stub has had so far."""
    return [s.llm.count() if s.llm is not None else 0 for s in sidecars]


def _llm_since(sidecars: Sequence[Sidecar], marks: Sequence[int]) -> list[str]:
    """Every question the sidecars' LLM stubs had since ``marks``, all stubs together."""
    return [q for s, m in zip(sidecars, marks, strict=True) if s.llm is not None for q in s.llm.questions(m)]


def _scrape(sidecars: Sequence[Sidecar]) -> list[dict[str, float]]:
    return [s.counters() for s in sidecars]


def _delta(after: list[dict[str, float]], before: list[dict[str, float]]) -> dict[str, float]:
    """The cluster's increase of every counter between two scrapes."""
    out: dict[str, float] = {}
    for a, b in zip(after, before, strict=True):
        for key, value in a.items():
            out[key] = out.get(key, 0.0) + value - b.get(key, 0.0)
    return out


STORE_COUNTERS = {
    "lookups_hit": 'logclass_store_lookups_total{result="hit"}',
    "lookups_miss": 'logclass_store_lookups_total{result="miss"}',
    "claims_won": 'logclass_store_claims_total{outcome="won"}',
    "claims_held": 'logclass_store_claims_total{outcome="held"}',
    "calls": "logclass_store_calls_total",
    "failures": "logclass_store_failures_total",
    "skipped": "logclass_store_skipped_total",
}


# --- one run -------------------------------------------------------------------------------------


def _channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def _pb_record(record: LogRecord, rid: str = "") -> Any:
    return pb.LogRecord(source=record.source, message=record.message, id=rid)


async def _classify_all(stub: Any, records: Sequence[LogRecord]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(records), CHUNK):
        request = pb.ClassifyRequest(records=[_pb_record(r) for r in records[i : i + CHUNK]], wait_for_all=True)
        out.extend((await stub.Classify(request, timeout=NEW_CALL_TIMEOUT_S)).results)
    return out


@dataclass
class StreamResult:
    templates: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, every successful call
    failed: Counter[str] = field(default_factory=Counter)  # by status code
    tiers: list[Counter[str]] = field(default_factory=list)  # per sidecar
    # Decisions: templates entering the stream's first model tier, summed over the cluster. A
    # template the head escalates enters the LLM's lane too, on the node deciding it: counted in
    # model_calls (both tiers' lanes), not as a second decision.
    decisions: float = 0.0
    model_calls: float = 0.0
    llm_questions: int = 0  # questions the cluster's LLM stubs had during the stream
    llm_templates: int = 0  # distinct questions among them: templates the LLM was asked about
    store: dict[str, float] = field(default_factory=dict)


async def _stream(stubs: Sequence[Any], records: Sequence[LogRecord]) -> StreamResult:
    """Each template to every sidecar at once, one template at a time."""
    result = StreamResult(templates=len(records), tiers=[Counter() for _ in stubs])

    async def one(i: int, stub: Any, record: LogRecord) -> None:
        request = pb.ClassifyRequest(records=[_pb_record(record)], wait_for_all=True)
        sent = time.perf_counter()
        try:
            response = await stub.Classify(request, timeout=NEW_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            result.failed[exc.code().name] += 1
            return
        result.latencies.append(time.perf_counter() - sent)
        result.tiers[i][response.results[0].tier] += 1

    for record in records:
        await asyncio.gather(*(one(i, stub, record) for i, stub in enumerate(stubs)))
    return result


def _disagreements(labels: list[list[str]]) -> int:
    """Templates (rows) whose label differs between sidecars (columns)."""
    return sum(len(set(row)) > 1 for row in labels)


async def _labels(stubs: Sequence[Any], records: Sequence[LogRecord]) -> list[list[str]]:
    """Every record's label on every sidecar, once each has decided it: [record][sidecar]."""
    per_sidecar = await asyncio.gather(*(_classify_all(stub, records) for stub in stubs))
    return [[results[i].label for results in per_sidecar] for i in range(len(records))]


@dataclass
class Propagation:
    tried: int = 0
    seconds: list[float] = field(default_factory=list)  # agreed by every other sidecar
    never: int = 0  # not agreed on within the timeout
    not_tried: int = 0  # left after give_up_after nevers in a row
    feedback_not_applied: int = 0  # sidecar 0 itself did not answer the corrected label

    def summary(self) -> dict[str, Any]:
        values = sorted(self.seconds) + [float("inf")] * self.never
        return {
            "tried": self.tried,
            "propagated": len(self.seconds),
            "never": self.never,
            "not_tried": self.not_tried,
            "feedback_not_applied": self.feedback_not_applied,
            "p50_s": _json_seconds(_rank(values, 50)),
            "p99_s": _json_seconds(_rank(values, 99)),
            "seconds": [round(s, 4) for s in self.seconds],
        }


def _json_seconds(value: float | None) -> float | str | None:
    """Seconds for the JSON: "never" for a correction never agreed on (JSON has no infinity)."""
    if value is None:
        return None
    return "never" if value == float("inf") else round(value, 4)


def _rank(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (a value that occurred; inf: never); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(np.ceil(q / 100 * len(ordered))) - 1))]


async def _propagate(
    stubs: Sequence[Any],
    admin: Any,
    token: str,
    records: Sequence[LogRecord],
    current: Sequence[str],
    labels: Sequence[str],
    timeout: float,
    give_up_after: int,
) -> Propagation:
    """Corrects each record on sidecar 0 and waits for sidecars 1.. to answer the new label."""
    result = Propagation()
    metadata = (("authorization", f"Bearer {token}"),)
    nevers_in_a_row = 0
    for n, (record, label) in enumerate(zip(records, current, strict=True)):
        if nevers_in_a_row >= give_up_after:
            result.not_tried = len(records) - n
            break
        others = [x for x in labels if x != label]
        new = others[n % len(others)]
        correction = admin_pb.Correction(record=_pb_record(record, f"c{n}"), label=new)
        response = await admin.Feedback(
            admin_pb.FeedbackRequest(corrections=[correction]), timeout=30, metadata=metadata
        )
        returned = time.perf_counter()
        result.tried += 1
        if response.results[0].label != new:
            result.feedback_not_applied += 1
        agreed: dict[int, float] = {}
        request = pb.ClassifyRequest(records=[_pb_record(record)], wait_for_all=True)

        async def ask(i: int, request: Any = request, new: str = new, agreed: dict[int, float] = agreed) -> None:
            try:
                response = await stubs[i].Classify(request, timeout=POLL_CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                return
            if response.results[0].label == new:
                agreed.setdefault(i, time.perf_counter())

        while len(agreed) < len(stubs) - 1 and time.perf_counter() - returned < timeout:
            await asyncio.gather(*(ask(i) for i in range(1, len(stubs)) if i not in agreed))
            if len(agreed) < len(stubs) - 1:
                await asyncio.sleep(POLL_INTERVAL_S)
        if len(agreed) == len(stubs) - 1:
            result.seconds.append(max(agreed.values()) - returned)
            nevers_in_a_row = 0
        else:
            result.never += 1
            nevers_in_a_row += 1
    return result


async def run_cluster(
    name: str, store_url: str | None, templates: Templates, args: argparse.Namespace
) -> dict[str, Any]:
    token = secrets.token_hex(16)
    n = args.sidecars
    llm_on = args.llm == "on"
    llm_text = f"each its own LLM stub answering in {args.llm_latency_ms:g} ms" if llm_on else "LLM off"
    stage(f"[{name}] starting {n} logclass serve ({llm_text}, HTTP off, store.url {store_url or 'null'})")
    stubs_llm = [LlmStub(args.llm_latency_ms / 1000) if llm_on else None for _ in range(n)]
    sidecars: list[Sidecar] = []
    channels: list[grpc.aio.Channel] = []
    warm: WarmCallers | None = None
    try:
        for i in range(n):  # one at a time: those started are stopped below if the next fails
            sidecars.append(Sidecar(i, store_url, token, args.store_timeout_ms, stubs_llm[i]))
        started = time.perf_counter()
        await asyncio.gather(*(s.wait_ready() for s in sidecars))
        stage(f"[{name}] all {n} serving after {time.perf_counter() - started:.1f} s")
        channels = [_channel(s.target) for s in sidecars]
        stubs = [pb_grpc.LogClassifierStub(c) for c in channels]  # type: ignore[no-untyped-call]
        admin = admin_grpc.AdminStub(channels[0])  # type: ignore[no-untyped-call]
        info = await stubs[0].GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        labels = sorted(set(info.labels) - {info.fallback_label})
        await asyncio.gather(*(_classify_all(stub, templates.warm) for stub in stubs))
        stage(f"[{name}] warm callers: {len(templates.warm)} known seed lines every {args.warm_interval_ms} ms")
        warm = WarmCallers([s.target for s in sidecars], templates.warm, args.warm_interval_ms / 1000)
        warm.wait_ready()

        marks = {"start": time.perf_counter()}
        llm_before_streams = sum(_llm_marks(sidecars))  # the sidecars' LLM warm-up questions
        before = _scrape(sidecars)
        streams: dict[str, StreamResult] = {}
        for kind, records, first_tier in (
            ("decided", templates.decided, "embedding"),
            ("undecided", templates.undecided, "embedding"),
            ("routed", templates.routed, "llm"),
        ):
            if not records:
                continue
            stage(f"[{name}] {len(records)} new templates ({kind}) to all {n} sidecars at once, one at a time")
            began = time.perf_counter()
            llm_marks = _llm_marks(sidecars)
            stream = streams[kind] = await _stream(stubs, records)
            questions = _llm_since(sidecars, llm_marks)
            after = _scrape(sidecars)
            delta = _delta(after, before)
            before = after
            stream.decisions = _tier_calls(delta, first_tier)
            stream.model_calls = sum(_tier_calls(delta, tier) for tier in MODEL_TIERS)
            stream.llm_questions, stream.llm_templates = len(questions), len(set(questions))
            stream.store = {k: delta.get(v, 0.0) for k, v in STORE_COUNTERS.items()}
            stage(
                f"[{name}]   {time.perf_counter() - began:.1f} s; model-tier decisions {stream.decisions:.0f} "
                f"(lane calls {stream.model_calls:.0f}) for {len(records)} templates; "
                + (f"LLM questions {stream.llm_questions} about {stream.llm_templates} templates; " if llm_on else "")
                + f"failed calls {sum(stream.failed.values())}"
            )

        marks["streams_end"] = time.perf_counter()
        llm_after_streams = sum(_llm_marks(sidecars))
        stage(f"[{name}] every template again on every sidecar")
        every = templates.all
        first_labels = await _labels(stubs, every)
        disagree = _disagreements(first_labels)
        stage(f"[{name}]   disagreements: {disagree} of {len(every)}")

        if store_url:
            k, timeout, give_up = args.corrections, args.propagation_timeout, args.give_up_after
        else:
            k, timeout, give_up = 1, BASELINE_PROPAGATION_TIMEOUT_S, 1
        k = min(k, len(templates.decided))
        stage(f"[{name}] {k} corrections to sidecar 0, each awaited on the others for up to {timeout:.0f} s")
        current = [row[0] for row in first_labels[:k]]
        propagation = await _propagate(stubs, admin, token, templates.decided[:k], current, labels, timeout, give_up)
        stage(
            f"[{name}]   propagated {len(propagation.seconds)}, never {propagation.never}, "
            f"not tried {propagation.not_tried}"
            + (
                f"; sidecar 0 did not answer {propagation.feedback_not_applied} of its own corrections"
                if propagation.feedback_not_applied
                else ""
            )
        )
        after_labels = await _labels(stubs, every)
        disagree_after = _disagreements(after_labels)
        marks["end"] = time.perf_counter()
        llm_total = sum(_llm_marks(sidecars))
        warm.stop()
        warm_rows = [warm.window(i, marks["start"], marks["streams_end"]) for i in range(n)]
        warm_whole = [warm.window(i, marks["start"], marks["end"]) for i in range(n)]
        warm = None
        stage(f"[{name}]   warm p99 ms per sidecar: " + ", ".join(str(w["p99_ms"]) for w in warm_rows))
        alive = [s.proc.poll() is None for s in sidecars]
        if not all(alive):
            raise RuntimeError(f"[{name}] a sidecar died during the run\n" + sidecars[alive.index(False)].log_tail())
    finally:
        if warm is not None:
            warm.stop()
        for c in channels:
            await c.close()
        for s in sidecars:
            s.stop()
        for llm in stubs_llm:
            if llm is not None:
                llm.stop()

    new_ms = [s * 1000 for r in streams.values() for s in r.latencies]
    sent = sum(r.templates for r in streams.values())
    llm_questions = sum(r.llm_questions for r in streams.values())
    llm_templates = sum(r.llm_templates for r in streams.values())
    return {
        "store_url": store_url,
        "sidecars": n,
        "llm": {"stub_latency_ms": args.llm_latency_ms} if llm_on else None,
        "streams": {
            kind: {
                "templates": r.templates,
                "decisions": r.decisions,
                "decisions_per_template": _per(r.decisions, r.templates),
                "model_calls": r.model_calls,
                "model_calls_per_template": _per(r.model_calls, r.templates),
                "llm_questions": r.llm_questions if llm_on else None,
                "llm_templates": r.llm_templates if llm_on else None,
                "llm_calls_per_template": _per(r.llm_questions, r.llm_templates) if llm_on else None,
                "p50_ms": round(float(np.percentile([s * 1000 for s in r.latencies], 50)), 2) if r.latencies else None,
                "p99_ms": round(float(np.percentile([s * 1000 for s in r.latencies], 99)), 2) if r.latencies else None,
                "failed_calls": dict(r.failed),
                "tiers_per_sidecar": [dict(t) for t in r.tiers],
                "store": r.store,
            }
            for kind, r in streams.items()
        },
        "decisions_per_template": _per(sum(r.decisions for r in streams.values()), sent),
        "model_calls_per_template": _per(sum(r.model_calls for r in streams.values()), sent),
        # Questions about the streams' templates over the templates the LLM was asked about.
        "llm_questions": llm_questions if llm_on else None,
        "llm_templates": llm_templates if llm_on else None,
        "llm_calls_per_template": _per(llm_questions, llm_templates) if llm_on else None,
        # Asked outside the streams: the sidecars' warm-up questions at start, and any asked while
        # every template was classified again and corrected (all should be answered by then).
        "llm_questions_before_streams": llm_before_streams if llm_on else None,
        "llm_questions_after_streams": llm_total - llm_after_streams if llm_on else None,
        "new_template_p50_ms": round(float(np.percentile(new_ms, 50)), 2) if new_ms else None,
        "new_template_p99_ms": round(float(np.percentile(new_ms, 99)), 2) if new_ms else None,
        "new_template_calls": len(new_ms),
        "failed_calls": sum(sum(r.failed.values()) for r in streams.values()),
        "warm": warm_rows,  # during the new-template streams
        "warm_whole_run": warm_whole,  # streams, labels again, corrections
        "disagreements": disagree,
        "disagreements_after_corrections": disagree_after,
        "templates": len(every),
        "propagation": propagation.summary(),
        "store": {k: sum(r.store.get(k, 0.0) for r in streams.values()) for k in STORE_COUNTERS},
    }


def _per(total: float, count: int) -> float | None:
    return round(total / count, 3) if count else None


# --- the report ----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{_fmt(a, digits)} / {_fmt(b, digits)}"


def _seconds(value: float | str | None) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.3f}"


def rows(result: dict[str, Any]) -> list[dict[str, str]]:
    store, alone = result["runs"]["store"], result["runs"]["no_store"]
    n = result["sidecars"]
    out: list[dict[str, str]] = []

    def row(metric: str, with_store: str, without: str, target: str = "-", passed: bool | None = None) -> None:
        verdict = "-" if passed is None else ("pass" if passed else "FAIL")
        out.append({"metric": metric, "store": with_store, "no_store": without, "target": target, "result": verdict})

    llm_on = store["llm"] is not None
    kinds = [k for k in STREAM_NAMES if k in store["streams"]]
    ratio = store["decisions_per_template"]
    row(
        f"model-tier decisions per new template ({store['templates']})",
        _fmt(ratio),
        _fmt(alone["decisions_per_template"]),
        f"<= {RATIO_TARGET} (alone {n})",
        ratio is not None and ratio <= RATIO_TARGET,
    )
    for kind in kinds:
        s, a = store["streams"][kind], alone["streams"][kind]
        value = s["decisions_per_template"]
        what = STREAM_NAMES[kind] if llm_on or kind != "undecided" else "no tier decides"
        row(
            f"  of which {what} ({s['templates']})",
            _fmt(value),
            _fmt(a["decisions_per_template"]),
            f"<= {RATIO_TARGET}",
            value is not None and value <= RATIO_TARGET,
        )
    if llm_on:
        ratio = store["llm_calls_per_template"]
        row(
            f"LLM calls per new template ({store['llm_templates']} asked)",
            _fmt(ratio),
            _fmt(alone["llm_calls_per_template"]),
            f"<= {RATIO_TARGET} (alone {n})",
            ratio is not None and ratio <= RATIO_TARGET,
        )
        for kind in kinds:
            s, a = store["streams"][kind], alone["streams"][kind]
            if kind == "decided" and not (s["llm_questions"] or a["llm_questions"]):
                continue  # the head decides them: no LLM asked, as it should be
            value = s["llm_calls_per_template"]
            row(
                f"  of which {STREAM_NAMES[kind]} ({s['llm_templates']} of {s['templates']} asked)",
                _fmt(value),
                _fmt(a["llm_calls_per_template"]),
                f"<= {RATIO_TARGET}",
                value is not None and value <= RATIO_TARGET,
            )
        row(
            "model-tier lane calls per new template (head + LLM)",
            _fmt(store["model_calls_per_template"]),
            _fmt(alone["model_calls_per_template"]),
        )
    row(
        "new-template call p50 / p99 ms",
        _pair(store["new_template_p50_ms"], store["new_template_p99_ms"]),
        _pair(alone["new_template_p50_ms"], alone["new_template_p99_ms"]),
    )
    for kind in kinds:
        s, a = store["streams"][kind], alone["streams"][kind]
        short = "escalated" if kind == "undecided" and llm_on else kind
        row(f"  {short} templates p50 / p99 ms", _pair(s["p50_ms"], s["p99_ms"]), _pair(a["p50_ms"], a["p99_ms"]))
    if None not in (store["new_template_p50_ms"], alone["new_template_p50_ms"]):
        row(
            "  added by the store p50 / p99 ms",
            _pair(
                store["new_template_p50_ms"] - alone["new_template_p50_ms"],
                store["new_template_p99_ms"] - alone["new_template_p99_ms"],
            ),
            "",
        )
    failed = store["failed_calls"], alone["failed_calls"]
    row("new-template calls failed", str(failed[0]), str(failed[1]), "0", failed == (0, 0))
    for i in range(n):
        s, a = store["warm"][i], alone["warm"][i]
        p99s = [s["p99_ms"], a["p99_ms"]]
        row(
            f"warm caller, sidecar {i}, p50 / p99 ms",
            _pair(s["p50_ms"], s["p99_ms"]),
            _pair(a["p50_ms"], a["p99_ms"]),
            f"p99 <= {WARM_P99_TARGET_MS:.0f}",
            all(p is not None and p <= WARM_P99_TARGET_MS for p in p99s) and s["failed"] == 0 and a["failed"] == 0,
        )
    row(
        "disagreements after the streams",
        str(store["disagreements"]),
        str(alone["disagreements"]),
        "0",
        store["disagreements"] == 0,
    )
    sp, ap = store["propagation"], alone["propagation"]
    row(
        f"correction propagation p50 / p99 s ({sp['tried']} tried)",
        f"{_seconds(sp['p50_s'])} / {_seconds(sp['p99_s'])}",
        "never (N/A)" if ap["never"] else f"{_seconds(ap['p50_s'])} / {_seconds(ap['p99_s'])}",
        f"p99 <= {PROPAGATION_P99_TARGET_S:.0f}",
        isinstance(sp["p99_s"], float) and sp["p99_s"] <= PROPAGATION_P99_TARGET_S and sp["not_tried"] == 0,
    )
    row(
        "  corrections never propagated",
        f"{sp['never']} of {sp['tried']}" + (f", {sp['not_tried']} not tried" if sp["not_tried"] else ""),
        f"{ap['never']} of {ap['tried']}",
        "0",
        sp["never"] == 0 and sp["not_tried"] == 0,
    )
    row(
        "disagreements after the corrections",
        str(store["disagreements_after_corrections"]),
        str(alone["disagreements_after_corrections"]),
        "0",
        store["disagreements_after_corrections"] == 0,
    )
    st = store["store"]
    row(
        "store lookups hit / miss (streams)",
        f"{st['lookups_hit']:.0f} / {st['lookups_miss']:.0f}",
        "-",
    )
    row("store claims won / held (streams)", f"{st['claims_won']:.0f} / {st['claims_held']:.0f}", "-")
    row(
        "store calls / failures / skipped (streams)",
        f"{st['calls']:.0f} / {st['failures']:.0f} / {st['skipped']:.0f}",
        "-",
    )
    return out


def print_report(result: dict[str, Any]) -> bool:
    table = result["rows"]
    llm = result["runs"]["store"]["llm"]
    llm_text = (
        "LLM off (the embedding tier is the model tier)"
        if llm is None
        else f"each sidecar its own LLM stub answering in {llm['stub_latency_ms']:g} ms"
    )
    print(
        f"One classifier per cluster: {result['sidecars']} sidecars on one redis-server against "
        f"{result['sidecars']} alone; {llm_text}; {result['sidecar']}"
    )
    widths = [max(len(r[k]) for r in [*table, HEADER]) for k in HEADER]
    for r in [HEADER, *table]:
        print("  ".join(r[k].ljust(w) if k == "metric" else r[k].rjust(w) for k, w in zip(HEADER, widths, strict=True)))
    missed = [r["metric"].strip() for r in table if r["result"] == "FAIL"]
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return not missed


# The streams' names in the table, by their key in the JSON.
STREAM_NAMES = {"decided": "the head decides", "undecided": "the head escalates", "routed": f"{LLM_SOURCE}, routed"}
HEADER = {"metric": "metric", "store": "with store", "no_store": "without store", "target": "target", "result": ""}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sidecars", type=int, default=3, help="sidecars in the cluster (default 3)")
    parser.add_argument("--templates", type=int, default=200, help="new templates the head decides (default 200)")
    parser.add_argument(
        "--undecided",
        type=int,
        default=50,
        help="new templates the head escalates: the LLM decides them; with --llm off no tier does (default 50)",
    )
    parser.add_argument(
        "--llm-routed",
        type=int,
        default=30,
        help=f"new {LLM_SOURCE} templates, routed straight to the LLM (default 30; none with --llm off)",
    )
    parser.add_argument(
        "--llm",
        choices=("on", "off"),
        default="on",
        help="on (default): each sidecar its own OpenAI-compatible LLM stub; off: LLM tier off",
    )
    parser.add_argument(
        "--llm-latency-ms", type=float, default=50.0, help="how long the LLM stub takes to answer (default 50)"
    )
    parser.add_argument("--corrections", type=int, default=20, help="templates corrected (default 20)")
    parser.add_argument(
        "--propagation-timeout", type=float, default=5.0, help="seconds a correction may take (default 5)"
    )
    parser.add_argument(
        "--give-up-after", type=int, default=3, help="corrections never propagated in a row before the rest are skipped"
    )
    parser.add_argument("--warm-records", type=int, default=20, help="known records per warm call (default 20)")
    parser.add_argument("--warm-interval-ms", type=float, default=25.0, help="a warm call this often (default 25)")
    parser.add_argument(
        "--store-timeout-ms", type=int, default=None, help="store.timeout_ms of the sidecars (default: theirs, 50)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated templates")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.sidecars < 2:
        parser.error("--sidecars must be at least 2")
    if not SEED_CSV.is_file():
        raise SystemExit(f"{SEED_CSV} is missing: run from a checkout")
    if shutil.which("redis-server") is None:
        raise SystemExit("no redis-server here: `make store-deps` installs it (Debian's redis-server)")

    if args.llm_routed < 0 or args.llm_latency_ms < 0:
        parser.error("--llm-routed and --llm-latency-ms must not be negative")
    routed = args.llm_routed if args.llm == "on" else 0
    stage(
        f"sorting new templates with an in-process engine: {args.templates} decided, {args.undecided} escalated, "
        f"{routed} {LLM_SOURCE}"
    )
    templates = make_templates(args.templates, args.undecided, routed, args.warm_records, args.seed)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="logclass-bench-cluster-") as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        stage(f"redis-server on {redis.url}")
        try:
            runs["store"] = asyncio.run(run_cluster("store", redis.url, templates, args))
        finally:
            redis.stop()
    runs["no_store"] = asyncio.run(run_cluster("no store", None, templates, args))
    result: dict[str, Any] = {
        # The checkout measured (another checkout: its sidecar/ first on PYTHONPATH), and how
        # busy the machine was.
        "sidecar": str(Path(logclass.__file__).resolve().parent),
        "load_average": os.getloadavg(),
        "sidecars": args.sidecars,
        "runs": runs,
    }
    result["rows"] = rows(result)
    ok = print_report(result)
    result["ok"] = ok
    return finish(result, ok, args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
