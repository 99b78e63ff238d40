"""A restart keeps learnt templates: `logclass serve` with the embedded LLM (SmolLM2 via
llama.cpp) learns a new template into ``memory.learnt_file``; restarted with no LLM at all, the
memory tier still answers that template."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import free_port, scrape, start_server, wait_until

LEAD = "Lead conversion failed for prospect ID {} due to missing contact information."
LEAD_TEMPLATE = "Lead conversion failed for prospect ID <NUM> due to missing contact information."
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _classify(address: str, source: str, message: str) -> Any:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
        request = pb.ClassifyRequest(records=[pb.LogRecord(source=source, message=message)])
        return stub.Classify(request, timeout=60).results[0]


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return err


def _lessons(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_a_restart_keeps_learnt_templates(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: pip install 'logclass[llamacpp]'")
    learnt = tmp_path / "learnt.jsonl"
    address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    env = {
        "LOGCLASS_MEMORY__LEARNT_FILE": str(learnt),
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "LOGCLASS_SERVER__INLINE_BUDGET_MS": "100",
    }
    llm = {
        "LOGCLASS_LLM__BACKEND": "llamacpp",
        "LOGCLASS_LLM__LLAMACPP__MODEL": "smollm2-135m",
        # SmolLM2 is rarely sure (the default learns answers of 0.9 and up): any answer is learnt here.
        "LOGCLASS_LLM__LEARN_MIN_CONFIDENCE": "0",
    }
    proc = start_server(address, {**env, **llm}, timeout=300)
    try:
        # LegacyCRM is routed straight to the LLM (the seed bundle's route): pending until the
        # LLM's answer lands, then answered by the memory, not asked again.
        first = _classify(address, "LegacyCRM", LEAD.format(1))
        assert first.tier == "pending", first
        n = 1
        deadline = time.monotonic() + 120
        while (result := _classify(address, "LegacyCRM", LEAD.format(n := n + 1))).tier == "pending":
            assert time.monotonic() < deadline, "the LLM answer never reached the memory"
            time.sleep(0.2)
        assert result.tier in ("llm", "memory"), result  # "llm": this request's budget covered the call
        result = _classify(address, "LegacyCRM", LEAD.format(n + 1))
        assert (result.tier, result.detail) == ("memory", f"learnt from llm {SMOLLM2_FILE}"), result
        wait_until(lambda: _lessons(learnt), 30, "the lesson never reached the file")
        (lesson,) = _lessons(learnt)
        assert (lesson["template"], lesson["origin"], lesson["label"]) == (LEAD_TEMPLATE, "llm", result.label)
        assert (lesson["source"], lesson["model"]) == ("LegacyCRM", SMOLLM2_FILE)
        metrics = scrape(metrics_port)
        assert metrics['logclass_learnt_total{origin="llm"}'] == 1
        assert metrics['logclass_memory_templates{kind="learnt"}'] == 1
        assert metrics['logclass_memory_templates{kind="trained"}'] > 100
    finally:
        _stop(proc)

    # No LLM now: only the learnt memory can know this template.
    proc = start_server(address, {**env, "LOGCLASS_LLM__BACKEND": "none"})
    try:
        again = _classify(address, "LegacyCRM", LEAD.format(999))
        assert (again.tier, again.label, again.detail) == ("memory", result.label, result.detail), again
        # The LLM's answer was for LegacyCRM's line: another source is not answered with it (here
        # the training data knows the template for other sources: 1 row).
        other = _classify(address, "app", LEAD.format(1000))
        assert not other.detail.startswith("learnt from llm"), other
        metrics = scrape(metrics_port)
        assert metrics['logclass_memory_templates{kind="learnt"}'] == 1
        assert metrics['logclass_learnt_total{origin="llm"}'] == 0  # counted where it was learnt
    finally:
        _stop(proc)
    assert len(_lessons(learnt)) == 1
