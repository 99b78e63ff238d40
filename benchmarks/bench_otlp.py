"""Records/s and request latency through logclass's OTLP front end, against an OTLP pass-through
measured in the same run, with the same sender, upstream and records.

The records are the benchmark mix (seed set + Loghub), sent as OTLP/gRPC ExportLogsServiceRequests
of ``--batch`` records (one ResourceLogs per source, ``service.name`` set), over ``--streams``
concurrent streams, each waiting for a request's answer before sending the next (as an
OpenTelemetry Collector's exporter does). Two set-ups, each a `logclass relay` subprocess with
``otlp.enabled`` exporting over OTLP/gRPC to an upstream in this process:

    pass-through  sender -> receiver -> buffer (fsync) -> exporter -> upstream, the tagger a stub
                  that returns every request untagged (classification off; relay.classify false
                  refuses OTLP, so this is the same process with ``Tagger.tag`` replaced)
    classify      the same with the tagger on the engine (the default bundle), warm cache

Each set-up first sends the whole mix once (the warm-up: it fills the classify caches, and is
reported), then ``--repeat`` passes timed: records/s as answered to the senders (durable in the
buffer) and as delivered to the upstream, and the per-request latency a sender sees, p50 and p99.
The upstream and the senders share this process; the relay runs in its own, so on a small machine
they compete for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LOGCLASS_LLM__BACKEND", "none")  # a warm cache never reaches the LLM
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as OtlpRecord
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from benchmarks import loadgen
from benchmarks.common import finish, free_port, stage
from logclass.core.decision import LogRecord

RATIO_TARGET = 0.5  # classify delivered rec/s over pass-through delivered rec/s, warm
EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
LABEL = "log.record.label"


def encode_requests(records: Sequence[LogRecord], batch: int) -> list[tuple[bytes, int]]:
    """``records`` as serialized ExportLogsServiceRequests of ``batch`` records each."""
    out = []
    for i in range(0, len(records), batch):
        by_source: dict[str, list[OtlpRecord]] = {}
        for record in records[i : i + batch]:
            by_source.setdefault(record.source, []).append(OtlpRecord(body=AnyValue(string_value=record.message)))
        request = ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(
                    resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=source))]),
                    scope_logs=[ScopeLogs(log_records=group)],
                )
                for source, group in by_source.items()
            ]
        )
        out.append((request.SerializeToString(), len(records[i : i + batch])))
    return out


class Upstream:
    """An OTLP/gRPC receiver counting the records it takes (and keeping one to show)."""

    def __init__(self) -> None:
        self.port = 0
        self.records = 0
        self.untagged = 0
        self.sample: dict[str, str] | None = None
        self.want_sample = False
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None

    async def _export(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = ExportLogsServiceRequest.FromString(data)
        n = untagged = 0
        for resource in request.resource_logs:
            for scope in resource.scope_logs:
                for record in scope.log_records:
                    n += 1
                    if self.want_sample and self.sample is None:
                        self.sample = {
                            kv.key: str(getattr(kv.value, kv.value.WhichOneof("value"))) for kv in record.attributes
                        }
                    if self.want_sample and not any(kv.key == LABEL for kv in record.attributes):
                        untagged += 1
        async with self._changed:
            self.records += n
            self.untagged += untagged
            self._changed.notify_all()
        return b""  # an empty ExportLogsServiceResponse: all taken

    async def start(self) -> None:
        self._server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.logs.v1.LogsService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def wait_for(self, records: int, timeout: float = 600) -> float:
        """Waits until ``records`` have arrived in all; the perf_counter then."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.records >= records), timeout)
        return time.perf_counter()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)


