"""The HTTP front end against gRPC and the in-process CSV job, measured in the same run.

Two parts, each against a real ``logclass serve`` started here on loopback with gRPC and HTTP
(LLM off, an inline budget long enough that every request waits for its answers):

- **JSON against gRPC**: the benchmark mix in 1,000- and 100-record requests from N concurrent
  callers, unary ``Classify`` over one gRPC channel against ``POST /v1/classify`` (the proto3
  JSON of the same requests, ``waitForAll``) over one keep-alive httpx AsyncClient. Each cold pass
  runs on a fresh server (gRPC on the first, HTTP on the second); the warm passes then alternate
  gRPC and HTTP on the second server, ``--rounds`` times, the best round of each counting.
- **CSV upload against ``logclass classify``**: the mix repeated to about ``--csv-rows`` rows in
  one CSV; ``logclass classify IN -o OUT`` as a subprocess (spawn to exit, so its own process
  start and model load are in; its summary line gives the classification phase alone), then
  ``POST /classify`` of the same file to a third fresh server, cold then warm (a second upload),
  time to first byte included; every output is compared byte for byte with the CLI's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The comparison is between front ends over regex + embeddings; an embedded LLM would dominate
# every cold figure (and take ~1.5 GB). Set LOGCLASS_LLM__BACKEND yourself to measure with one.
os.environ.setdefault("LOGCLASS_LLM__BACKEND", "none")
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
from google.protobuf import json_format

from benchmarks import loadgen
from benchmarks.common import LogclassProcess, finish, free_port, stage, write_records_csv
from benchmarks.loadgen import LoadResult
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.core.decision import LogRecord

JSON_TARGET = 0.5  # warm HTTP JSON records/s / gRPC, 1,000-record requests
# Cold CSV upload rows/s / the `logclass classify` process's: both start from empty caches (a
# warm upload answers from the server's caches, which the CLI process never has).
CSV_TARGET = 0.8
TIMEOUT_S = 600.0
# Its rate, not its seconds: the seconds are printed to 0.1 s, the rate from the unrounded time.
SUMMARY = re.compile(r"^(\d+) rows in [\d.]+s \(([\d,]+) rows/s\)", re.MULTILINE)


class Server(LogclassProcess):
    """A real `logclass serve` with gRPC, HTTP and metrics on loopback ports of its own."""

    def __init__(self, name: str) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        self.base_url = f"http://127.0.0.1:{free_port()}"
        env = {
            "LOGCLASS_SERVER__LISTEN": self.target,
            # Cold passes must wait for their answers, as waitForAll and the CSV upload do anyway:
            # with the default 250 ms a cold gRPC pass would answer "pending" and be no cold pass.
            "LOGCLASS_SERVER__INLINE_BUDGET_MS": "600000",
        }
        args = ["serve", "--http-listen", self.base_url.removeprefix("http://")]
        super().__init__(args, env, "LOGCLASS_SERVER__METRICS_LISTEN", name)
        self.startup_s = 0.0

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until /readyz answers 200, which it does once gRPC health says SERVING."""
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200:
                    self.startup_s = time.perf_counter() - started
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s\n{self.log_tail()}")


def start_server(name: str) -> Server:
    stage(f"starting logclass serve ({name}) with gRPC and HTTP on loopback")
    server = Server(name)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    stage(f"  ready after {server.startup_s:.1f} s")
    return server


# --- JSON against gRPC -------------------------------------------------------------------------


def requests_of(records: Sequence[LogRecord], size: int) -> list[Any]:
    """ClassifyRequests with an id per record, so both front ends carry and answer the same fields."""
    out = []
    for start in range(0, len(records), size):
        chunk = records[start : start + size]
        recs = [pb.LogRecord(id=str(start + i), source=r.source, message=r.message) for i, r in enumerate(chunk)]
        out.append(pb.ClassifyRequest(records=recs, wait_for_all=True))
    return out


def json_bodies(requests: Sequence[Any]) -> list[bytes]:
    """The proto3 JSON of each request, serialised before the clock starts, as gRPC's are."""
    return [json.dumps(json_format.MessageToDict(r), separators=(",", ":")).encode() for r in requests]


async def closed_loop(calls: Sequence[Callable[[], Awaitable[None]]], callers: int) -> tuple[float, list[float]]:
    """``callers`` workers, each sending its next call once the previous one is answered."""
    pending = iter(calls)
    latencies: list[float] = []

    async def worker() -> None:
        for call in pending:  # one shared iterator: each call is taken by exactly one worker
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(callers)))
    return time.perf_counter() - started, latencies


