"""Hostile input against one real `logclass serve` (gRPC, HTTP and the Forward relay on the packaged
embedding bundle), while a warm caller keeps classifying known records over gRPC.

Each case prints what the sidecar answered, how far its peak RSS rose above the RSS before the
case (the target: under 64 MiB for anything within the limits), and the warm caller's p50 and
p99 during the case, against a baseline window measured first in the same run.

    python benchmarks/bench_hostile.py [--json OUT]      (make bench-hostile)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
import msgpack

from benchmarks.common import LogclassProcess, finish, free_port, stage
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc

TARGET_MIB = 64
KNOWN = [
    ("ModernCRM", "User User123 logged in."),
    ("BillingSystem", "Backup completed successfully."),
    ("ModernHR", "GET /v2/servers/detail HTTP/1.1 RCODE 200 len: 1583"),
]


class AckingUpstream:
    """The relay's next hop: a Forward server that acks every chunk."""

    def __init__(self) -> None:
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self._listener.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(1 << 16):
                unpacker.feed(data)
                for request in unpacker:
                    option = request[-1] if isinstance(request[-1], dict) else {}
                    if option.get("chunk"):
                        conn.sendall(msgpack.packb({"ack": option["chunk"]}))


class Sidecar(LogclassProcess):
    def __init__(self, upstream: int) -> None:
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = free_port()
        self.relay = free_port()
        env = {
            "LOGCLASS_LLM__BACKEND": "none",
            "LOGCLASS_RELAY__ENABLED": "true",
            "LOGCLASS_RELAY__LISTEN": f"127.0.0.1:{self.relay}",
            "LOGCLASS_RELAY__UPSTREAMS": f"[{{host: 127.0.0.1, port: {upstream}}}]",
            "LOGCLASS_RELAY__BUFFER__PATH": tempfile.mkdtemp(prefix="logclass-bench-hostile-"),
            "LOGCLASS_RELAY__IDLE_TIMEOUT_S": "3",
            "LOGCLASS_SERVER__HTTP_HEADER_TIMEOUT_S": "2",
        }
        args = ["serve", "--listen", self.grpc, "--http-listen", f"127.0.0.1:{self.http}"]
        super().__init__(args, env, "LOGCLASS_SERVER__METRICS_LISTEN", "hostile")

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"logclass serve exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.http}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"logclass serve not ready:\n{self.log_tail()}")

    def rss(self, key: str = "VmRSS") -> float:
        return self.status_mib(key)


def _warm_calls(address: str, stop: Any, out: Any) -> None:
    """The warm caller's process: known records over gRPC, back to back, until ``stop``; then
    each call's (end time, seconds) and the failures go back through ``out``."""
    request = pb.ClassifyRequest(records=[pb.LogRecord(source=s, message=m) for s, m in KNOWN])
    calls: list[tuple[float, float]] = []
    failed = 0
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
        while not stop.is_set():
            started = time.perf_counter()
            try:
                stub.Classify(request, timeout=10)
            except grpc.RpcError:
                failed += 1
            calls.append((time.perf_counter(), time.perf_counter() - started))
    out.send((calls, failed))


