"""`logclass serve` with each LLM backend, end to end over gRPC: the vLLM server given by flags,
and the embedded llama.cpp default picked by `llm.backend: auto`."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import free_port, start_server

LEAD = "Lead conversion failed for prospect ID {} due to missing contact information."


@contextmanager
def serve(*flags: str, env: dict[str, str]) -> Iterator[pb_grpc.LogClassifierStub]:
    address = f"127.0.0.1:{free_port()}"
    proc = start_server(address, {"LOGCLASS_SERVER__METRICS_LISTEN": "null", **env}, flags=flags, timeout=300)
    try:
        with grpc.insecure_channel(address) as channel:
            yield pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]


def _until_llm_decides(stub: pb_grpc.LogClassifierStub, timeout: float = 120.0) -> Any:
    """A LegacyCRM line (routed straight to the LLM) until the answer is the LLM's own: given by
    the LLM tier to the request that waited for it, or by the memory that learnt it since."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        request = pb.ClassifyRequest(records=[pb.LogRecord(source="LegacyCRM", message=LEAD.format(n))])
        result = stub.Classify(request, timeout=60).results[0]
        if result.tier == "llm" or (result.tier == "memory" and result.detail.startswith("learnt from llm ")):
            return result
        assert result.tier == "pending", result
        assert time.monotonic() < deadline, "the LLM answer never reached the cache"
        time.sleep(0.5)


def test_serve_with_vllm_from_flags(vllm_server: Any) -> None:
    flags = ("--llm-backend", "vllm", "--llm-url", vllm_server.url, "--budget-ms", "100")
    with serve(*flags, env={"LOGCLASS_LLM__SERVER__API_KEY": vllm_server.api_key}) as stub:
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert info.llm_backend == "vllm" and "llm" in info.tiers
        result = _until_llm_decides(stub)
        assert result.label in info.labels and 0 < result.confidence <= 1
        assert result.detail.removeprefix("learnt from llm ") == "smollm2-135m-instruct"


def test_serve_embedded_default_is_llamacpp() -> None:
    pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: pip install 'logclass[llamacpp]'")
    # auto, no server URL: the embedded backend (SmolLM2 here, for speed; Qwen is the default model).
    env = {
        "LOGCLASS_LLM__BACKEND": "auto",
        "LOGCLASS_LLM__LLAMACPP__MODEL": "smollm2-135m",
        "LOGCLASS_SERVER__INLINE_BUDGET_MS": "100",
    }
    with serve(env=env) as stub:
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert (info.llm_backend, info.llm_model) == ("llamacpp", "SmolLM2-135M-Instruct.Q4_1.gguf")
        result = _until_llm_decides(stub)
        assert result.detail.removeprefix("learnt from llm ") == "SmolLM2-135M-Instruct.Q4_1.gguf"