def _check(ids: Sequence[str], request: Any) -> None:
    sent = [r.id for r in request.records]
    if list(ids) != sent:
        raise RuntimeError(f"answered {len(ids)} results for {len(sent)} records, or in another order")


async def grpc_pass(target: str, requests: Sequence[Any], callers: int) -> LoadResult:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
        await loadgen.wait_ready(stub, TIMEOUT_S)

        def call(request: Any) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                response = await stub.Classify(request, timeout=TIMEOUT_S)
                _check([r.id for r in response.results], request)

            return send

        seconds, latencies = await closed_loop([call(r) for r in requests], callers)
    return LoadResult(sum(len(r.records) for r in requests), seconds, latencies)


async def http_pass(base_url: str, requests: Sequence[Any], bodies: Sequence[bytes], callers: int) -> LoadResult:
    limits = httpx.Limits(max_connections=callers, max_keepalive_connections=callers)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S, limits=limits) as client:

        def call(request: Any, body: bytes) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                response = await client.post("/v1/classify", content=body, headers=headers)
                response.raise_for_status()
                _check([r.get("id", "") for r in response.json()["results"]], request)

            return send

        calls = [call(r, b) for r, b in zip(requests, bodies, strict=True)]
        seconds, latencies = await closed_loop(calls, callers)
    return LoadResult(sum(len(r.records) for r in requests), seconds, latencies)


def _row(grpc_result: LoadResult, http_result: LoadResult) -> dict[str, float]:
    g, h = grpc_result.records_per_second, http_result.records_per_second
    return {
        "grpc_rps": g,
        "grpc_p50_ms": grpc_result.percentile(50),
        "grpc_p99_ms": grpc_result.percentile(99),
        "http_rps": h,
        "http_p50_ms": http_result.percentile(50),
        "http_p99_ms": http_result.percentile(99),
        "ratio": h / g if g else 0.0,
    }


def measure_json(records: Sequence[LogRecord], sizes: Sequence[int], callers: int, rounds: int) -> dict[str, Any]:
    """Cold on a fresh server each (first size only: later sizes find the caches full); warm
    alternated on the second server, best round of each side."""
    plans = {size: requests_of(records, size) for size in sizes}
    bodies = {size: json_bodies(plans[size]) for size in sizes}
    first = sizes[0]
    server = start_server("grpc-cold")
    try:
        grpc_cold = asyncio.run(grpc_pass(server.target, plans[first], callers))
        stage("  " + grpc_cold.line(f"gRPC cold, {first}-record requests"))
        startups = [server.startup_s]
    finally:
        server.stop()
    server = start_server("http")
    try:
        startups.append(server.startup_s)
        http_cold = asyncio.run(http_pass(server.base_url, plans[first], bodies[first], callers))
        stage("  " + http_cold.line(f"HTTP cold, {first}-record requests"))
        rows = {f"cold {first}-record requests": _row(grpc_cold, http_cold)}
        for size in sizes:
            best_grpc: LoadResult | None = None
            best_http: LoadResult | None = None
            for n in range(rounds):
                g = asyncio.run(grpc_pass(server.target, plans[size], callers))
                h = asyncio.run(http_pass(server.base_url, plans[size], bodies[size], callers))
                stage("  " + g.line(f"gRPC warm {n + 1}, {size}-record requests"))
                stage("  " + h.line(f"HTTP warm {n + 1}, {size}-record requests"))
                if best_grpc is None or g.records_per_second > best_grpc.records_per_second:
                    best_grpc = g
                if best_http is None or h.records_per_second > best_http.records_per_second:
                    best_http = h
            assert best_grpc is not None and best_http is not None
            rows[f"warm {size}-record requests"] = _row(best_grpc, best_http)
    finally:
        server.stop()
    return {"rows": rows, "server_startup_s": startups}


# --- CSV upload against `logclass classify` ----------------------------------------------------


def write_csv(records: Sequence[LogRecord], rows: int, path: Path) -> int:
    """The mix repeated whole until it reaches ``rows`` (at least once): later copies are repeats,
    as in real logs, so a cold job is cold for its first copy only."""
    repeats = max(1, math.ceil(rows / len(records)))
    with path.open("w", encoding="utf-8", newline="") as fh:
        write_records_csv(fh, records, repeats)
    return repeats * len(records)


