"""Records/s and added latency through the Forward-protocol relay, against baselines measured in
the same run, with the same sender, upstream and records.

The records are the benchmark mix (seed set + Loghub), sent as PackedForward requests of 1,000
records with a ``chunk`` option, each connection waiting for a request's ack before sending the
next, as Fluent Bit does with ``Require_ack_response On``. Three set-ups:

    direct        sender -> upstream                                   (the floor: no relay)
    pass-through  sender -> `logclass relay --no-classify` -> upstream (decode, fsync'd buffer, forward)
    classify      sender -> `logclass relay` -> upstream               (the full pipeline, warm cache)

For each: a loaded phase (``--connections`` senders at once, ``--repeat`` passes over the mix) gives
records/s, both as acked to the senders and as delivered to (and acked by) the upstream; a serial
phase (one connection, one request in flight) gives the latency a sender sees per request, p50 and
p99. The classify relay first makes one cold pass that fills its caches; it is reported, not
compared. The upstream and the senders share this process; the relay runs in its own, so on a small
machine the three compete for the same cores, as a sidecar does with its neighbours.

Then the hold phase (benchmarks/relay_hold.py): records of new templates routed to an LLM (a stub
answering after ``--llm-latency-ms``) mixed into a steady stream of known records, through a
classifying relay with ``relay.hold`` on and off, in the same run: the share of new-template records
stored with tier ``pending``, their delivery time, and the known records' delivery latency.
``--hold-only`` runs that phase alone, ``--no-hold`` leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The LLM tier is off unless LOGCLASS_LLM__BACKEND says otherwise: a warm cache never reaches it,
# and loading one would only slow the start.
os.environ.setdefault("LOGCLASS_LLM__BACKEND", "none")
# Run as a script, which puts benchmarks/, not the project root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack

from benchmarks import loadgen
from benchmarks.common import LogclassProcess, finish, free_port, stage
from benchmarks.relay_hold import add_arguments, measure_hold, percentile, report_hold
from logclass.core.decision import LogRecord

RPS_TARGET = 20_000.0  # records/s delivered through the classifying relay, warm, 1,000-record chunks
CHUNK_RECORDS = 1000
TAG = "bench.app"


class Upstream:
    """The next hop: a Forward server that acks every chunk and counts records by its `size`
    option (the relay always sets it), decoding one request fully to show what arrived."""

    def __init__(self) -> None:
        self.records = 0
        self.sample: dict[str, Any] | None = None
        self.want_sample = False  # set: decode the next request's first record into `sample`
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The run is over (cancelled), or the relay went away: either way nothing more to count.
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._read_requests(reader, writer)
        writer.close()

    async def _read_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
        while data := await reader.read(256 * 1024):
            unpacker.feed(data)
            acks = []
            for request in unpacker:
                option = request[2] if len(request) > 2 and isinstance(request[2], dict) else {}
                self.records += int(option.get("size", 0))
                if self.want_sample:
                    self.want_sample = False
                    entries = msgpack.Unpacker(raw=False)
                    entries.feed(request[1])
                    self.sample = next(entries)[1]
                if option.get("chunk"):
                    acks.append(msgpack.packb({"ack": option["chunk"]}))
            if acks:
                writer.write(b"".join(acks))

    async def wait_for(self, records: int, timeout: float = 600) -> float:
        """Waits until ``records`` have arrived; returns when (perf_counter)."""
        deadline = time.perf_counter() + timeout
        while self.records < records:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"upstream got {self.records} of {records} records")
            await asyncio.sleep(0.002)
        return time.perf_counter()


@dataclass
class PassResult:
    records: int
    acked_s: float
    delivered_s: float
    latencies: list[float] = field(default_factory=list)

    @property
    def acked_rps(self) -> float:
        return self.records / self.acked_s if self.acked_s else 0.0

    @property
    def delivered_rps(self) -> float:
        return self.records / self.delivered_s if self.delivered_s else 0.0


def encode_streams(records: Sequence[LogRecord]) -> list[tuple[bytes, int]]:
    """MessagePackEventStreams of CHUNK_RECORDS records: what Fluent Bit's tail input would send."""
    packer = msgpack.Packer(use_bin_type=True)
    now = int(time.time())
    stamp = msgpack.ExtType(0, now.to_bytes(4, "big") + (0).to_bytes(4, "big"))
    out = []
    for i in range(0, len(records), CHUNK_RECORDS):
        part = records[i : i + CHUNK_RECORDS]
        out.append((b"".join(packer.pack([stamp, {"log": r.message, "source": r.source}]) for r in part), len(part)))
    return out


