"""Hot reload of the config and the model bundle (issue 19): a real `logclass serve` on two small
bundles trained here, gRPC and HTTP clients sending throughout, the file watch and SIGHUP.

Prints the latency the swap added (p50/p99 of the request stream inside the swap window and
outside it); run with ``-s`` to see it. Measured on the 2-core dev machine, lexical bundles:
see docs/reload.md, "Latency of a swap".
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import ROOT, free_port, run_cli, scrape, wait_serving, wait_until

RULES_V1 = """rules:
  - name: disk-full
    pattern: 'no space left on device'
    label: Error
"""
RULES_V2 = (
    RULES_V1
    + """  - name: oom-kill
    pattern: 'out of memory: killed process'
    label: Critical Error
"""
)
FIXED = [
    ("kubelet", "write /var/lib/x: no space left on device"),
    ("ModernCRM", "POST /api/v3/invoices -> 201 Created in 84 ms"),
    ("app", "User 17 logged in"),
]
EXACT_HITS = 'logclass_cache_hits_total{cache="exact"}'
# Not in either training set: decided by a model lane, then cached (exact and template).
PROBE = ("probe", "flux capacitor 7 reports an unusual hum near the coolant loop")


def _train(rows: range, out: Path, tmp: Path) -> str:
    data = tmp / f"{out.name}.csv"
    with (
        (ROOT / "training" / "data" / "synthetic_logs.csv").open(newline="") as src,
        data.open("w", newline="") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for i, row in enumerate(reader):
            if i in rows:
                writer.writerow(row)
    labels = ROOT / "training" / "data" / "labels.yaml"
    args = ["--labels", str(labels), "--features", "lexical", "--folds", "2", "--no-progress"]
    result = run_cli("train", str(data), "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    import hashlib

    return f"{manifest['name']}@{hashlib.sha256((out / 'manifest.json').read_bytes()).hexdigest()[:12]}"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path, str]:
    tmp = tmp_path_factory.mktemp("bundles")
    v1 = _train(range(0, 400), tmp / "b1", tmp)
    v2 = _train(range(400, 800), tmp / "b2", tmp)
    assert v1 != v2
    return tmp / "b1", v1, tmp / "b2", v2


@dataclass
class Sample:
    sent: float
    seconds: float
    version: str


@dataclass
class Client:
    """Sends requests one after another until stopped; every answer checked complete."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def records(self, n: int) -> list[tuple[str, str, str]]:
        novel = ("kubelet", f"write /tmp/{n}: no space left on device")  # past the exact cache, a rule
        return [(f"{i}", s, m) for i, (s, m) in enumerate([*FIXED, novel])]


class GrpcClient(Client):
    def run(self, address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.LogClassifierStub(channel)
            n = 0
            while not self.stop.is_set():
                records = [pb.LogRecord(id=i, source=s, message=m) for i, s, m in self.records(n)]
                started = time.perf_counter()
                try:
                    response = stub.Classify(pb.ClassifyRequest(records=records), timeout=30)
                except grpc.RpcError as exc:
                    self.failures.append(f"{self.name} {n}: {exc.code()} {exc.details()}")
                else:
                    seconds = time.perf_counter() - started
                    results = list(response.results)
                    if len(results) != len(records) or any(r.error for r in results):
                        self.failures.append(f"{self.name} {n}: {results}")
                    self.samples.append(Sample(started, seconds, results[0].model_version if results else ""))
                n += 1
                time.sleep(0.002)


OK = "ERROR_CODE_UNSPECIFIED"  # proto3 JSON of the zero ErrorCode


class HttpClient(Client):
    def run(self, base: str) -> None:
        n = 0
        while not self.stop.is_set():
            body = {"records": [{"id": i, "source": s, "message": m} for i, s, m in self.records(n)]}
            request = urllib.request.Request(
                f"{base}/v1/classify", json.dumps(body).encode(), {"content-type": "application/json"}
            )
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    results = json.loads(answer.read())["results"]
            except OSError as exc:
                self.failures.append(f"{self.name} {n}: {exc}")
            else:
                seconds = time.perf_counter() - started
                if len(results) != len(body["records"]) or any(r.get("error", OK) != OK for r in results):
                    self.failures.append(f"{self.name} {n}: {results}")
                version = results[0].get("modelVersion", results[0].get("model_version", "")) if results else ""
                self.samples.append(Sample(started, seconds, version))
            n += 1
            time.sleep(0.002)


def _start(address: str, config: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "logclass.cli", "serve", "--listen", address, "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "LOGCLASS_SERVER__LOG_FORMAT": "json", **env},
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),  # a file: a pipe nobody reads during the test would fill and stall the server
        text=True,
    )
    wait_serving(address, proc)
    return proc