@dataclass
class CliRun:
    rows: int
    wall_s: float
    classify_s: float  # the summary line's: reading, classifying and writing, no start or load


def run_cli(in_path: Path, out_path: Path) -> CliRun:
    cmd = [sys.executable, "-m", "logclass.cli", "classify", str(in_path), "-o", str(out_path), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"logclass classify exited with {proc.returncode}\n{proc.stderr[-3000:]}")
    found = SUMMARY.search(proc.stderr)
    if not found:
        raise RuntimeError(f"no summary line in logclass classify's stderr\n{proc.stderr[-3000:]}")
    rows, rate = int(found.group(1)), float(found.group(2).replace(",", ""))
    return CliRun(rows, wall, rows / rate if rate else 0.0)


@dataclass
class Upload:
    rows: int
    wall_s: float
    ttfb_s: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0


async def upload(base_url: str, data: bytes, out_path: Path) -> Upload:
    """One POST /classify, its answer streamed to ``out_path`` as it comes."""
    files = {"file": ("mix.csv", data, "text/csv")}
    first_byte = 0.0
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S) as client:
        started = time.perf_counter()
        async with client.stream("POST", "/classify", files=files) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"POST /classify answered {response.status_code}: {response.text[:500]}")
            with out_path.open("wb") as out:
                async for chunk in response.aiter_raw():
                    if not first_byte:
                        first_byte = time.perf_counter() - started
                    out.write(chunk)
        wall = time.perf_counter() - started
    return Upload(int(response.headers.get("x-logclass-rows", "0")), wall, first_byte)


def first_difference(a: Path, b: Path) -> str:
    """Where two outputs part: identical, or the first line that differs."""
    left, right = a.read_bytes(), b.read_bytes()
    if left == right:
        return ""
    for n, (x, y) in enumerate(zip(left.splitlines(), right.splitlines(), strict=False), start=1):
        if x != y:
            return f"line {n}: {x[:120]!r} != {y[:120]!r}"
    return f"one is a prefix of the other ({len(left):,} against {len(right):,} bytes)"


def measure_csv(records: Sequence[LogRecord], rows: int, work: Path) -> dict[str, Any]:
    in_path = work / "mix.csv"
    total = write_csv(records, rows, in_path)
    stage(f"CSV: {total:,} rows ({in_path.stat().st_size / 1e6:.1f} MB); `logclass classify` as a subprocess")
    cli_out = work / "cli.csv"
    cli = run_cli(in_path, cli_out)
    stage(f"  {cli.rows:,} rows in {cli.wall_s:.1f} s spawn to exit, {cli.classify_s:.1f} s classifying")
    data = in_path.read_bytes()
    server = start_server("csv")
    uploads: dict[str, Upload] = {}
    differences: dict[str, str] = {}
    try:
        for label in ("cold", "warm"):
            out = work / f"upload-{label}.csv"
            uploads[label] = result = asyncio.run(upload(server.base_url, data, out))
            differences[label] = first_difference(cli_out, out)
            stage(
                f"  upload {label}: {result.rows:,} rows in {result.wall_s:.1f} s, first byte after "
                f"{result.ttfb_s:.2f} s; {'identical' if not differences[label] else differences[label]}"
            )
        startup = server.startup_s
    finally:
        server.stop()
    cli_rps = cli.rows / cli.wall_s
    classify_rps = cli.rows / cli.classify_s if cli.classify_s else 0.0
    return {
        "rows": total,
        "repeats": total // len(records),
        "bytes": len(data),
        "server_startup_s": startup,
        "cli": {
            "wall_s": cli.wall_s,
            "rows_per_s": cli_rps,
            "classify_s": cli.classify_s,
            "classify_rps": classify_rps,
        },
        "uploads": {
            label: {
                "wall_s": u.wall_s,
                "ttfb_s": u.ttfb_s,
                "rows_per_s": u.rows_per_second,
                "vs_cli": u.rows_per_second / cli_rps,
                "vs_cli_classify": u.rows_per_second / classify_rps if classify_rps else 0.0,
                "identical": not differences[label],
                "difference": differences[label],
            }
            for label, u in uploads.items()
        },
    }


# --- report ------------------------------------------------------------------------------------


