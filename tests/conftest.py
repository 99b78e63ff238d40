"""Shared fixtures: the real MiniLM encoder and the shipped bundle, loaded once per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from sidecar import config
from sidecar.bundle import ModelBundle, load_bundle
from sidecar.encoder import Encoder
from sidecar.pipeline import DEFAULT_BUNDLE, build_encoder, build_router
from sidecar.router import Router

# Outside tests/llm/ the pipeline is tested without an LLM tier (with llama.cpp installed the
# default, auto, would load Qwen); tests/llm/ chooses its backends explicitly. Set in os.environ
# too, so CLI and server subprocesses inherit it.
NO_LLM = {"LOGCLASS_LLM__BACKEND": "none"}
os.environ.update(NO_LLM)

ROOT = Path(__file__).resolve().parent.parent
SEED_CSV = ROOT / "training" / "data" / "synthetic_logs.csv"
SEED_TEST_CSV = ROOT / "training" / "data" / "seed_test.csv"


class MemoEncoder(Encoder):
    """The real encoder, remembering vectors so the suite encodes each seed message once."""

    def __init__(self, inner: Encoder) -> None:
        self.__dict__.update(inner.__dict__)
        self._memo: dict[str, Any] = {}
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str], progress: bool = False) -> Any:
        import numpy as np

        self.calls.append(len(texts))
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            for text, vector in zip(missing, super().encode(missing), strict=True):
                self._memo[text] = vector
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])


@pytest.fixture(scope="session")
def cfg() -> config.Config:
    return config.load(environ=NO_LLM)


@pytest.fixture(scope="session")
def encoder(cfg: config.Config) -> MemoEncoder:
    return MemoEncoder(build_encoder(cfg))


@pytest.fixture(scope="session")
def bundle() -> ModelBundle:
    return load_bundle(DEFAULT_BUNDLE)


@pytest.fixture
def router(cfg: config.Config, bundle: ModelBundle, encoder: MemoEncoder) -> Router:
    return build_router(cfg, bundle=bundle, encoder=encoder)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
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
