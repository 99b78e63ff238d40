"""What the benchmarks that start a real `logclass` process share: ports, progress lines, and the
child process itself (log file, metrics scrape, peak RSS, stop)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from logclass.core.decision import LogRecord

# The benchmarks run from a checkout: their data is the repository's, never the installed package's.
ROOT = Path(__file__).resolve().parents[1]
SEED_CSV = ROOT / "training" / "data" / "synthetic_logs.csv"
LOGHUB_DIR = ROOT / "benchmarks" / "data" / "loghub"


def stage(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def finish(result: Mapping[str, Any], ok: bool, json_path: Path | None, strict: bool) -> int:
    """The exit status of a benchmark: results optionally written as JSON; a missed target is news,
    not a failure, unless ``--strict`` asked for one."""
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if strict and not ok else 0


def write_records_csv(fh: TextIO, records: Sequence[LogRecord], repeats: int = 1) -> None:
    """``records`` as an input CSV of `logclass classify` and POST /classify, ``repeats`` times."""
    writer = csv.writer(fh)
    writer.writerow(["source", "log_message"])
    for _ in range(repeats):
        writer.writerows([r.source, r.message] for r in records)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LogclassProcess:
    """``python -m logclass.cli ARGS`` with its output in a temporary log and a metrics port."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], metrics_env: str, name: str) -> None:
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        fd, self.log_path = tempfile.mkstemp(prefix=f"logclass-bench-{name}-", suffix=".log")
        full_env = {**os.environ, **env, metrics_env: self.metrics_url.split("/")[2]}
        cmd = [sys.executable, "-m", "logclass.cli", *args]
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=fd, stderr=subprocess.STDOUT)
        os.close(fd)

    def log_text(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log_text()[-3000:]

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text: str = response.read().decode()
        return text

    def peak_rss_mb(self) -> float:
        return self.status_mib("VmHWM")

    def status_mib(self, key: str) -> float:
        """A memory line of /proc/PID/status (VmRSS, VmHWM), in MiB; 0 when absent."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.log_path)
