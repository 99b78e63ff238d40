"""The gRPC sidecar against the in-process pipeline, measured in the same run.

Replays the benchmark mix (seed set + Loghub) twice: first through the router in this process,
in batches of each request size (the baseline: no network, no protobuf), then through a real
``logclass serve`` started here on 127.0.0.1, over N concurrent ClassifyStream callers. Cold
passes start from empty caches; warm passes repeat the same records. Prints records/s, request
latency p50/p99, the gRPC/in-process ratio, per-tier latency from the server's own metrics and
the server's peak RSS. Both sides read the same configuration (LOGCLASS_* environment included),
so the embedding device is the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The targets are about the gRPC layer over regex + embeddings, and the RSS target excludes an
# embedded LLM (Qwen alone is ~1.5 GB): without this the default config would load it. Set
# LOGCLASS_LLM__BACKEND yourself to measure with one.
os.environ.setdefault("LOGCLASS_LLM__BACKEND", "none")
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import loadgen
from benchmarks.common import LogclassProcess, finish, free_port, stage
from benchmarks.loadgen import LoadResult
from logclass import config
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.core.bundle import load_bundle
from logclass.core.decision import LogRecord
from logclass.engine.blocking import BlockingEngine
from logclass.engine.pipeline import build_engine, bundle_path
from logclass.tiers.registry import build_encoder

WARM_TARGET = 40_000.0  # records/s through gRPC, warm, 1,000-record requests
RATIO_TARGET = 0.8  # gRPC throughput / in-process: the gRPC layer costs at most 20 %
RSS_TARGET_MB = 1536.0  # server peak RSS without an embedded LLM


def in_process(records: Sequence[LogRecord], sizes: Sequence[int]) -> tuple[dict[str, LoadResult], str]:
    """The baseline: the server's own engine, called directly with one batch per request and
    waiting for every answer (the server started here does too: see ``Server``)."""
    settings = config.load()
    bundle = load_bundle(bundle_path(settings))
    encoder = build_encoder(settings.embedding)
    engine = BlockingEngine(build_engine(settings, bundle=bundle, encoder=encoder))
    try:
        # As the server does before it reports SERVING: the first encode pays one-off costs.
        engine.warm_up()
        results: dict[str, LoadResult] = {}
        for n, size in enumerate(sizes):
            for label in ("cold", "warm") if n == 0 else ("warm",):
                latencies = []
                started = time.perf_counter()
                for i in range(0, len(records), size):
                    t = time.perf_counter()
                    engine.classify(records[i : i + size])
                    latencies.append(time.perf_counter() - t)
                result = LoadResult(len(records), time.perf_counter() - started, latencies)
                results[f"{label} {size}-record requests"] = result
                stage("  " + result.line(f"in-process {label}, {size}-record batches"))
    finally:
        engine.close()
    return results, encoder.device


class Server(LogclassProcess):
    """A real `logclass serve` on loopback, with its metrics port, for the length of the run."""

    def __init__(self) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        env = {
            "LOGCLASS_SERVER__LISTEN": self.target,
            # Every request waits for all its answers, as the in-process engine does: with the
            # default budget (250 ms) the cold pass would answer "pending" and leave the caches
            # to fill during the warm pass.
            "LOGCLASS_SERVER__INLINE_BUDGET_MS": "600000",
        }
        super().__init__(["serve"], env, "LOGCLASS_SERVER__METRICS_LISTEN", "server")

    def wait_ready(self, timeout: float = 300.0) -> None:
        async def probe() -> None:
            async with grpc.aio.insecure_channel(self.target) as channel:
                await loadgen.wait_ready(pb_grpc.LogClassifierStub(channel), timeout)  # type: ignore[no-untyped-call]

        try:
            asyncio.run(probe())
        except grpc.aio.AioRpcError as exc:
            raise RuntimeError(f"the server did not become ready: {exc.details()}\n{self.log_tail()}") from exc
        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}\n{self.log_tail()}")

    def tier_latency(self) -> dict[str, dict[str, float]]:
        """p50/p99 per model-tier call, interpolated in the server's histogram buckets."""
        text = self.metrics_text()
        buckets: dict[str, list[tuple[float, float]]] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "logclass_tier_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets.setdefault(sample.labels["tier"], []).append((bound, sample.value))
        out = {}
        for tier, rows in buckets.items():
            rows.sort()
            calls = rows[-1][1]
            if calls:
                out[tier] = {
                    "calls": calls,
                    "p50_ms": _quantile(rows, 0.5) * 1000,
                    "p99_ms": _quantile(rows, 0.99) * 1000,
                }
        return out


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def measure(records: Sequence[LogRecord], sizes: Sequence[int], streams: int) -> dict[str, Any]:
    stage(f"in-process baseline: {len(records):,} records")
    baseline, device = in_process(records, sizes)
    gc.collect()
    stage("starting logclass serve on loopback (models load before it reports SERVING)")
    server = Server()
    try:
        started = time.perf_counter()
        server.wait_ready()
        startup = time.perf_counter() - started
        stage(f"  ready after {startup:.1f} s; {streams} concurrent streams")
        grpc_results = loadgen.run(server.target, records, sizes, streams, report=lambda line: stage("  " + line))
        tiers = server.tier_latency()
        rss = server.peak_rss_mb()
    finally:
        server.stop()
    rows = {}
    for name, result in grpc_results.items():
        base = baseline[name]
        rows[name] = {
            "in_process_rps": base.records_per_second,
            "in_process_p50_ms": base.percentile(50),
            "in_process_p99_ms": base.percentile(99),
            "grpc_rps": result.records_per_second,
            "grpc_p50_ms": result.percentile(50),
            "grpc_p99_ms": result.percentile(99),
            "ratio": result.records_per_second / base.records_per_second if base.records_per_second else 0.0,
        }
    return {
        "machine": {"cpus": os.cpu_count(), "device": device, "python": platform.python_version()},
        "settings": {"records": len(records), "request_sizes": list(sizes), "streams": streams},
        "server_startup_s": startup,
        "rows": rows,
        "tier_latency": tiers,
        "server_peak_rss_mb": rss,
    }


