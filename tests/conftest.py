"""Shared fixtures: the real MiniLM encoder and the shipped bundle, loaded once per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from logclass import config
from logclass.core.bundle import ModelBundle, load_bundle
from logclass.encoders import Encoder
from logclass.engine.blocking import BlockingEngine
from logclass.engine.pipeline import DEFAULT_BUNDLE, build_engine
from logclass.tiers.registry import build_encoder

# Outside tests/llm/ the pipeline is tested without an LLM tier (with llama.cpp installed the
# default, auto, would load Qwen); tests/llm/ chooses its backends explicitly. Set in os.environ
# too, so CLI and server subprocesses inherit it.
NO_LLM = {"LOGCLASS_LLM__BACKEND": "none"}
os.environ.update(NO_LLM)
# Servers the tests start listen for HTTP only where a test asks (server.http_listen defaults to
# 127.0.0.1:8000, which two servers, or a developer's own, cannot share).
NO_HTTP = {"LOGCLASS_SERVER__HTTP_LISTEN": "null"}
os.environ.update(NO_HTTP)

ROOT = Path(__file__).resolve().parent.parent
SEED_CSV = ROOT / "training" / "data" / "synthetic_logs.csv"
SEED_TEST_CSV = ROOT / "training" / "data" / "seed_test.csv"

SEED_ROWS = [
    ("ModernCRM", "IP 192.168.133.114 blocked due to potential attack", "Security Alert"),
    ("BillingSystem", "User 12345 logged in.", "User Action"),
    ("AnalyticsEngine", "File data_6957.csv uploaded successfully by user User265.", "System Notification"),
    ("AnalyticsEngine", "Backup completed successfully.", "System Notification"),
    ("ModernHR", "Admin access escalation detected for user 9429", "Security Alert"),
]

SERVING = health_pb2.HealthCheckResponse.SERVING
# The files a bundle made by `logclass train` with embedding features holds beside its manifest.
BUNDLE_FILES = {
    "classifier.npz",
    "prototypes.npz",
    "memory.json",
    "rules.yaml",
    "training_rows.npy",
    "encoder_probe.npz",
}


class MemoEncoder(Encoder):
    """The real encoder, remembering vectors so the suite encodes each seed message once."""

    def __init__(self, inner: Encoder) -> None:
        self.__dict__.update(inner.__dict__)
        self.inner = inner
        self.backend = inner.backend  # type: ignore[misc]
        self._memo: dict[str, Any] = {}
        self.calls: list[int] = []

    def forward(self, ids: Any, mask: Any) -> Any:
        return self.inner.forward(ids, mask)

    def encode(self, texts: Sequence[str], progress: bool = False) -> Any:
        import numpy as np

        self.calls.append(len(texts))
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            for text, vector in zip(missing, self.inner.encode(missing), strict=True):
                self._memo[text] = vector
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])


@pytest.fixture(scope="session")
def cfg() -> config.Settings:
    return config.load(environ=NO_LLM)


@pytest.fixture(scope="session")
def encoder(cfg: config.Settings) -> MemoEncoder:
    return MemoEncoder(build_encoder(cfg.embedding))


@pytest.fixture(scope="session")
def bundle() -> ModelBundle:
    return load_bundle(DEFAULT_BUNDLE)


def offline_engine(cfg: config.Settings, **kwargs: Any) -> BlockingEngine:
    """``build_engine(cfg, **kwargs)`` behind the blocking facade offline jobs use."""
    return BlockingEngine(build_engine(cfg, **kwargs), settings=cfg)


@pytest.fixture
def router(cfg: config.Settings, bundle: ModelBundle, encoder: MemoEncoder) -> Iterator[BlockingEngine]:
    """The engine as offline jobs run it: every answer awaited."""
    engine = BlockingEngine(build_engine(cfg, bundle=bundle, encoder=encoder))
    yield engine
    engine.close()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "logclass.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A port nothing listens on right now, for servers the tests start on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(
    address: str, proc: subprocess.Popen[str], creds: grpc.ChannelCredentials | None = None, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        channel = grpc.secure_channel(address, creds) if creds else grpc.insecure_channel(address)
        try:
            with channel:
                request = health_pb2.HealthCheckRequest(service="logclass.v1.LogClassifier")
                if health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status == SERVING:
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.3)
    raise TimeoutError("server did not become SERVING")


def start_server(
    address: str,
    env: dict[str, str] | None = None,
    creds: grpc.ChannelCredentials | None = None,
    flags: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.Popen[str]:
    """`logclass serve` in a child process, returned once its health check says SERVING."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "logclass.cli", "serve", "--listen", address, *flags],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_serving(address, proc, creds, timeout)
    return proc


def metrics_text(port: int) -> str:
    """The Prometheus exposition text a server or relay serves on 127.0.0.1:port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def scrape(port: int) -> dict[str, float]:
    """metrics_text as {sample with labels: value}."""
    out = {}
    for line in metrics_text(port).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    message: str | Callable[[], str] = "condition not met in time",
    interval: float = 0.05,
) -> None:
    """Polls predicate every interval seconds until it is true; AssertionError(message) after timeout.

    A callable message is built only on failure (say, to include a log file as it is then)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)
