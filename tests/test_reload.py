"""Hot reload of the regex rules (issue 19, part 1): a real `logclass serve`, SIGHUP, a gRPC
stream of requests flowing throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import ROOT, SERVING, free_port, scrape, start_server, wait_serving, wait_until

RULES_V1 = """rules:
  - name: disk-full
    pattern: 'no space left on device'
    label: disk
"""
RULES_V2 = (
    RULES_V1
    + """  - name: oom-kill
    pattern: 'out of memory: killed process'
    label: oom
"""
)
# Compiles as YAML but not as a rule: the whole file is refused, nothing of it is applied.
RULES_BAD = (
    RULES_V2
    + """  - name: broken
    pattern: '(unclosed'
    label: oom
"""
)
RECORDS = [
    ("kubelet", "write /var/lib/x: no space left on device", "disk"),
    ("kernel", "Out of memory: Killed process 4242 (java)", None),  # None: rule v2's label, or fallback before
    ("app", "user 17 logged in", None),
]


class Streamer:
    """A ClassifyStream client sending a request every few ms until stopped; every response is
    checked complete (one result per record, no error) and its labels kept in order."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.stop = threading.Event()
        self.responses: list[list[tuple[str, str]]] = []
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _requests(self) -> Iterator[pb.ClassifyRequest]:
        n = 0
        while not self.stop.is_set():
            records = [pb.LogRecord(source=s, message=f"{m}", id=f"{n}.{i}") for i, (s, m, _) in enumerate(RECORDS)]
            # One novel message per request too: past the exact cache, through the rules each time.
            records.append(pb.LogRecord(source="kernel", message=f"Out of memory: Killed process {n} (job)", id="x"))
            yield pb.ClassifyRequest(records=records, request_id=str(n))
            n += 1
            time.sleep(0.005)

    def _run(self) -> None:
        try:
            with grpc.insecure_channel(self.address) as channel:
                stub = pb_grpc.LogClassifierStub(channel)
                for response in stub.ClassifyStream(self._requests(), timeout=120):
                    if len(response.results) != len(RECORDS) + 1:
                        self.failures.append(f"request {response.request_id}: {len(response.results)} results")
                    for r in response.results:
                        if r.error:
                            self.failures.append(f"request {response.request_id}: {r.id} error {r.error} {r.detail}")
                    self.responses.append([(r.label, r.tier) for r in response.results])
        except grpc.RpcError as exc:
            self.failures.append(f"stream failed: {exc}")

    def __enter__(self) -> Streamer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _classify(address: str, message: str) -> pb.ClassifyResult:
    with grpc.insecure_channel(address) as channel:
        request = pb.ClassifyRequest(records=[pb.LogRecord(source="kernel", message=message)])
        return pb_grpc.LogClassifierStub(channel).Classify(request, timeout=10).results[0]


def test_sighup_reloads_rules_under_load_and_refuses_a_bad_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_V1)
    address = f"127.0.0.1:{free_port()}"
    metrics_port = free_port()
    env = {
        "LOGCLASS_SERVER__LOG_FORMAT": "json",
        "LOGCLASS_ROUTER__TIERS": "[regex]",
        "LOGCLASS_REGEX__RULES_FILE": str(rules),
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }
    proc = start_server(address, env)
    oom = "Out of memory: Killed process 1 (probe)"
    try:
        assert _classify(address, oom).tier == "none"
        with grpc.insecure_channel(address) as channel:
            labels = pb_grpc.LogClassifierStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10).labels
        assert "oom" not in labels
        with Streamer(address) as streamer:
            wait_until(lambda: len(streamer.responses) > 20, 30, "the stream does not flow")
            rules.write_text(RULES_V2)
            proc.send_signal(signal.SIGHUP)
            # The exact repeat of a message the old rules answered "none" (cached) gets the new rule.
            wait_until(
                lambda: streamer.responses and streamer.responses[-1][1] == ("oom", "regex"),
                30,
                lambda: f"the new rule never answered: {streamer.responses[-1:]} {streamer.failures}",
            )
            seen = len(streamer.responses)
            rules.write_text(RULES_BAD)
            proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda: scrape(metrics_port).get('logclass_reloads_total{outcome="refused",part="rules"}', 0) == 1,
                30,
                "the bad file was not refused",
            )
            wait_until(lambda: len(streamer.responses) > seen + 20, 30, "the stream stopped after the refusal")
        assert streamer.failures == []
        # Every response whole, each one on one rule set: before the swap oom is fallback, after it
        # oom, and once after it never back (no stale cache entry shadows the new rule).
        oom_labels = [r[1][0] for r in streamer.responses]
        first = oom_labels.index("oom")
        assert all(label != "oom" for label in oom_labels[:first])
        assert all(label == "oom" for label in oom_labels[first:]), oom_labels[first:]
        assert all(r[0] == ("disk", "regex") for r in streamer.responses)
        # The old (v2) rules still serve after the refused file.
        assert _classify(address, "Out of memory: Killed process 99 (after)").label == "oom"
        with grpc.insecure_channel(address) as channel:
            labels = pb_grpc.LogClassifierStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10).labels
        assert "oom" in labels
        metrics = scrape(metrics_port)
        assert metrics['logclass_reloads_total{outcome="ok",part="rules"}'] == 1
        assert metrics['logclass_model_info{version="rules-only"}'] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("reloaded 2 regex rules from") for m in messages), err
    refused = [line for line in lines if line["message"].startswith("reload refused")]
    assert len(refused) == 1 and refused[0]["level"] in ("ERROR", "error"), refused
    assert "'broken'" in refused[0]["message"] and "invalid regular expression" in refused[0]["message"], refused


def test_sighup_while_the_models_load_is_ignored(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    # An empty encoder cache: loading exports the encoder (seconds), long enough to signal into.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "LOGCLASS_SERVER__LOG_FORMAT": "json",
        "LOGCLASS_SERVER__METRICS_LISTEN": "null",
        "LOGCLASS_SERVER__HTTP_LISTEN": "null",
        "LOGCLASS_EMBEDDING__CACHE_DIR": str(tmp_path / "encoders"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "logclass.cli", "serve", "--listen", address],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def listening_not_serving() -> bool:
                assert proc.poll() is None
                try:
                    return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status != SERVING
                except grpc.RpcError:
                    return False

            wait_until(listening_not_serving, 60, "never saw the loading phase")
            proc.send_signal(signal.SIGHUP)
        wait_serving(address, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIGHUP ignored: the models are still loading" in err