class WarmCaller:
    """A caller of known records in its own process: the attacks, built and sent from this one,
    must not hold its interpreter lock, or their client-side cost would count as the sidecar's.
    ``perf_counter`` is CLOCK_MONOTONIC, shared by both processes."""

    def __init__(self, address: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, child = context.Pipe(duplex=False)
        self._process = context.Process(target=_warm_calls, args=(address, self._stop, child), daemon=True)
        self._process.start()
        self.calls: list[tuple[float, float]] = []
        self.failed = 0

    def stop(self) -> None:
        self._stop.set()
        if self._results.poll(30):
            self.calls, self.failed = self._results.recv()
        else:
            self.failed = -1  # the caller never answered: count it as failing
        self._process.join(timeout=5)

    def window(self, start: float, end: float) -> tuple[float, float, int]:
        """p50 and p99 in ms of the calls that ended in [start, end], and their number."""
        seconds = sorted(s for t, s in self.calls if start <= t <= end)
        if not seconds:
            return 0.0, 0.0, 0
        p99 = seconds[min(len(seconds) - 1, round(0.99 * (len(seconds) - 1)))]
        return statistics.median(seconds) * 1000, p99 * 1000, len(seconds)


def _closed(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 16):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def _relay_send(port: int, data: bytes, timeout: float = 30) -> str:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        return "connection closed" if _closed(sock, timeout) else "connection still open"


def _packed(stream: bytes, option: dict[str, Any] | None = None) -> bytes:
    return b"\x93\xa3tag\xc6" + len(stream).to_bytes(4, "big") + stream + bytes(msgpack.packb(option or {}))


def _empties(empty: bytes) -> bytes:
    entry = b"\x92\x01\x81\xa1k\xdd" + (2048).to_bytes(4, "big") + empty * 2048
    return _packed(entry * 900)


def cases(side: Sidecar) -> dict[str, Callable[[], str]]:
    http = f"http://127.0.0.1:{side.http}"

    def many_connections() -> str:
        socks = [socket.create_connection(("127.0.0.1", side.relay)) for _ in range(80)]
        try:
            time.sleep(0.5)
            refused = sum(_closed(s, 0.05) for s in socks)
            # At least 16: connections of the cases before may still be closing.
            return f"{refused} of 80 closed at once (max_connections 64)"
        finally:
            for s in socks:
                s.close()

    def slowloris() -> str:
        socks = [socket.create_connection(("127.0.0.1", side.http)) for _ in range(50)]
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = sum(_closed(s, 10) for s in socks)
        for s in socks:
            s.close()
        return f"{closed} of 50 closed by server.http_header_timeout_s"

    def big_request(records: int, size: int) -> set[int]:
        with grpc.insecure_channel(side.grpc, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
            batch = [pb.LogRecord(source="s" * size, message="User User1 logged in.") for _ in range(records)]
            return {r.error for r in stub.Classify(pb.ClassifyRequest(records=batch), timeout=30).results}

    def one_big_request() -> str:
        errors = big_request(3, (15 << 20) // 3)
        return f"error {', '.join(pb.ErrorCode.Name(e) for e in sorted(errors))}"

    def long_sources() -> str:
        before = side.rss()
        errors: set[int] = set()
        for _ in range(67):
            errors |= big_request(3, 4 << 20)
        kept = side.rss() - before
        return f"{', '.join(pb.ErrorCode.Name(e) for e in sorted(errors))}; RSS after {kept:+.0f} MiB"

    def at_the_limits() -> str:
        record = pb.LogRecord(source="s" * 1024, message="m" * 65536)
        with grpc.insecure_channel(side.grpc, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
            results = stub.Classify(pb.ClassifyRequest(records=[record] * 100), timeout=60)
        return f"100 records classified, errors: {sum(1 for r in results.results if r.error)}"

    def formula_upload() -> str:
        response = httpx.post(
            f"{http}/classify", files={"file": ("a.csv", b"source,log_message\na,=cmd|' /C calc'!A0\n")}
        )
        return f"{response.status_code}, cell written as {response.text.splitlines()[1].split(',')[1]}"

    def bad_codec() -> str:
        response = httpx.post(f"{http}/classify", params={"encoding": "zlib_codec"}, files={"file": ("a.csv", b"x")})
        return f"{response.status_code}"

    def cross_site() -> str:
        response = httpx.post(f"{http}/v1/classify", json={"records": []}, headers={"Origin": "https://evil.example"})
        return f"{response.status_code}"

    return {
        "relay: 1.8 MB of empty arrays in records": lambda: _relay_send(side.relay, _empties(b"\x90")),
        "relay: 1.8 MB of empty maps in records": lambda: _relay_send(side.relay, _empties(b"\x80")),
        "relay: 8 headers claiming 16M elements": lambda: _relay_send(
            side.relay, b"\x92\xa3tag" + b"\xdd\x01\x00\x00\x00" * 8
        ),
        "relay: 1,022 open arrays of 2,048, never finished": lambda: _relay_send(
            side.relay, b"\x92\xa3tag" + b"\xdc\x08\x00" * 1022
        ),
        "relay: 64 KB gzip bomb (64 MiB inflated)": lambda: _relay_send(
            side.relay, _packed(gzip.compress(b"\x90" * (64 << 20)), {"compressed": "gzip"})
        ),
        "relay: 80 connections at once": many_connections,
        "grpc: one 15 MiB request, 3 sources of 5 MiB": one_big_request,
        "grpc: 200 records with 4 MiB sources, 67 requests": long_sources,
        "grpc: 100 records at the limits (64 KiB message, 1 KiB source)": at_the_limits,
        "http: 50 slowloris connections": slowloris,
        "http: CSV cell =cmd|' /C calc'!A0": formula_upload,
        "http: encoding zlib_codec": bad_codec,
        "http: cross-site POST without a token": cross_site,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a case passes the memory target")
    args = parser.parse_args(argv)
    upstream = AckingUpstream()
    side = Sidecar(upstream.port)
    stage("starting logclass serve (embedding bundle, relay on, LLM off)")
    try:
        side.wait_ready()
        warm = WarmCaller(side.grpc)
        time.sleep(3)  # caches warm
        base_start = time.perf_counter()
        time.sleep(5)
        base_end = time.perf_counter()
        rows: list[dict[str, Any]] = []
        spans: list[tuple[float, float]] = []
        for name, attack in cases(side).items():
            stage(f"case: {name}")
            Path(f"/proc/{side.proc.pid}/clear_refs").write_text("5")  # VmHWM back to the RSS now
            before = side.rss()
            start = time.perf_counter()
            answer = attack()
            spans.append((start, time.perf_counter()))
            grown = side.rss("VmHWM") - before
            rows.append({"case": name, "answer": answer, "rss_mib": round(grown, 1)})
            stage(f"  {answer}; peak RSS {grown:+.1f} MiB")
        warm.stop()
        base_p50, base_p99, base_n = warm.window(base_start, base_end)
        print(f"{'case':<62} {'answer':<48} {'RSS +MiB':>8} {'warm p50':>8} {'p99 ms':>7}")
        print(f"{'baseline (no attack, 5 s)':<62} {'':<48} {'':>8} {base_p50:>8.2f} {base_p99:>7.2f}")
        for row, (start, end) in zip(rows, spans, strict=True):
            row["p50_ms"], row["p99_ms"], row["calls"] = warm.window(start, end)
            print(
                f"{row['case']:<62} {row['answer'][:48]:<48} {row['rss_mib']:>8.1f} "
                f"{row['p50_ms']:>8.2f} {row['p99_ms']:>7.2f}"
            )
        worst = max(r["rss_mib"] for r in rows)
        print(f"worst peak RSS growth {worst:.1f} MiB (target < {TARGET_MIB}); warm calls failed: {warm.failed}")
        ok = worst < TARGET_MIB and warm.failed == 0 and side.proc.poll() is None
        result = {"baseline": {"p50_ms": base_p50, "p99_ms": base_p99, "calls": base_n}, "cases": rows, "ok": ok}
        return finish(result, ok, args.json, args.strict)
    finally:
        side.stop()


if __name__ == "__main__":
    sys.exit(main())
