"""Hot reload under load: the latency a rules reload and a bundle swap add, in the same run.

A real ``logclass serve`` on loopback (regex, memory and embedding tiers, no LLM) takes a steady
stream of 100-record requests from several ClassifyStream callers. Mid-stream the rules file
gains a rule and the server gets SIGHUP; later the config's bundle (a symlink) is flipped to a
second bundle and the server gets SIGHUP again. Every response is checked complete (one result
per record, no error). Prints, per window, requests, failures, p50/p99/max latency and the ratio
of p99 to the baseline window before any reload; and how long each reload took from SIGHUP to
its metric (``logclass_reloads_total``, ``logclass_model_info``).

The records are the seed set's, warmed first: they are what a node sends all day, so the baseline
is the warm path, and what a reload costs shows against it. After the bundle swap every cache is
empty (a new bundle invalidates all decisions), so the window after it shows the refill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LOGCLASS_LLM__BACKEND", "none")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import SEED_CSV, LogclassProcess, finish, free_port, stage
from benchmarks.loadgen import bench_records, wait_ready
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.client import to_request
from logclass.config import packaged_path
from logclass.core.decision import LogRecord
from logclass.engine.pipeline import DEFAULT_BUNDLE

REQUEST_RECORDS = 100
CALLERS = 4
RATIO_TARGET = 3.0  # p99 during a reload window / baseline p99
MARKER_RULE = """  - name: bench-reload-marker
    pattern: 'logclass bench reload marker \\d+'
    label: System Notification