def measure(
    records: Sequence[LogRecord], sizes: Sequence[int], callers: int, rounds: int, csv_rows: int
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    json_part = measure_json(records, sizes, callers, rounds)
    with tempfile.TemporaryDirectory(prefix="logclass-bench-http-") as work:
        csv_part = measure_csv(records, csv_rows, Path(work))
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": {"start": load_before, "end": os.getloadavg()[0]},
        "settings": {"records": len(records), "request_sizes": list(sizes), "callers": callers, "rounds": rounds},
        "json": json_part,
        "csv": csv_part,
    }


def checks(result: dict[str, Any]) -> list[tuple[str, bool]]:
    out = []
    warm = result["json"]["rows"].get("warm 1000-record requests")
    if warm is not None:
        out.append((f"warm 1000-record requests: HTTP JSON >= {JSON_TARGET}x gRPC", warm["ratio"] >= JSON_TARGET))
    uploads = result["csv"]["uploads"]
    vs_cli = uploads["cold"]["vs_cli"]
    out.append((f"cold CSV upload >= {CSV_TARGET}x the `logclass classify` process's rows/s", vs_cli >= CSV_TARGET))
    identical = all(u["identical"] for u in uploads.values())
    out.append(("CSV upload outputs byte-identical to `logclass classify`'s", identical))
    return out


def report(result: dict[str, Any]) -> bool:
    m, s, j, c = result["machine"], result["settings"], result["json"], result["csv"]
    load = result["load_average"]
    print(
        f"machine: {m['cpus']} CPUs, Python {m['python']}, load average {load['start']:.1f} -> {load['end']:.1f}; "
        f"{s['records']:,} records (seed set + Loghub), {s['callers']} concurrent callers; servers ready in "
        + ", ".join(f"{x:.1f}" for x in [*j["server_startup_s"], c["server_startup_s"]])
        + " s\n"
    )
    print(f"JSON vs gRPC (cold: a fresh server each; warm: alternated on one server, best of {s['rounds']})")
    print(f"{'':<28}{'gRPC Classify':>28}{'POST /v1/classify':>28}{'HTTP /':>9}")
    print(f"{'':<28}{'rec/s':>12}{'p50 ms':>8}{'p99 ms':>8}{'rec/s':>12}{'p50 ms':>8}{'p99 ms':>8}{'gRPC':>9}")
    for name, r in j["rows"].items():
        print(
            f"{name:<28}{r['grpc_rps']:>12,.0f}{r['grpc_p50_ms']:>8.1f}{r['grpc_p99_ms']:>8.1f}"
            f"{r['http_rps']:>12,.0f}{r['http_p50_ms']:>8.1f}{r['http_p99_ms']:>8.1f}{r['ratio']:>9.2f}"
        )
    cli = c["cli"]
    size = f"{c['rows']:,} rows, the mix x{c['repeats']}, {c['bytes'] / 1e6:.1f} MB"
    print(f"\nCSV upload vs `logclass classify` ({size})")
    print(f"{'':<38}{'rows/s':>10}{'wall s':>8}{'TTFB s':>8}{'/ CLI':>7}{'/ CLI cls':>10}  identical")
    print(f"{'logclass classify, spawn to exit':<38}{cli['rows_per_s']:>10,.0f}{cli['wall_s']:>8.1f}{'':>8}{1:>7.2f}")
    print(f"{'logclass classify, classify phase':<38}{cli['classify_rps']:>10,.0f}{cli['classify_s']:>8.1f}")
    for label, u in c["uploads"].items():
        print(
            f"{'POST /classify, ' + label:<38}{u['rows_per_s']:>10,.0f}{u['wall_s']:>8.1f}{u['ttfb_s']:>8.2f}"
            f"{u['vs_cli']:>7.2f}{u['vs_cli_classify']:>10.2f}  {'yes' if u['identical'] else 'NO: ' + u['difference']}"
        )
    results = checks(result)
    result["targets"] = {text: ok for text, ok in results}
    print()
    for text, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers per front end")
    parser.add_argument("--request-sizes", default="1000,100", help="records per request, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds per front end and size (best counts)")
    parser.add_argument("--csv-rows", type=int, default=100_000, help="the CSV repeats the mix to at least this")
    parser.add_argument("--records", type=int, default=0, help="use only the first N records of the mix (0: all)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    records = loadgen.bench_records(args.records)
    sizes = [int(x) for x in args.request_sizes.split(",")]
    result = measure(records, sizes, args.callers, max(1, args.rounds), args.csv_rows)
    ok = report(result)
    return finish(result, ok, args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
