"""Known lines stay fast while the model lanes work: a warm caller against a cold burst and an
LLM trickle, measured in the same run against the raw batched encoder.

A real ``logclass serve`` is started on 127.0.0.1 and warmed with the seed set's lines. A warm
caller then sends 100-record requests of those lines every 50 ms (open loop: a slow answer does
not delay the next call) with a 5 s gRPC deadline, through three phases:

- ``alone``: nothing else runs;
- ``cold burst``: a second caller sends 500-record requests of never-seen templates with
  ``wait_for_all``, back to back (LLM off, so every template is one embedding);
- ``CSV upload``: the same sidecar's HTTP front end takes ``POST /classify`` uploads of
  never-seen templates (2,000 rows each), back to back: multipart parsing, the whole-file check
  and CSV writing share the event loop gRPC answers on;
- ``LLM trickle``: the sidecar restarted with the embedded LLM, and a third caller sending two new
  LegacyCRM lines per second (that source goes straight to the LLM) with the default budget.

Between the cold burst and the LLM phase, while no sidecar runs, this process times one batched
``Encoder.encode`` call on a fresh set of the same kind of new lines: the raw batched model, the
anchor for the cold burst's records/s. Both use the same configuration (``LOGCLASS_*`` included),
so the same device and encoder threads. The benchmark's callers share the machine's cores with the
sidecar, as a log shipper does with its sidecar.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import io
import os
import platform
import random
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
import numpy as np

from benchmarks import loadgen
from benchmarks.common import SEED_CSV, LogclassProcess, finish, free_port, stage, write_records_csv
from logclass import config
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.client import to_request
from logclass.core.decision import TIER_NONE, TIER_PENDING, LogRecord
from logclass.engine.pipeline import masker_of
from logclass.tiers.registry import build_encoder, build_regex_tier

WARM_P99_TARGET_MS = 50.0  # warm caller's p99 under a cold burst and under an LLM trickle
COLD_RATIO_TARGET = 0.9  # cold burst records/s against the raw batched encoder
# p99 of the warm caller before the rebuild into lanes (one shared batcher, no budgets).
BEFORE_P99_MS: dict[str, float | None] = {"alone": 8.0, "cold burst": 4700.0, "LLM trickle": 2000.0, "CSV upload": None}

DEADLINE_S = 5.0
WARM_RECORDS = 100
WARM_INTERVAL_S = 0.05
COLD_RECORDS = 500
UPLOAD_ROWS = 2000
COLD_TIMEOUT_S = 600.0  # a wait_for_all request of new templates on a slow CPU
TRICKLE_PER_S = 2.0
LLM_SOURCE = "LegacyCRM"  # router.source_routes sends it straight to the LLM
COLD_SOURCE = "BenchCold"
# Separate connections per caller: grpc shares subchannels between channels to one target.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
UNDECIDED = frozenset({TIER_PENDING, TIER_NONE})


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else 0.0


class Server(LogclassProcess):
    """A real ``logclass serve`` on loopback for the length of one or two phases."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        env = {**env, "LOGCLASS_SERVER__LISTEN": self.target, "LOGCLASS_SERVER__HTTP_LISTEN": self.http}
        super().__init__(["serve"], env, "LOGCLASS_SERVER__METRICS_LISTEN", name)

    async def wait_ready(self, timeout: float = 900.0) -> float:
        started = time.perf_counter()
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
            ready = asyncio.ensure_future(loadgen.wait_ready(stub, timeout))
            # A server that dies while loading would leave wait_for_ready waiting the whole timeout.
            while not ready.done():
                if self.proc.poll() is not None:
                    ready.cancel()
                    raise RuntimeError(f"the server exited with {self.proc.returncode}\n{self.log_tail()}")
                await asyncio.wait([ready], timeout=0.5)
            try:
                ready.result()
            except grpc.aio.AioRpcError as exc:
                raise RuntimeError(f"the server did not become ready: {exc.details()}\n{self.log_tail()}") from exc
        return time.perf_counter() - started

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}\n{self.log_tail()}")