async def send_pass(
    port: int, streams: list[tuple[bytes, int]], connections: int, upstream: Upstream, repeat: int = 1
) -> PassResult:
    work = [s for _ in range(repeat) for s in streams]
    requests: asyncio.Queue[tuple[bytes, str, int]] = asyncio.Queue()
    for stream, size in work:
        chunk = base64.b64encode(uuid.uuid4().bytes).decode()
        requests.put_nowait((msgpack.packb([TAG, stream, {"chunk": chunk, "size": size}]), chunk, size))
    total = sum(size for _, size in work)
    latencies: list[float] = []
    target = upstream.records + total

    async def sender() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        unpacker = msgpack.Unpacker(raw=False)
        while not requests.empty():
            data, chunk, _ = requests.get_nowait()
            sent = time.perf_counter()
            writer.write(data)
            await writer.drain()
            while True:
                response = next(unpacker, None)
                if response is not None:
                    if response.get("ack") == chunk:
                        break
                    continue
                incoming = await reader.read(65536)
                if not incoming:
                    raise ConnectionError("the relay closed the connection")
                unpacker.feed(incoming)
            latencies.append(time.perf_counter() - sent)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(connections)))
    acked = time.perf_counter() - started
    delivered = await upstream.wait_for(target) - started
    return PassResult(total, acked, delivered, latencies)


class Relay(LogclassProcess):
    """A `logclass relay` subprocess for the length of one set-up; ``env`` overrides its settings."""

    def __init__(self, upstream: int, classify: bool, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.buffer = tempfile.mkdtemp(prefix="logclass-bench-relay-")
        args = ["relay", "--listen", f"127.0.0.1:{self.port}"]
        args += ["--upstream", f"127.0.0.1:{upstream}", "--buffer-path", self.buffer]
        if not classify:
            args.append("--no-classify")
        settings = {
            "LOGCLASS_RELAY__SOURCE_KEY": "source",
            # The cold pass must classify every record (not forward it with the fallback label after
            # the default 5 s), or the "warm" passes would still be filling the caches.
            "LOGCLASS_RELAY__CLASSIFY_TIMEOUT_MS": "600000",
            # Nor with tier "pending" after the default budget (server.inline_budget_ms).
            "LOGCLASS_RELAY__BUDGET_MS": "600000",
            **(env or {}),
        }
        super().__init__(args, settings, "LOGCLASS_RELAY__METRICS_LISTEN", "relay")

    def wait_ready(self, timeout: float = 300) -> float:
        started = time.perf_counter()
        while f"relay listening on 127.0.0.1:{self.port}" not in self.log_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the relay exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the relay did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        return time.perf_counter() - started

    def fallback_records(self) -> float:
        """Records the relay forwarded unclassified (pipeline too slow or failing): 0 in a fair run."""
        text = self.metrics_text()
        return sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("logclass_relay_fallback_records_total")
        )

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.buffer, ignore_errors=True)  # held chunks live in a folder of it


