"""A real redis-server on 127.0.0.1 for the store tests (Debian's, which `make test` installs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("REQUIRE_STORE_TESTS") == "1":
            pytest.fail("redis-server is missing, and make test installs it: run make store-deps")
        pytest.skip("no redis-server here (make store-deps installs it; make test requires it)")
    return found


class RedisServer:
    """One redis-server process; ``stop`` and ``start`` keep its port (a restart)."""

    def __init__(self, workdir: Path, password: str | None = None, *, persist: bool = False) -> None:
        """``persist``: an append-only file synced at every write, so a kill loses nothing."""
        self.binary = redis_binary()
        self.workdir = workdir
        self.persist = persist
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        args += ["--dir", str(self.workdir)] + (["--requirepass", self.password] if self.password else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("redis-server did not listen within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