class NewLines:
    """Never-seen lines, each of its own template: the masker turns digits into <NUM>, so lines
    differ in their words (from the seed set's vocabulary). Lines a regex rule would decide are
    skipped, so every line is a template for the model lanes."""

    def __init__(self, source: str, seed: int) -> None:
        settings = config.load()
        self.source = source
        self.masker = masker_of(settings.templates)
        self.regex = build_regex_tier(settings)
        self.rng = random.Random(seed)
        self.templates: set[str] = set()
        text = SEED_CSV.read_text(encoding="utf-8", errors="replace")
        hexlike = re.compile(r"[0-9a-fA-F]+")
        words = {w.lower() for w in re.findall(r"\b[A-Za-z]{3,12}\b", text)}
        self.words = sorted(w for w in words if not hexlike.fullmatch(w))

    def _message(self) -> str:
        w = self.rng.choice
        if self.source == LLM_SOURCE:  # the shape of the seed's LegacyCRM lines
            return (
                f"{w(self.words).capitalize()} {w(self.words)} for {w(self.words)} {w(self.words)} failed "
                f"because the {w(self.words)} {w(self.words)} is no longer {w(self.words)}."
            )
        n = self.rng.randint(6, 14)
        return " ".join(w(self.words) for _ in range(n)).capitalize()

    def take(self, n: int) -> list[LogRecord]:
        out: list[LogRecord] = []
        for _ in range(n * 100):  # bounded: collisions and regex matches are rare
            if len(out) == n:
                break
            record = LogRecord(self.source, self._message())
            template = self.masker.template(record.message)
            if template in self.templates or self.regex.decide_now(record) is not None:
                continue
            self.templates.add(template)
            out.append(record)
        if len(out) < n:
            raise RuntimeError(f"could only make {len(out)} of {n} new templates")
        return out


def seed_lines() -> list[LogRecord]:
    """The seed set's distinct lines, LegacyCRM left out (the warm caller never needs the LLM)."""
    seen: dict[tuple[str, str], None] = {}
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["source"] != LLM_SOURCE and row["log_message"].strip():
                seen[(row["source"], row["log_message"])] = None
    return [LogRecord(source, message) for source, message in seen]


async def paced(interval: float, stop: asyncio.Event, max_s: float) -> AsyncIterator[int]:
    """0, 1, 2, ... one every ``interval`` s on a fixed schedule (open loop), until ``stop`` or ``max_s``."""
    started = time.perf_counter()
    for n in range(int(max_s / interval) + 1):
        if stop.is_set():
            return
        yield n
        delay = started + (n + 1) * interval - time.perf_counter()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


async def classify_all(target: str, records: Sequence[LogRecord], **request: Any) -> list[Any]:
    """Every record through ``Classify`` in 500-record requests; the results in order."""
    out: list[Any] = []
    async with channel(target) as ch:
        stub = pb_grpc.LogClassifierStub(ch)  # type: ignore[no-untyped-call]
        for i in range(0, len(records), COLD_RECORDS):
            response = await stub.Classify(to_request(records[i : i + COLD_RECORDS], **request), timeout=COLD_TIMEOUT_S)
            out.extend(response.results)
    return out


async def warm_up(target: str, lines: Sequence[LogRecord]) -> tuple[list[LogRecord], Counter[str]]:
    """Fills the sidecar's caches with ``lines``; returns those a fast-path tier decided (not the
    fallback), which is the warm set, and the tiers that decided them."""
    results = await classify_all(target, lines, wait_for_all=True)
    tiers = Counter(r.tier for r in results)
    known = [line for line, r in zip(lines, results, strict=True) if r.tier not in UNDECIDED]
    # Known now means answered without waiting: a zero budget must find every one in a cache.
    again = await classify_all(target, known, budget_ms=0)
    slow = sum(1 for r in again if r.tier in UNDECIDED)
    if slow:
        raise RuntimeError(f"{slow} warm lines were not answered from the caches after the warm-up")
    return known, tiers