def _config(path: Path, bundle: Path, rules: Path, **extra: object) -> None:
    config: dict[str, object] = {
        "model": {"bundle": str(bundle)},
        "regex": {"rules_file": str(rules)},
        "server": {"reload": {"watch_interval_s": 0.2}, **extra.pop("server", {})},  # type: ignore[dict-item]
        **extra,
    }
    # Written beside and renamed over: a reader (the watch) never sees half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config))
    os.replace(tmp, path)


def _flip(link: Path, target: Path) -> None:
    """Points ``link`` at ``target`` atomically, as `logclass distill` flips a bundle link."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _classify(address: str, source: str, message: str) -> pb.ClassifyResult:
    with grpc.insecure_channel(address) as channel:
        # wait_for_all: a model lane's answer is final (cached), never "pending" for a slow lane.
        request = pb.ClassifyRequest(records=[pb.LogRecord(source=source, message=message)], wait_for_all=True)
        return pb_grpc.LogClassifierStub(channel).Classify(request, timeout=10).results[0]


def _model_info(address: str) -> pb.ModelInfo:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.LogClassifierStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)


def _percentiles(seconds: list[float]) -> str:
    if len(seconds) < 2:
        return f"n={len(seconds)}"
    q = statistics.quantiles(seconds, n=100)
    return f"n={len(seconds)} p50 {q[49] * 1000:.1f} ms p99 {q[98] * 1000:.1f} ms"


def _messages(log: Path) -> Iterator[dict[str, str]]:
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def test_reload_under_load_rules_then_bundle_then_refusals(
    tmp_path: Path, bundles: tuple[Path, str, Path, str]
) -> None:
    b1, v1, b2, v2 = bundles
    rules, config, link, log = tmp_path / "rules.yaml", tmp_path / "config.json", tmp_path / "current", tmp_path / "log"
    rules.write_text(RULES_V1)
    link.symlink_to(b1)
    _config(config, link, rules)
    address, metrics_port, http_port = f"127.0.0.1:{free_port()}", free_port(), free_port()
    env = {
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "LOGCLASS_SERVER__HTTP_LISTEN": f"127.0.0.1:{http_port}",
    }
    proc = _start(address, config, log, env)
    try:
        assert _model_info(address).model_version == v1
        # The probe, twice: decided by a model lane, then an exact-cache hit.
        _classify(address, *PROBE)
        before = scrape(metrics_port)
        _classify(address, *PROBE)
        after = scrape(metrics_port)
        assert after.get(EXACT_HITS, 0) == before.get(EXACT_HITS, 0) + 1
        clients = [GrpcClient("grpc"), HttpClient("http")]
        threads = [
            threading.Thread(target=clients[0].run, args=(address,), daemon=True),
            threading.Thread(target=clients[1].run, args=(f"http://127.0.0.1:{http_port}",), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: all(len(c.samples) > 50 for c in clients), 60, "the clients do not flow")
            # 1. Rules: the new rule answers (file watch or SIGHUP, whichever comes first).
            rules.write_text(RULES_V2)
            proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda: _classify(address, "kernel", "Out of memory: Killed process 1 (x)").label == "Critical Error",
                30,
                "the new rule never answered",
            )
            assert _model_info(address).model_version == v1
            # 2. Bundle: the symlink flipped to the second bundle, picked up by the watch.
            mark = len(clients[0].samples)
            swap_started = time.perf_counter()
            _flip(link, b2)
            wait_until(
                lambda: all(c.samples and c.samples[-1].version == v2 for c in clients),
                60,
                lambda: f"the new bundle never answered: {[c.samples[-1:] for c in clients]}",
            )
            wait_until(lambda: any(m["message"].startswith("retired the engine") for m in _messages(log)), 30)
            swap_ended = time.perf_counter()
            wait_until(lambda: len(clients[0].samples) > mark + 200, 60, "the stream stopped after the swap")
        finally:
            for c in clients:
                c.stop.set()
            for t in threads:
                t.join(timeout=30)
        for c in clients:
            assert c.failures == [], c.failures[:5]
            versions = [s.version for s in c.samples]
            first = versions.index(v2)
            # Each response on one set, and once the new set answers, only it does.
            assert set(versions[:first]) == {v1} and set(versions[first:]) == {v2}, c.name
            inside = [s.seconds for s in c.samples if swap_started <= s.sent <= swap_ended]
            outside = [s.seconds for s in c.samples if not swap_started <= s.sent <= swap_ended]
            print(
                f"\n{c.name}: swap window {swap_ended - swap_started:.2f} s: during {_percentiles(inside)}; "
                f"outside {_percentiles(outside)}; failed 0 of {len(c.samples)}"
            )
        info = _model_info(address)
        assert info.model_version == v2
        metrics = scrape(metrics_port)
        assert metrics[f'logclass_model_info{{version="{v2}"}}'] == 1
        assert f'logclass_model_info{{version="{v1}"}}' not in metrics
        assert metrics['logclass_reloads_total{outcome="ok",part="bundle"}'] == 1
        assert metrics['logclass_reloads_total{outcome="ok",part="rules"}'] == 1
        # The new engine's caches are empty: the probe the old one had cached is decided again.
        _classify(address, *PROBE)
        probed = scrape(metrics_port)
        assert probed["logclass_cache_misses_total"] == metrics["logclass_cache_misses_total"] + 1
        assert probed.get(EXACT_HITS, 0) == metrics.get(EXACT_HITS, 0)
        # The new rules still serve on the new engine.
        assert _classify(address, "kernel", "Out of memory: Killed process 2 (y)").label == "Critical Error"

        # 3. A corrupt bundle: its manifest hash mismatches; refused, the running one serves on.
        bad = tmp_path / "bad"
        shutil.copytree(b2, bad)
        with (bad / "memory.json").open("a") as fh:
            fh.write(" ")
        _config(config, bad, rules)
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: scrape(metrics_port).get('logclass_reloads_total{outcome="refused",part="bundle"}', 0) >= 1,
            30,
            "the corrupt bundle was not refused",
        )
        assert _model_info(address).model_version == v2
        assert _classify(address, "kubelet", "write /a: no space left on device").model_version == v2

        # 4. A restart-only field beside a live one: refused as a whole, the live one not applied.
        _config(config, link, rules, server={"max_records_per_request": 17}, router={"fallback_label": "other"})
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: (
                scrape(metrics_port).get('logclass_reloads_total{outcome="restart_required",part="config"}', 0) >= 1
            ),
            30,
            "the restart-only change was not refused",
        )
        assert _model_info(address).fallback_label != "other"
        assert _model_info(address).max_records_per_request != 17
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    messages = [m["message"] for m in _messages(log)]
    refused = [m for m in messages if m.startswith("reload refused")]
    assert any("the new bundle does not load" in m and "memory.json" in m for m in refused), refused
    assert any("server.max_records_per_request" in m and "restart" in m for m in refused), refused
    assert not any("router.fallback_label" in m for m in refused), refused  # live: not named as blocking
