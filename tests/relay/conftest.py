"""Relay processes for the tests: real `logclass relay` subprocesses on 127.0.0.1.

They run the regex tier only (no model to load: a start takes about a second), which still goes
through the engine; `test_relay_serve.py` runs the full pipeline inside
`logclass serve`. Every relay gets its own port, metrics port, buffer directory and log file.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, scrape
from tests.relay.forward_peer import Upstream, free_port

# Fast retries so the fault tests spend their time on faults, not on backoff.
FAST_FORWARD = {"retry": {"initial_ms": 50, "max_ms": 300}, "ack_timeout_s": 3, "connect_timeout_s": 2}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class RelayProcess:
    def __init__(self, workdir: Path, upstreams: list[int], relay: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.metrics_port = free_port()
        self.buffer = workdir / "buffer"
        self.log_path = workdir / "relay.log"
        self.config_path = workdir / "relay.yaml"
        section = {
            "listen": f"127.0.0.1:{self.port}",
            "upstreams": [{"host": "127.0.0.1", "port": p} for p in upstreams],
            "buffer": {"path": str(self.buffer)},
            "forward": FAST_FORWARD,
            "metrics_listen": f"127.0.0.1:{self.metrics_port}",
        }
        self.config = {
            "router": {"tiers": ["regex"], "source_routes": {}},
            "server": {"grace_seconds": 3},
            "relay": merge(section, relay or {}),
        }
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Over the suite's own (tests/conftest.py turns the LLM off by environment, which a config
        # file cannot turn back on).
        self.env: dict[str, str] = {}

    def start(self, timeout: float = 60) -> RelayProcess:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "logclass.cli", "relay", "--config", str(self.config_path)],
                cwd=ROOT,
                env={**os.environ, "HF_HUB_OFFLINE": "1", **self.env},
                stdout=log,
                stderr=log,
            )
        marker = f"relay listening on 127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(marker) >= self.starts:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"relay exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"relay did not start within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def buffered_files(self) -> list[Path]:
        return sorted(self.buffer.glob("*.chunk"))


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Any]:
    """``relays(upstream_ports, **relay_config)``: a started relay, killed at teardown if still running."""
    started: list[RelayProcess] = []

    def make(upstreams: list[int], relay: dict[str, Any] | None = None, start: bool = True) -> RelayProcess:
        workdir = tmp_path / f"relay{len(started)}"
        workdir.mkdir()
        process = RelayProcess(workdir, upstreams, relay)
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    receiver = Upstream().start()
    yield receiver
    receiver.stop()


def report(name: str, sent: list[Any], delivered: list[Any]) -> int:
    """Asserts every sent record was delivered; prints and returns the duplicates (allowed)."""
    missing = set(sent) - set(delivered)
    assert not missing, f"{name}: {len(missing)} of {len(sent)} records lost, e.g. {sorted(missing)[:5]}"
    unexpected = set(delivered) - set(sent)
    assert not unexpected, f"{name}: records nobody sent arrived: {sorted(unexpected)[:5]}"
    distinct = len(set(delivered))
    duplicates = len(delivered) - distinct
    print(f"{name}: sent {len(sent)}, delivered {len(delivered)} ({distinct} distinct, {duplicates} duplicates)")
    return duplicates