@dataclass
class WarmResult:
    latencies: list[float] = field(default_factory=list)  # seconds; a deadline miss counts as DEADLINE_S
    misses: int = 0  # DEADLINE_EXCEEDED, or an answer later than DEADLINE_S
    errors: Counter[str] = field(default_factory=Counter)  # other gRPC errors, by status code
    undecided: int = 0  # results with tier "pending" or "none": a known line not answered as known
    records: int = 0

    def row(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "calls": len(lat) + sum(self.errors.values()),
            "completed": len(lat) - self.misses,
            "p50_ms": percentile_ms(lat, 50),
            "p99_ms": percentile_ms(lat, 99),
            "max_ms": max(lat) * 1000 if lat else 0.0,
            "misses": self.misses,
            "errors": dict(self.errors),
            "undecided": self.undecided,
        }


async def warm_caller(target: str, lines: Sequence[LogRecord], stop: asyncio.Event, max_s: float) -> WarmResult:
    """A call every WARM_INTERVAL_S until ``stop`` is set (or ``max_s``), each awaited on its own."""
    requests = [to_request([lines[(i + k) % len(lines)] for k in range(WARM_RECORDS)]) for i in range(0, 10_000, 97)]
    result = WarmResult()

    async def one(stub: pb_grpc.LogClassifierStub, request: Any) -> None:
        started = time.perf_counter()
        try:
            response = await stub.Classify(request, timeout=DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                result.misses += 1
                result.latencies.append(max(DEADLINE_S, time.perf_counter() - started))
            else:
                result.errors[exc.code().name] += 1
            return
        seconds = time.perf_counter() - started
        result.latencies.append(seconds)
        result.misses += seconds > DEADLINE_S
        result.records += len(response.results)
        result.undecided += sum(1 for r in response.results if r.tier in UNDECIDED)

    async with channel(target) as ch:
        stub = pb_grpc.LogClassifierStub(ch)  # type: ignore[no-untyped-call]
        calls: list[asyncio.Task[None]] = []
        async for n in paced(WARM_INTERVAL_S, stop, max_s):
            calls.append(asyncio.ensure_future(one(stub, requests[n % len(requests)])))
        await asyncio.gather(*calls)
    return result


@dataclass
class ColdResult:
    records: int = 0
    requests: int = 0
    seconds: float = 0.0
    tiers: Counter[str] = field(default_factory=Counter)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def summary(self, unit: str, calls: str) -> dict[str, Any]:
        """The JSON part of this phase: ``unit`` counts what was classified, ``calls`` the requests."""
        return {
            unit: self.records,
            calls: self.requests,
            "seconds": self.seconds,
            f"{unit}_per_s": self.records_per_second,
            "tiers": dict(self.tiers),
        }


async def cold_caller(target: str, lines: NewLines, seconds: float) -> ColdResult:
    """500-record requests of new templates with wait_for_all, back to back, for ``seconds``."""
    result = ColdResult()
    async with channel(target) as ch:
        stub = pb_grpc.LogClassifierStub(ch)  # type: ignore[no-untyped-call]
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            request = to_request(lines.take(COLD_RECORDS), wait_for_all=True)
            response = await stub.Classify(request, timeout=COLD_TIMEOUT_S)
            result.records += len(response.results)
            result.requests += 1
            result.tiers.update(r.tier for r in response.results)
            result.seconds = time.perf_counter() - started
    return result


def _csv(records: Sequence[LogRecord]) -> bytes:
    out = io.StringIO()
    write_records_csv(out, records)
    return out.getvalue().encode()


async def upload_caller(http: str, lines: NewLines, seconds: float) -> ColdResult:
    """POST /classify of UPLOAD_ROWS new templates at a time, back to back, for ``seconds``."""
    result = ColdResult()
    async with httpx.AsyncClient(base_url=f"http://{http}", timeout=COLD_TIMEOUT_S) as client:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            body = _csv(lines.take(UPLOAD_ROWS))
            response = await client.post("/classify", files={"file": ("new.csv", body, "text/csv")})
            response.raise_for_status()
            rows = list(csv.DictReader(io.StringIO(response.text)))
            result.records += len(rows)
            result.requests += 1
            result.tiers.update(row["tier"] for row in rows)
            result.seconds = time.perf_counter() - started
    return result


@dataclass
class TrickleResult:
    sent: int = 0
    answered_inline: int = 0  # the LLM's answer came back within the request's own budget
    landed: int = 0  # LLM answers in the cache by the end of the phase
    errors: Counter[str] = field(default_factory=Counter)
    lines: list[LogRecord] = field(default_factory=list)


async def trickle_caller(target: str, lines: NewLines, stop: asyncio.Event, max_s: float) -> TrickleResult:
    """One new LegacyCRM line every 1/TRICKLE_PER_S s, default budget, 5 s deadline."""
    result = TrickleResult()

    async def one(stub: pb_grpc.LogClassifierStub, record: LogRecord) -> None:
        try:
            response = await stub.Classify(to_request([record]), timeout=DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            result.errors[exc.code().name] += 1
            return
        result.answered_inline += sum(1 for r in response.results if r.tier == "llm")

    async with channel(target) as ch:
        stub = pb_grpc.LogClassifierStub(ch)  # type: ignore[no-untyped-call]
        calls: list[asyncio.Task[None]] = []
        async for _ in paced(1.0 / TRICKLE_PER_S, stop, max_s):
            record = lines.take(1)[0]
            result.lines.append(record)
            result.sent += 1
            calls.append(asyncio.ensure_future(one(stub, record)))
        await asyncio.gather(*calls)
    return result


async def timed(seconds: float) -> asyncio.Event:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    return stop


async def phase_alone(target: str, warm: Sequence[LogRecord], seconds: float) -> WarmResult:
    stop = await timed(seconds)
    return await warm_caller(target, warm, stop, seconds)


async def phase_cold(
    target: str, warm: Sequence[LogRecord], load: Awaitable[ColdResult], seconds: float
) -> tuple[WarmResult, ColdResult]:
    """The warm caller runs until the load's last request is answered."""
    stop = asyncio.Event()
    warm_task = asyncio.ensure_future(warm_caller(target, warm, stop, seconds + COLD_TIMEOUT_S))
    try:
        cold = await load
    finally:
        stop.set()
    return await warm_task, cold


async def phase_trickle(
    target: str, warm: Sequence[LogRecord], llm_lines: NewLines, seconds: float
) -> tuple[WarmResult, TrickleResult]:
    stop = await timed(seconds)
    warm_result, trickle = await asyncio.gather(
        warm_caller(target, warm, stop, seconds), trickle_caller(target, llm_lines, stop, seconds)
    )
    # A zero budget never waits: LLM answers already in the cache come back with tier "llm".
    results = await classify_all(target, trickle.lines, budget_ms=0)
    trickle.landed = sum(1 for r in results if r.tier == "llm")
    return warm_result, trickle


def raw_encode(lines: NewLines, n: int) -> dict[str, Any]:
    """One batched ``Encoder.encode`` on ``n`` new lines, in this process, no sidecar running."""
    settings = config.load()
    encoder = build_encoder(settings.embedding)
    encoder.encode(["warm up the encoder once before timing"] * 8)
    texts = [r.message for r in lines.take(n)]
    started = time.perf_counter()
    encoder.encode(texts)
    seconds = time.perf_counter() - started
    out = {
        "messages": n,
        "seconds": seconds,
        "msgs_per_s": n / seconds,
        "device": encoder.device,
        "threads": encoder.threads,
        "batch_size": encoder.batch_size,
    }
    del encoder
    gc.collect()
    return out


def warm_line(name: str, row: dict[str, Any]) -> None:
    stage(
        f"  {name}: {row['calls']} calls, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
        f"max {row['max_ms']:.1f} ms, {row['misses']} deadline misses, {row['undecided']} undecided"
    )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    base_env = {"LOGCLASS_LLM__BACKEND": "none"}
    seeds = seed_lines()
    cold_lines = NewLines(COLD_SOURCE, args.seed)
    rows: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_start": os.getloadavg()[0]},
        "settings": {
            "seconds": args.seconds,
            "warm_records": WARM_RECORDS,
            "warm_interval_ms": WARM_INTERVAL_S * 1000,
            "deadline_s": DEADLINE_S,
            "cold_records": COLD_RECORDS,
            "trickle_per_s": TRICKLE_PER_S,
        },
        "rows": rows,
    }

    stage("starting logclass serve on loopback, LLM off")
    server = Server(base_env, "lanes")
    try:
        out["startup_s"] = await server.wait_ready()
        stage(f"  ready after {out['startup_s']:.1f} s; warming with {len(seeds):,} distinct seed lines")
        warm, tiers = await warm_up(server.target, seeds)
        out["warm_lines"] = len(warm)
        out["warm_up_tiers"] = dict(tiers)
        stage(f"  {len(warm):,} lines known (decided by {dict(tiers)}; lines the fallback took are left out)")

        stage(f"phase alone: {args.seconds:g} s")
        rows["alone"] = (await phase_alone(server.target, warm, args.seconds)).row()
        warm_line("alone", rows["alone"])
        server.check_alive()

        stage(f"phase cold burst: {args.seconds:g} s of {COLD_RECORDS}-record wait_for_all requests")
        warm_result, cold = await phase_cold(
            server.target, warm, cold_caller(server.target, cold_lines, args.seconds), args.seconds
        )
        rows["cold burst"] = warm_result.row()
        warm_line("cold burst", rows["cold burst"])
        out["cold"] = cold.summary("records", "requests")
        stage(f"  cold: {cold.records:,} records in {cold.seconds:.1f} s, {cold.records_per_second:,.0f} rec/s")
        server.check_alive()

        stage(f"phase CSV upload: {args.seconds:g} s of {UPLOAD_ROWS}-row uploads of new templates over HTTP")
        upload_lines = NewLines(COLD_SOURCE, args.seed + 2)
        warm_result, uploads = await phase_cold(
            server.target, warm, upload_caller(server.http, upload_lines, args.seconds), args.seconds
        )
        rows["CSV upload"] = warm_result.row()
        warm_line("CSV upload", rows["CSV upload"])
        out["upload"] = uploads.summary("rows", "uploads")
        stage(
            f"  uploads: {uploads.records:,} rows in {uploads.seconds:.1f} s, {uploads.records_per_second:,.0f} rows/s"
        )
        server.check_alive()
        out["server_peak_rss_mb"] = server.peak_rss_mb()
    finally:
        server.stop()

    n = args.raw_sample or cold.records
    stage(f"raw batched encode of {n:,} new lines in this process (no sidecar running)")
    out["raw"] = raw_encode(cold_lines, n)
    stage(f"  {out['raw']['msgs_per_s']:,.0f} msgs/s")

    if args.no_llm:
        out["machine"]["load_end"] = os.getloadavg()[0]
        return out
    llm_env = {"LOGCLASS_LLM__BACKEND": "llamacpp"}
    if args.llm_model:
        llm_env["LOGCLASS_LLM__LLAMACPP__MODEL"] = args.llm_model
    stage(f"restarting logclass serve with the embedded LLM ({args.llm_model or 'default model'})")
    server = Server(llm_env, "lanes-llm")
    try:
        out["llm_startup_s"] = await server.wait_ready()
        stage(f"  ready after {out['llm_startup_s']:.1f} s; warming with the same lines")
        await warm_up(server.target, warm)
        stage(f"phase LLM trickle: {args.seconds:g} s, {TRICKLE_PER_S:g} new {LLM_SOURCE} lines/s")
        warm_result, trickle = await phase_trickle(
            server.target, warm, NewLines(LLM_SOURCE, args.seed + 1), args.seconds
        )
        rows["LLM trickle"] = warm_result.row()
        warm_line("LLM trickle", rows["LLM trickle"])
        out["trickle"] = {
            "sent": trickle.sent,
            "answered_inline": trickle.answered_inline,
            "landed": trickle.landed,
            "errors": dict(trickle.errors),
            "model": args.llm_model or "default",
        }
        stage(f"  LLM: {trickle.landed} of {trickle.sent} answers landed ({trickle.answered_inline} within budget)")
        server.check_alive()
        out["llm_server_peak_rss_mb"] = server.peak_rss_mb()
    finally:
        server.stop()
    out["machine"]["load_end"] = os.getloadavg()[0]
    return out


def _before(name: str) -> str:
    before = BEFORE_P99_MS.get(name)
    return "-" if before is None else f"{before:,.0f} ms"


def report(result: dict[str, Any]) -> bool:
    m, s, rows = result["machine"], result["settings"], result["rows"]
    raw, cold = result["raw"], result["cold"]
    print(
        f"machine: {m['cpus']} CPUs (1-min load average {m['load_start']:.1f} at the start, {m['load_end']:.1f} at "
        f"the end), Python {m['python']}, embedding on {raw['device']} "
        f"({raw['threads']} intra-op threads, batch {raw['batch_size']}); {s['seconds']:g} s per phase; warm caller: "
        f"{s['warm_records']} known records every {s['warm_interval_ms']:g} ms, {s['deadline_s']:g} s deadline; "
        f"{result['warm_lines']:,} known lines\n"
    )
    print(
        f"{'warm caller':<14}{'calls':>7}{'done':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'misses':>8}"
        f"{'undecided':>11}{'errors':>8}{'p99 before':>12}"
    )
    for name, r in rows.items():
        print(
            f"{name:<14}{r['calls']:>7}{r['completed']:>7}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}"
            f"{r['misses']:>8}{r['undecided']:>11}{sum(r['errors'].values()):>8}{_before(name):>12}"
        )
    ratio = cold["records_per_s"] / raw["msgs_per_s"] if raw["msgs_per_s"] else 0.0
    print(
        f"\ncold burst: {cold['records']:,} new templates in {cold['requests']} requests, "
        f"{cold['records_per_s']:,.0f} rec/s (tiers {cold['tiers']})"
    )
    print(f"raw batched encode: {raw['messages']:,} new lines, {raw['msgs_per_s']:,.0f} msgs/s (server not running)")
    print(f"cold / raw: {ratio:.2f}")
    upload = result["upload"]
    print(
        f"CSV upload: {upload['rows']:,} new templates in {upload['uploads']} uploads, "
        f"{upload['rows_per_s']:,.0f} rows/s (tiers {upload['tiers']})"
    )
    trickle = result.get("trickle")
    if trickle is not None:
        print(
            f"LLM trickle ({trickle['model']}): {trickle['sent']} {LLM_SOURCE} lines sent, {trickle['landed']} LLM "
            f"answers landed by the end ({trickle['answered_inline']} within their request's budget)"
        )
    rss = f"server peak RSS: {result['server_peak_rss_mb']:,.0f} MB"
    if "llm_server_peak_rss_mb" in result:
        rss += f", with the LLM {result['llm_server_peak_rss_mb']:,.0f} MB"
    print(rss)

    checks: list[tuple[str, bool | None]] = []
    for name in ("cold burst", "CSV upload", "LLM trickle"):
        r = rows.get(name)
        ok = None if r is None else r["p99_ms"] <= WARM_P99_TARGET_MS
        checks.append((f"{name}: warm p99 <= {WARM_P99_TARGET_MS:g} ms", ok))
        ok = None if r is None else r["misses"] == 0 and not r["errors"]
        checks.append((f"{name}: zero warm deadline misses (and errors)", ok))
    checks.append((f"cold burst >= {COLD_RATIO_TARGET:.0%} of raw batched encode", ratio >= COLD_RATIO_TARGET))
    print()
    for text, passed in checks:
        print(f"{'SKIP' if passed is None else 'PASS' if passed else 'FAIL'}  {text}")
    return all(passed is not False for _, passed in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    parser.add_argument(
        "--raw-sample", type=int, default=2000, help="new lines for the raw batched encode (0: as many as the burst)"
    )
    parser.add_argument("--no-llm", action="store_true", help="skip the LLM trickle phase")
    parser.add_argument(
        "--llm-model", default=None, help="llm.llamacpp.model for the LLM phase, e.g. smollm2-135m (default: config)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated new lines")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    return finish(result, report(result), args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