class Relay:
    """A `logclass relay` subprocess with the OTLP front end on, exporting to ``upstream``; with
    ``classify`` False the tagger is a stub (this script's ``--serve-pass-through``)."""

    def __init__(self, upstream: int, classify: bool) -> None:
        self.grpc_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="logclass-bench-otlp-"))
        self.log_path = self.workdir / "relay.log"
        env = {
            **os.environ,
            "LOGCLASS_OTLP__ENABLED": "true",
            "LOGCLASS_OTLP__GRPC_LISTEN": f"127.0.0.1:{self.grpc_port}",
            "LOGCLASS_OTLP__HTTP_LISTEN": "null",
            "LOGCLASS_OTLP__UPSTREAM__PROTOCOL": "grpc",
            "LOGCLASS_OTLP__UPSTREAM__ENDPOINT": f"http://127.0.0.1:{upstream}",
            "LOGCLASS_OTLP__BUFFER__PATH": str(self.workdir / "otlp-buffer"),
            # The warm-up must classify every record (not tag it with the fallback label, or leave
            # it pending, after the default budget), or the timed passes would still fill the caches.
            "LOGCLASS_SERVER__INLINE_BUDGET_MS": "600000",
            "LOGCLASS_SERVER__MAX_WAIT_MS": "600000",
        }
        # The Forward relay beside it gets traffic from nobody (an upstream nobody listens on).
        args = ["relay", "--listen", f"127.0.0.1:{free_port()}", "--upstream", f"127.0.0.1:{free_port()}"]
        args += ["--buffer-path", str(self.workdir / "forward-buffer")]
        if classify:
            cmd = [sys.executable, "-m", "logclass.cli", *args]
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-pass-through", *args]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 300) -> float:
        started = time.perf_counter()
        while "otlp listening" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the relay exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the relay did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        return time.perf_counter() - started

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Pass:
    records: int
    answered_s: float
    delivered_s: float
    latencies_ms: list[float]

    @property
    def answered_rps(self) -> float:
        return self.records / self.answered_s

    @property
    def delivered_rps(self) -> float:
        return self.records / self.delivered_s


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def send_pass(
    port: int, requests: list[tuple[bytes, int]], streams: int, upstream: Upstream, repeat: int = 1
) -> Pass:
    """``repeat`` times over ``requests``, ``streams`` at once, each answered before the next."""
    work = requests * repeat
    total = sum(n for _, n in work)
    target = upstream.records + total
    latencies: list[float] = []
    cursor = iter(work)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)

        async def stream() -> None:
            for data, _ in cursor:
                sent = time.perf_counter()
                await export(data, timeout=600)
                latencies.append((time.perf_counter() - sent) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(stream() for _ in range(streams)))
        answered = time.perf_counter()
    delivered = await upstream.wait_for(target)
    return Pass(total, answered - started, delivered - started, latencies)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    records = loadgen.bench_records(args.records)
    requests = encode_requests(records, args.batch)
    upstream = Upstream()
    await upstream.start()
    stage(f"{len(records):,} records in {len(requests)} requests of up to {args.batch}")
    rows: dict[str, dict[str, Any]] = {}
    try:
        for name, classify in (("pass-through", False), ("classify", True)):
            relay = Relay(upstream.port, classify)
            try:
                startup = await asyncio.to_thread(relay.wait_ready)
                stage(f"{name} relay ready after {startup:.1f} s")
                warm = await send_pass(relay.grpc_port, requests, args.streams, upstream)
                stage(f"  warm-up pass: {warm.delivered_rps:,.0f} rec/s delivered")
                upstream.want_sample = classify
                timed = await send_pass(relay.grpc_port, requests, args.streams, upstream, args.repeat)
                stage(f"  {name}: {timed.answered_rps:,.0f} rec/s answered, {timed.delivered_rps:,.0f} rec/s delivered")
                rows[name] = {
                    "answered_rps": timed.answered_rps,
                    "delivered_rps": timed.delivered_rps,
                    "warmup_delivered_rps": warm.delivered_rps,
                    "p50_ms": percentile(timed.latencies_ms, 0.50),
                    "p99_ms": percentile(timed.latencies_ms, 0.99),
                    "startup_s": startup,
                    "peak_rss_mb": relay.peak_rss_mb(),
                }
            finally:
                relay.stop()
    finally:
        await upstream.stop()
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"records": len(records), "batch": args.batch, "streams": args.streams, "repeat": args.repeat},
        "rows": rows,
        "untagged_records": upstream.untagged,
        "sample_record": upstream.sample or {},
    }


def report(result: dict[str, Any]) -> bool:
    m, s, rows = result["machine"], result["settings"], result["rows"]
    print(
        f"machine: {m['cpus']} CPUs, Python {m['python']}; {s['records']:,} records (seed set + Loghub) in "
        f"{s['batch']}-record OTLP/gRPC requests; {s['streams']} streams x {s['repeat']} passes, warm\n"
    )
    print(f"{'':<14}{'answered':>10}{'delivered':>11}{'request ms':>16}{'warm-up':>11}")
    print(f"{'':<14}{'rec/s':>10}{'rec/s':>11}{'p50':>8}{'p99':>8}{'rec/s':>11}")
    for name, r in rows.items():
        print(
            f"{name:<14}{r['answered_rps']:>10,.0f}{r['delivered_rps']:>11,.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
            f"{r['warmup_delivered_rps']:>11,.0f}"
        )
    passthrough, classify = rows["pass-through"], rows["classify"]
    ratio = classify["delivered_rps"] / passthrough["delivered_rps"]
    print(f"\nratio (delivered rec/s): classify / pass-through {ratio:.2f}")
    print(
        f"relay start: pass-through {passthrough['startup_s']:.1f} s, classify {classify['startup_s']:.1f} s; "
        f"peak RSS: pass-through {passthrough['peak_rss_mb']:,.0f} MB, classify {classify['peak_rss_mb']:,.0f} MB"
    )
    print(f"records the classify upstream got without {LABEL}: {result['untagged_records']:,}")
    print(f"a record's attributes as the upstream got them: {result['sample_record']}")
    ok: bool = ratio >= RATIO_TARGET and result["untagged_records"] == 0
    verdict = "PASS" if ok else "FAIL"
    print(f"\n{verdict}  classify, warm: >= {RATIO_TARGET}x the pass-through's delivered rec/s, all tagged")
    return ok


def serve_pass_through(argv: Sequence[str]) -> int:
    """`logclass relay ARGV` with the OTLP tagger replaced by one returning requests untagged."""
    from logclass.cli import main as cli_main
    from logclass.otlp import tagger

    async def untagged(
        self: tagger.Tagger, request: ExportLogsServiceRequest, owner: object, time_remaining: float | None = None
    ) -> tagger.Tagged:
        return tagger.Tagged(request)

    tagger.Tagger.tag = untagged  # type: ignore[method-assign]
    return cli_main(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-pass-through"]:
        return serve_pass_through(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=4, help="concurrent sender streams")
    parser.add_argument("--batch", type=int, default=100, help="records per ExportLogsServiceRequest")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the mix, after the warm-up")
    parser.add_argument("--records", type=int, default=0, help="use only the first N records (0: all)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    return finish(result, report(result), args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