"""


@dataclass
class Sample:
    sent: float  # perf_counter at send
    latency: float
    ok: bool
    versions: frozenset[str]


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)


def _seed_records() -> list[LogRecord]:
    return [r for r in bench_records() if r.message][:2000]


def _prepare(tmp: Path) -> tuple[Path, Path, Path, Path]:
    """config.yaml, rules.yaml, the bundle symlink and the second bundle, in ``tmp``."""
    rules = tmp / "rules.yaml"
    shutil.copy(packaged_path("rules.yaml"), rules)
    first, second = tmp / "bundle-a", tmp / "bundle-b"
    shutil.copytree(DEFAULT_BUNDLE, first)
    shutil.copytree(DEFAULT_BUNDLE, second)
    manifest = json.loads((second / "manifest.json").read_text())
    manifest["name"] = "default-b"  # the same model under another version: a real swap, same answers
    (second / "manifest.json").write_text(json.dumps(manifest, indent=1))
    link = tmp / "live"
    link.symlink_to(first)
    config = tmp / "config.yaml"
    config.write_text(f"model:\n  bundle: {link}\nregex:\n  rules_file: {rules}\n")
    return config, rules, link, second


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _caller(target: str, records: Sequence[LogRecord], stop: asyncio.Event, run: Run, offset: int) -> None:
    requests = [to_request(records[i : i + REQUEST_RECORDS]) for i in range(0, len(records), REQUEST_RECORDS)]
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.LogClassifierStub(channel).ClassifyStream(timeout=3600)  # type: ignore[no-untyped-call]
        n = offset
        while not stop.is_set():
            request = requests[n % len(requests)]
            n += 1
            sent = time.perf_counter()
            try:
                await call.write(request)
                response = await call.read()
            except grpc.aio.AioRpcError as exc:
                run.failures.append(f"stream failed: {exc.code().name} {exc.details()}")
                return
            latency = time.perf_counter() - sent
            complete = len(response.results) == len(request.records) and not any(r.error for r in response.results)
            if not complete:
                run.failures.append(f"incomplete response: {len(response.results)} of {len(request.records)}")
            versions = frozenset(r.model_version for r in response.results)
            run.samples.append(Sample(sent, latency, complete, versions))
        await call.done_writing()


async def _wait_metric(server: LogclassProcess, name: str, before: float, timeout: float, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        text = await loop.run_in_executor(None, server.metrics_text)
        if _metric(text, name, **labels) > before:
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{name}{labels} did not change within {timeout}s\n{server.log_tail()}")


async def _drive(server: LogclassProcess, target: str, rules: Path, link: Path, second: Path, seconds: float) -> Run:
    records = _seed_records()
    run = Run()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
        await wait_ready(stub, 300)
        warm = to_request(records)
        warm.wait_for_all = True
        await stub.Classify(warm, timeout=600)
    stop = asyncio.Event()
    callers = [asyncio.create_task(_caller(target, records, stop, run, i * 3)) for i in range(CALLERS)]
    run.marks["start"] = time.perf_counter()
    await asyncio.sleep(seconds)
    before = _metric(server.metrics_text(), "logclass_reloads_total", part="rules", outcome="ok")
    rules.write_text(rules.read_text() + MARKER_RULE)
    run.marks["rules_sighup"] = time.perf_counter()
    os.kill(server.proc.pid, signal.SIGHUP)
    run.marks["rules_done"] = await _wait_metric(
        server, "logclass_reloads_total", before, 60, part="rules", outcome="ok"
    )
    await asyncio.sleep(seconds)
    tmp_link = link.with_name(".live.tmp")
    tmp_link.symlink_to(second)
    os.replace(tmp_link, link)
    run.marks["bundle_sighup"] = time.perf_counter()
    os.kill(server.proc.pid, signal.SIGHUP)
    version_b = "default-b@"
    run.marks["bundle_done"] = await _wait_version(server, version_b, 300)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*callers)
    run.marks["end"] = time.perf_counter()
    return run


async def _wait_version(server: LogclassProcess, prefix: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        text = await loop.run_in_executor(None, server.metrics_text)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                version = sample.labels.get("version", "")
                if sample.name == "logclass_model_info" and version.startswith(prefix) and sample.value == 1:
                    return time.perf_counter()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"logclass_model_info never showed {prefix}… within {timeout}s\n{server.log_tail()}")


def _window(run: Run, name: str, start: float, end: float, baseline_p99: float | None) -> dict[str, Any]:
    picked = [s for s in run.samples if start <= s.sent < end]
    ms = np.array([s.latency * 1000 for s in picked]) if picked else np.array([0.0])
    p99 = float(np.percentile(ms, 99))
    return {
        "window": name,
        "seconds": round(end - start, 2),
        "requests": len(picked),
        "failed": sum(not s.ok for s in picked),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(float(ms.max()), 2),
        "p99_ratio": round(p99 / baseline_p99, 2) if baseline_p99 else 1.0,
        "versions": sorted({v for s in picked for v in s.versions}),
    }


def report(run: Run) -> dict[str, Any]:
    m = run.marks
    settle = 1.0
    base = _window(run, "baseline (no reload)", m["start"], m["rules_sighup"], None)
    windows = [
        base,
        _window(
            run, "rules reload (SIGHUP -> done + 1 s)", m["rules_sighup"], m["rules_done"] + settle, base["p99_ms"]
        ),
        _window(run, "between reloads", m["rules_done"] + settle, m["bundle_sighup"], base["p99_ms"]),
        _window(
            run, "bundle swap (SIGHUP -> done + 1 s)", m["bundle_sighup"], m["bundle_done"] + settle, base["p99_ms"]
        ),
        _window(run, "after the swap (caches refill)", m["bundle_done"] + settle, m["end"], base["p99_ms"]),
    ]
    return {
        "callers": CALLERS,
        "records_per_request": REQUEST_RECORDS,
        "windows": windows,
        "rules_reload_s": round(m["rules_done"] - m["rules_sighup"], 3),
        "bundle_swap_s": round(m["bundle_done"] - m["bundle_sighup"], 3),
        "failures": run.failures[:20],
        "failed_total": len(run.failures),
    }


def print_report(result: dict[str, Any]) -> bool:
    print(
        f"Hot reload under load: {result['callers']} ClassifyStream callers, "
        f"{result['records_per_request']}-record warm requests, seed records"
    )
    print(f"{'window':<40}{'s':>6}{'requests':>10}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p99 x':>7}")
    for w in result["windows"]:
        print(
            f"{w['window']:<40}{w['seconds']:>6.1f}{w['requests']:>10}{w['failed']:>8}{w['p50_ms']:>9.2f}"
            f"{w['p99_ms']:>9.2f}{w['max_ms']:>9.2f}{w['p99_ratio']:>7.2f}"
        )
    print(f"rules reload took {result['rules_reload_s']:.3f} s, bundle swap {result['bundle_swap_s']:.3f} s")
    print("versions answering, per window: " + "; ".join(",".join(w["versions"]) for w in result["windows"]))
    ok = result["failed_total"] == 0 and all(w["p99_ratio"] <= RATIO_TARGET for w in result["windows"][1:2])
    print(
        f"failed or incomplete responses: {result['failed_total']} (target 0); "
        f"rules-reload p99 ratio target <= {RATIO_TARGET}: {'met' if ok else 'MISSED'}"
    )
    for failure in result["failures"]:
        print("  " + failure)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each steady window")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if not SEED_CSV.is_file():
        raise SystemExit(f"{SEED_CSV} is missing: run from a checkout")
    with tempfile.TemporaryDirectory(prefix="logclass-bench-reload-") as tmp:
        config, rules, link, second = _prepare(Path(tmp))
        target = f"127.0.0.1:{free_port()}"
        server = LogclassProcess(
            ["serve", "--config", str(config), "--listen", target, "--http-listen", ""],
            {},
            "LOGCLASS_SERVER__METRICS_LISTEN",
            "reload",
        )
        try:
            stage(f"logclass serve on {target}; warming, then {args.seconds:.0f} s windows around two reloads")
            run = asyncio.run(_drive(server, target, rules, link, second, args.seconds))
        finally:
            server.stop()
    result = report(run)
    ok = print_report(result)
    return finish(result, ok, args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