async def measure_setup(
    name: str, port: int, upstream: Upstream, streams: list[tuple[bytes, int]], args: argparse.Namespace
) -> dict[str, Any]:
    loaded = await send_pass(port, streams, args.connections, upstream, args.repeat)
    stage(
        f"  {name}: {loaded.acked_rps:,.0f} rec/s acked, {loaded.delivered_rps:,.0f} rec/s delivered "
        f"({args.connections} connections, {loaded.records:,} records)"
    )
    serial = await send_pass(port, streams[: args.serial_chunks], 1, upstream)
    p50, p99 = percentile(serial.latencies, 50) * 1000, percentile(serial.latencies, 99) * 1000
    stage(f"  {name}: serial ack latency p50 {p50:.1f} ms, p99 {p99:.1f} ms per {CHUNK_RECORDS}-record request")
    return {
        "acked_rps": loaded.acked_rps,
        "delivered_rps": loaded.delivered_rps,
        "loaded_p50_ms": percentile(loaded.latencies, 50) * 1000,
        "loaded_p99_ms": percentile(loaded.latencies, 99) * 1000,
        "serial_p50_ms": p50,
        "serial_p99_ms": p99,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    if not args.hold_only:
        result.update(await measure_throughput(loadgen.bench_records(args.records), args))
    if not args.no_hold:
        result["hold"] = await measure_hold(lambda port, env: Relay(port, True, env), args)
    return result


async def measure_throughput(records: Sequence[LogRecord], args: argparse.Namespace) -> dict[str, Any]:
    streams = encode_streams(records)
    upstream = Upstream()
    await upstream.start()
    rows: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    stage(f"{len(records):,} records in {len(streams)} requests; direct to the upstream")
    rows["direct"] = await measure_setup("direct", upstream.port, upstream, streams, args)
    for name, classify in (("pass-through", False), ("classify", True)):
        relay = Relay(upstream.port, classify)
        try:
            startup = await asyncio.to_thread(relay.wait_ready)
            stage(f"{name} relay ready after {startup:.1f} s")
            if classify:
                cold = await send_pass(relay.port, streams, args.connections, upstream)
                extra["classify_cold_delivered_rps"] = cold.delivered_rps
                stage(f"  cold pass (fills the caches): {cold.delivered_rps:,.0f} rec/s delivered")
            upstream.want_sample = classify
            rows[name] = await measure_setup(name, relay.port, upstream, streams, args)
            rows[name]["startup_s"] = startup
            rows[name]["peak_rss_mb"] = relay.peak_rss_mb()
            rows[name]["fallback_records"] = relay.fallback_records()
        finally:
            relay.stop()
    await upstream.stop()
    sample = upstream.sample or {}
    return {
        "settings": {
            "records": len(records),
            "chunk_records": CHUNK_RECORDS,
            "connections": args.connections,
            "repeat": args.repeat,
            "serial_chunks": args.serial_chunks,
        },
        "rows": rows,
        **extra,
        "sample_record": {k: v for k, v in sample.items() if k != "log"},
    }


def report(result: dict[str, Any]) -> bool:
    ok = True
    if "rows" in result:
        ok = report_throughput(result)
    else:
        m = result["machine"]
        print(f"machine: {m['cpus']} CPUs, Python {m['python']}")
    if "hold" in result:
        ok = report_hold(result["hold"]) and ok
    return ok


def report_throughput(result: dict[str, Any]) -> bool:
    m, s, rows = result["machine"], result["settings"], result["rows"]
    print(
        f"machine: {m['cpus']} CPUs, Python {m['python']}; {s['records']:,} records (seed set + Loghub) in "
        f"{s['chunk_records']:,}-record PackedForward requests with chunk/ack; {s['connections']} connections x "
        f"{s['repeat']} passes loaded, 1 connection serial\n"
    )
    print(f"{'':<14}{'acked':>10}{'delivered':>11}{'loaded ack ms':>16}{'serial ack ms':>16}")
    print(f"{'':<14}{'rec/s':>10}{'rec/s':>11}{'p50':>8}{'p99':>8}{'p50':>8}{'p99':>8}")
    for name, r in rows.items():
        print(
            f"{name:<14}{r['acked_rps']:>10,.0f}{r['delivered_rps']:>11,.0f}{r['loaded_p50_ms']:>8.1f}"
            f"{r['loaded_p99_ms']:>8.1f}{r['serial_p50_ms']:>8.1f}{r['serial_p99_ms']:>8.1f}"
        )
    direct, passthrough, classify = rows["direct"], rows["pass-through"], rows["classify"]
    print(f"\nclassify, cold pass: {result['classify_cold_delivered_rps']:,.0f} rec/s delivered (fills the caches)")
    rps = {name: r["delivered_rps"] for name, r in rows.items()}
    print(
        f"ratios (delivered rec/s): classify / pass-through {rps['classify'] / rps['pass-through']:.2f}, "
        f"classify / direct {rps['classify'] / rps['direct']:.2f}, "
        f"pass-through / direct {rps['pass-through'] / rps['direct']:.2f}"
    )
    print(
        "added serial ack latency per request, classify vs direct: "
        f"p50 +{classify['serial_p50_ms'] - direct['serial_p50_ms']:.1f} ms, "
        f"p99 +{classify['serial_p99_ms'] - direct['serial_p99_ms']:.1f} ms "
        f"(of which classification vs pass-through: p50 +{classify['serial_p50_ms'] - passthrough['serial_p50_ms']:.1f}"
        f" ms)"
    )
    print(
        f"relay start: pass-through {passthrough['startup_s']:.1f} s, classify {classify['startup_s']:.1f} s; "
        f"peak RSS: pass-through {passthrough['peak_rss_mb']:,.0f} MB, classify {classify['peak_rss_mb']:,.0f} MB"
    )
    print(
        f"records forwarded with the fallback label (pipeline too slow or failing): {classify['fallback_records']:,.0f}"
    )
    print(f"a record as the upstream got it (log field left out): {result['sample_record']}")
    ok: bool = rps["classify"] >= RPS_TARGET
    print(f"\n{'PASS' if ok else 'FAIL'}  classify, warm: >= {RPS_TARGET:,.0f} rec/s delivered through the relay")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=4, help="concurrent senders in the loaded phase")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the mix in the loaded phase")
    parser.add_argument("--serial-chunks", type=int, default=30, help="requests timed one at a time")
    parser.add_argument("--records", type=int, default=0, help="use only the first N records (0: all)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    phases = parser.add_mutually_exclusive_group()
    phases.add_argument("--hold-only", action="store_true", help="run the hold phase alone")
    phases.add_argument("--no-hold", action="store_true", help="leave the hold phase out")
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    return finish(result, report(result), args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