def report(result: dict[str, Any]) -> bool:
    m, s = result["machine"], result["settings"]
    print(
        f"machine: {m['cpus']} CPUs, embedding device {m['device']}, Python {m['python']}; {s['records']:,} records "
        f"(seed set + Loghub), {s['streams']} concurrent streams; server ready in {result['server_startup_s']:.1f} s\n"
    )
    print(f"{'':<28}{'in-process':>26}{'gRPC':>28}{'gRPC /':>10}")
    print(f"{'':<28}{'rec/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'rec/s':>12}{'p50 ms':>8}{'p99 ms':>8}{'in-proc':>10}")
    for name, r in result["rows"].items():
        print(
            f"{name:<28}{r['in_process_rps']:>10,.0f}{r['in_process_p50_ms']:>8.1f}{r['in_process_p99_ms']:>8.1f}"
            f"{r['grpc_rps']:>12,.0f}{r['grpc_p50_ms']:>8.1f}{r['grpc_p99_ms']:>8.1f}{r['ratio']:>10.2f}"
        )
    print("\nper model-tier call, from the server's metrics (both passes):")
    for tier, t in result["tier_latency"].items():
        print(f"  {tier:<12}{t['calls']:>8,.0f} calls   p50 {t['p50_ms']:8.1f} ms   p99 {t['p99_ms']:8.1f} ms")
    rss = result["server_peak_rss_mb"]
    print(f"\nserver peak RSS: {rss:,.0f} MB")

    checks = []
    warm = next((r for n, r in result["rows"].items() if n == "warm 1000-record requests"), None)
    if warm is not None:
        checks.append((f"warm, 1000-record requests >= {WARM_TARGET:,.0f} rec/s", warm["grpc_rps"] >= WARM_TARGET))
    for name, r in result["rows"].items():
        checks.append((f"{name}: gRPC >= {RATIO_TARGET:.0%} of in-process", r["ratio"] >= RATIO_TARGET))
    checks.append((f"server peak RSS <= {RSS_TARGET_MB:,.0f} MB", rss <= RSS_TARGET_MB))
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=8, help="concurrent ClassifyStream callers")
    parser.add_argument("--request-sizes", default="1000,100", help="records per request, comma-separated")
    parser.add_argument("--records", type=int, default=0, help="replay only the first N records (0: all)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    records = loadgen.bench_records(args.records)
    sizes = [int(x) for x in args.request_sizes.split(",")]
    result = measure(records, sizes, args.streams)
    return finish(result, report(result), args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
