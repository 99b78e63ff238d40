"""The hold phase of `make bench-relay`: records of new LLM-routed templates mixed into known traffic,
through a classifying relay with the hold on (``relay.hold.max_s`` and ``llm_max_s`` 30 s) and off
(``max_s`` 0), in the same run, with the same records.

The relay gets the LLM tier (``router.tiers`` [regex, memory, embedding, llm]) pointed at a stub
OpenAI-compatible server on 127.0.0.1, a thread of the benchmark that answers each question after
``--llm-latency-ms`` (1.5 s: a CPU LLM) with one of the labels the request allows. The default
bundle routes source ``LegacyCRM`` straight to the LLM, so a LegacyCRM line of a new template takes
at least that long to decide, far past any budget. ``relay.budget_ms`` is left at its default: 0
with the hold on (a record of a new template waits in the buffer, not in its request), the 250 ms
of ``server.inline_budget_ms`` with it off. Per mode:

1. warm-up: a sample of seed lines (LegacyCRM left out) goes through the relay once; those it
   forwards with tier regex or memory (decided on every record, never by a model) are the known
   records (chosen in the first mode, the same in the second); then the LLM is left idle;
2. the stream: one request every ``--hold-interval-ms`` for ``--hold-seconds``, each of
   ``--hold-known`` known records, and ``--hold-new`` (40) of them also carry one LegacyCRM line of
   a new template, spread evenly; up to 4 connections, each waiting for a request's ack before the
   next, as Fluent Bit does;
3. the upstream, a Forward server in this process, notes when each record arrives and its tier.

A record's delivery latency runs from when the stream produced its request (so time queued at the
sender counts) to its arrival at the upstream. Reported per mode: the share of new-template records
stored with tier ``pending`` (target 0 with the hold on), their delivery time (their hold), the
known records' delivery latency (target: the hold changes nothing), and the relay's
``logclass_relay_hold_records_total`` by outcome over the stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import gzip
import itertools
import json
import random
import re
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import msgpack

from benchmarks.common import SEED_CSV, free_port, stage

LLM_SOURCE = "LegacyCRM"  # the default bundle's router.source_routes sends it straight to the LLM
TAG = "bench.hold"
FAST_TIERS = ("regex", "memory")
# relay.budget_ms as its default gives it: 0 with the hold, else server.inline_budget_ms.
BUDGET_MS = {"on": 0, "off": 250}
HOLD_OUTCOMES = ("labelled", "pending", "hold_full")
CONNECTIONS = 4
WARM_REQUEST_RECORDS = 100
# Known records' p99 with the hold on counts as unchanged within this much of the hold off's.
NOISE_MS, NOISE_RATIO = 25.0, 0.25


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- the LLM stand-in ----------------------------------------------------------------------------


class LlmStub(ThreadingHTTPServer):
    """OpenAI-compatible chat completions on 127.0.0.1 answering after ``latency_s`` (in the
    handler's thread: questions asked at once wait side by side, as on a server with free slots),
    with a label the request allows, chosen by a checksum of the question."""

    daemon_threads = True

    def __init__(self, latency_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.latency_s = latency_s
        self.calls = 0
        self.in_flight = 0
        self._last_answer = time.monotonic()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="llm-stub", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL, as ``llm.server.url`` takes it."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def begin(self) -> None:
        with self._lock:
            self.calls += 1
            self.in_flight += 1

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self._last_answer = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since the last answer with none in flight; 0 while one is."""
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self._last_answer

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)


class _StubHandler(BaseHTTPRequestHandler):
    server: LlmStub
    protocol_version = "HTTP/1.1"  # keep-alive, as the relay's HTTP client expects
    # TCP_NODELAY on each accepted socket: headers and body are two writes, and with Nagle the body
    # would wait for the client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Mapping[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._reply(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        else:
            self._reply(404, {"error": {"message": f"no {self.path} here"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._reply(404, {"error": {"message": f"no {self.path} here"}})
            return
        try:
            question = str(body["messages"][-1]["content"])
            choices = [str(c) for c in body["structured_outputs"]["choice"]]
            choice = choices[zlib.crc32(question.encode("utf-8", "replace")) % len(choices)]
        except (KeyError, IndexError, TypeError, ZeroDivisionError):
            self._reply(400, {"error": {"message": "want messages and a non-empty structured_outputs.choice"}})
            return
        self.server.begin()
        try:
            time.sleep(self.server.latency_s)  # the model's time, in this handler's thread only
        finally:
            self.server.end()
        self._reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": choice}}]})


# --- the upstream and the sender -------------------------------------------------------------------


@dataclass(slots=True)
class Arrival:
    at: float  # perf_counter
    tier: str | None
    label: str | None


class RecordingUpstream:
    """A Forward server that acks every chunk and notes, per record (by its ``seq`` key), when it
    arrived and with which tier and label."""

    def __init__(self) -> None:
        self.arrivals: dict[int, Arrival] = {}
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
            while data := await reader.read(256 * 1024):
                unpacker.feed(data)
                acks = []
                for request in unpacker:
                    now = time.perf_counter()
                    option = request[2] if len(request) > 2 and isinstance(request[2], dict) else {}
                    for record in _records(request[1], option):
                        seq = record.get("seq")
                        if isinstance(seq, int):
                            self.arrivals[seq] = Arrival(now, record.get("log_label_tier"), record.get("log_label"))
                    if option.get("chunk"):
                        acks.append(msgpack.packb({"ack": option["chunk"]}))
                if acks:
                    writer.write(b"".join(acks))
        writer.close()

    async def wait_for(self, seqs: Iterable[int], timeout: float) -> bool:
        """Whether every one of ``seqs`` arrived within ``timeout`` seconds."""
        wanted = set(seqs)
        deadline = time.perf_counter() + timeout
        while not wanted.issubset(self.arrivals):
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


def _records(entries: Any, option: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The records of a Forward request: PackedForward (gzip'd or not) or Forward mode."""
    if isinstance(entries, bytes):
        if option.get("compressed") == "gzip":
            entries = gzip.decompress(entries)
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(entries)
        entries = list(unpacker)
    if isinstance(entries, list):
        return [entry[1] for entry in entries if isinstance(entry, list) and isinstance(entry[1], dict)]
    return []


Request = list[dict[str, Any]]  # records, each with its seq


class ForwardConnection:
    """One sender connection: a PackedForward request with ``chunk``, then its ack."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._unpacker = msgpack.Unpacker(raw=False)
        self._packer = msgpack.Packer(use_bin_type=True)

    @classmethod
    async def open(cls, port: int) -> ForwardConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, records: Request) -> None:
        now = time.time()
        stamp = msgpack.ExtType(0, int(now).to_bytes(4, "big") + int(now % 1 * 1e9).to_bytes(4, "big"))
        stream = b"".join(self._packer.pack([stamp, r]) for r in records)
        chunk = base64.b64encode(uuid.uuid4().bytes).decode()
        self._writer.write(msgpack.packb([TAG, stream, {"chunk": chunk, "size": len(records)}]))
        await self._writer.drain()
        while True:
            for response in self._unpacker:
                if isinstance(response, dict) and response.get("ack") == chunk:
                    return
            incoming = await self._reader.read(65536)
            if not incoming:
                raise ConnectionError("the relay closed the connection")
            self._unpacker.feed(incoming)

    def close(self) -> None:
        self._writer.close()


async def send_paced(port: int, requests: Sequence[Request], interval_s: float, sent_at: dict[int, float]) -> None:
    """Produces one request every ``interval_s``, sent by the first of CONNECTIONS senders free;
    ``sent_at`` gets each record's production time (perf_counter)."""
    queue: asyncio.Queue[Request | None] = asyncio.Queue()

    async def sender() -> None:
        connection = await ForwardConnection.open(port)
        try:
            while (request := await queue.get()) is not None:
                await connection.send(request)
        finally:
            connection.close()

    senders = [asyncio.create_task(sender()) for _ in range(CONNECTIONS)]
    started = time.perf_counter()
    for i, request in enumerate(requests):
        delay = started + i * interval_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        for record in request:
            sent_at[record["seq"]] = now
        queue.put_nowait(request)
    for _ in senders:
        queue.put_nowait(None)
    await asyncio.gather(*senders)


# --- the records -----------------------------------------------------------------------------------

# Words of the new LegacyCRM lines: each line a combination none of the others (nor the seed) has,
# so each is a template of its own (the number in it is masked).
_NEW_WORDS = (
    ("quote", "invoice", "lead", "contact", "campaign", "ticket", "account", "contract"),
    ("replication", "reconciliation", "export", "merge", "dedupe", "rollup", "archival", "resync"),
    ("ledger", "gateway", "mailer", "scheduler", "indexer", "bridge", "adapter", "spooler"),
)


def new_lines(n: int, seed: int = 31) -> list[str]:
    combos = list(itertools.product(*_NEW_WORDS))
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} new templates")
    random.Random(seed).shuffle(combos)
    return [
        f"Legacy {a} {b} stalled in the {c} at step {i + 17}, awaiting the operator"
        for i, (a, b, c) in enumerate(combos[:n])
    ]


def seed_candidates(n: int, seed: int = 31) -> list[tuple[str, str]]:
    """``n`` seed lines (source, message), LegacyCRM left out: the known records are among them."""
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        rows = [(r["source"], r["log_message"]) for r in csv.DictReader(fh) if r["source"] != LLM_SOURCE]
    return random.Random(seed).sample(rows, min(n, len(rows)))


@dataclass
class Plan:
    requests: list[Request]
    known: list[int] = field(default_factory=list)  # seqs
    shared: set[int] = field(default_factory=set)  # known seqs in a request with a new record
    new: list[int] = field(default_factory=list)


def plan_stream(known: Sequence[tuple[str, str]], new: Sequence[str], n_requests: int, per_request: int) -> Plan:
    plan = Plan([])
    seqs = itertools.count(1_000_000)
    lines = itertools.cycle(known)
    with_new = {min(n_requests - 1, int((j + 0.5) * n_requests / len(new))): line for j, line in enumerate(new)}
    if len(with_new) < len(new):
        raise ValueError(f"{len(new)} new records do not fit {n_requests} requests")
    for i in range(n_requests):
        request: Request = []
        for _ in range(per_request):
            source, message = next(lines)
            seq = next(seqs)
            request.append({"log": message, "source": source, "seq": seq})
            plan.known.append(seq)
        if i in with_new:
            seq = next(seqs)
            record = {"log": with_new[i], "source": LLM_SOURCE, "seq": seq}
            request.insert(len(request) // 2, record)
            plan.new.append(seq)
            plan.shared.update(r["seq"] for r in request if r is not record)
        plan.requests.append(request)
    return plan


# --- the phase -------------------------------------------------------------------------------------


class RelayLike(Protocol):
    port: int

    def wait_ready(self, timeout: float = ...) -> float: ...
    def metrics_text(self) -> str: ...
    def fallback_records(self) -> float: ...
    def stop(self) -> None: ...


StartRelay = Callable[[int, Mapping[str, str]], RelayLike]  # (upstream port, environment) -> relay

_OUTCOME = re.compile(r'^logclass_relay_hold_records_total\{[^}]*outcome="([^"]+)"[^}]*\}\s+(\S+)$')


def hold_counters(text: str) -> dict[str, float]:
    out = dict.fromkeys(HOLD_OUTCOMES, 0.0)
    for line in text.splitlines():
        if match := _OUTCOME.match(line):
            out[match[1]] = float(match[2])
    return out


async def wait_llm_idle(stub: LlmStub, quiet_s: float = 1.0, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while stub.idle_s() < quiet_s and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def hold_env(stub: LlmStub, max_s: float) -> dict[str, str]:
    return {
        "LOGCLASS_LLM__BACKEND": "vllm",
        "LOGCLASS_LLM__SERVER__URL": stub.url,
        "LOGCLASS_LLM__SERVER__MODEL": "stub",
        "LOGCLASS_LLM__SERVER__RETRIES": "0",
        "LOGCLASS_ROUTER__TIERS": "[regex, memory, embedding, llm]",
        # Its default (the throughput phases' relays wait for every answer).
        "LOGCLASS_RELAY__BUDGET_MS": "null",
        "LOGCLASS_RELAY__CLASSIFY_TIMEOUT_MS": "5000",
        "LOGCLASS_RELAY__HOLD__MAX_S": f"{max_s:g}",
        "LOGCLASS_RELAY__HOLD__LLM_MAX_S": f"{max_s:g}",
    }


async def run_mode(
    name: str,
    max_s: float,
    start_relay: StartRelay,
    stub: LlmStub,
    candidates: Sequence[tuple[str, str]],
    known: list[tuple[str, str]] | None,
    new: Sequence[str],
    args: Any,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    upstream = RecordingUpstream()
    await upstream.start()
    relay = start_relay(upstream.port, hold_env(stub, max_s))
    try:
        startup = await asyncio.to_thread(relay.wait_ready)
        stage(f"hold {name}: relay ready after {startup:.1f} s; warm-up with {len(candidates)} seed lines")
        warm = [{"log": m, "source": s, "seq": i} for i, (s, m) in enumerate(candidates)]
        connection = await ForwardConnection.open(relay.port)
        for i in range(0, len(warm), WARM_REQUEST_RECORDS):
            await connection.send(warm[i : i + WARM_REQUEST_RECORDS])
        connection.close()
        await upstream.wait_for(range(len(warm)), timeout=max_s + 30)
        await wait_llm_idle(stub)
        if known is None:
            known = [c for i, c in enumerate(candidates) if (a := upstream.arrivals.get(i)) and a.tier in FAST_TIERS]
            if not known:
                raise RuntimeError("no seed line came back with tier regex or memory")
        interval = args.hold_interval_ms / 1000
        plan = plan_stream(known, new, max(len(new), round(args.hold_seconds / interval)), args.hold_known)
        calls_before, counters_before = stub.calls, hold_counters(relay.metrics_text())
        stage(
            f"hold {name}: {len(plan.requests)} requests of {args.hold_known} known records every "
            f"{args.hold_interval_ms} ms, {len(plan.new)} with a new {LLM_SOURCE} line"
        )
        sent_at: dict[int, float] = {}
        await send_paced(relay.port, plan.requests, interval, sent_at)
        arrived = await upstream.wait_for([*plan.known, *plan.new], timeout=max_s + 60)
        counters_after = hold_counters(relay.metrics_text())
        result = summarise(plan, sent_at, upstream.arrivals, arrived)
        result.update(
            hold_max_s=max_s,
            startup_s=startup,
            known_lines=len(known),
            llm_calls=stub.calls - calls_before,
            hold_records=({k: counters_after[k] - counters_before[k] for k in HOLD_OUTCOMES}),
            fallback_records=relay.fallback_records(),
        )
        stage(
            f"hold {name}: new records pending {result['new_pending_share']:.1%}, delivered p50 "
            f"{result['new_p50_s']:.2f} s p99 {result['new_p99_s']:.2f} s; known p50 {result['known_p50_ms']:.1f} ms "
            f"p99 {result['known_p99_ms']:.1f} ms"
        )
        return result, known
    finally:
        relay.stop()
        await upstream.stop()


def summarise(
    plan: Plan, sent_at: Mapping[int, float], arrivals: Mapping[int, Arrival], complete: bool
) -> dict[str, Any]:
    def latencies(seqs: Iterable[int]) -> list[float]:
        return [arrivals[s].at - sent_at[s] for s in seqs if s in arrivals]

    known_all = latencies(plan.known)
    known_alone = latencies(s for s in plan.known if s not in plan.shared)
    known_shared = latencies(s for s in plan.known if s in plan.shared)
    new = latencies(plan.new)
    tiers = Counter(arrivals[s].tier if s in arrivals else "not arrived" for s in plan.new)
    known_tiers = Counter(arrivals[s].tier for s in plan.known if s in arrivals)
    n_new = len(plan.new) or 1
    return {
        "complete": complete,
        "requests": len(plan.requests),
        "known_records": len(plan.known),
        "new_records": len(plan.new),
        "new_tiers": dict(tiers),
        "known_tiers": dict(known_tiers),
        "new_pending_share": tiers.get("pending", 0) / n_new,
        "new_llm_share": tiers.get("llm", 0) / n_new,
        "new_p50_s": percentile(new, 50),
        "new_p99_s": percentile(new, 99),
        "new_max_s": max(new, default=0.0),
        "known_p50_ms": percentile(known_all, 50) * 1000,
        "known_p99_ms": percentile(known_all, 99) * 1000,
        "known_alone_p50_ms": percentile(known_alone, 50) * 1000,
        "known_alone_p99_ms": percentile(known_alone, 99) * 1000,
        "known_shared_p50_ms": percentile(known_shared, 50) * 1000,
        "known_shared_p99_ms": percentile(known_shared, 99) * 1000,
    }


async def measure_hold(start_relay: StartRelay, args: Any) -> dict[str, Any]:
    """Both modes, hold on first, on the same records; a stub LLM for the run."""
    stub = LlmStub(args.llm_latency_ms / 1000)
    candidates = seed_candidates(args.hold_candidates)
    new = new_lines(args.hold_new)
    rows: dict[str, dict[str, Any]] = {}
    known: list[tuple[str, str]] | None = None
    try:
        for name, max_s in (("on", args.hold_max_s), ("off", 0.0)):
            rows[name], known = await run_mode(name, max_s, start_relay, stub, candidates, known, new, args)
    finally:
        stub.stop()
    return {
        "settings": {
            "llm_latency_ms": args.llm_latency_ms,
            "llm_max_concurrency": 4,
            "budget_ms": BUDGET_MS,
            "hold_max_s": args.hold_max_s,
            "new_records": args.hold_new,
            "known_per_request": args.hold_known,
            "interval_ms": args.hold_interval_ms,
            "seconds": args.hold_seconds,
            "connections": CONNECTIONS,
            "warm_candidates": len(candidates),
        },
        "rows": rows,
    }


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("hold phase (new LLM-routed templates mixed into known traffic)")
    group.add_argument("--llm-latency-ms", type=float, default=1500, help="the stub LLM's time per answer")
    group.add_argument("--hold-new", type=int, default=40, help="records of new LegacyCRM templates")
    group.add_argument("--hold-known", type=int, default=10, help="known records per request")
    group.add_argument("--hold-interval-ms", type=float, default=100, help="one request every this long")
    group.add_argument("--hold-seconds", type=float, default=15, help="length of the stream")
    group.add_argument("--hold-max-s", type=float, default=30, help="relay.hold.max_s and llm_max_s, hold on")
    group.add_argument("--hold-candidates", type=int, default=300, help="seed lines of the warm-up")


def report_hold(hold: Mapping[str, Any]) -> bool:
    s, rows = hold["settings"], hold["rows"]
    print(
        f"\nhold phase: {s['new_records']} records of new {LLM_SOURCE} templates (routed straight to the LLM: a stub "
        f"answering after {s['llm_latency_ms']:,.0f} ms, 4 questions at once) mixed into known records "
        f"({s['known_per_request']} per request every {s['interval_ms']:,.0f} ms for {s['seconds']:g} s, "
        f"{s['connections']} connections with acks); relay.budget_ms its default: "
        f"{s['budget_ms']['on']} ms with the hold, {s['budget_ms']['off']} ms without"
    )
    print(
        f"{'':<14}{'new records':>19}{'new delivered s':>21}{'known delivered ms':>28}"
        f"{'hold_records_total':>28}{'LLM':>6}"
    )
    print(
        f"{'hold':<14}{'pending':>9}{'llm':>10}{'p50':>7}{'p99':>7}{'max':>7}{'p50':>7}{'p99':>7}"
        f"{'alone p99':>11}{'shared p99':>11}{'labelled':>10}{'pending':>9}{'full':>6}{'calls':>9}"
    )
    for r in rows.values():
        label = f"on ({r['hold_max_s']:g} s)" if r["hold_max_s"] else "off (max_s 0)"
        h = r["hold_records"]
        print(
            f"{label:<14}{r['new_pending_share']:>9.1%}{r['new_llm_share']:>10.1%}{r['new_p50_s']:>7.2f}"
            f"{r['new_p99_s']:>7.2f}{r['new_max_s']:>7.2f}{r['known_p50_ms']:>7.1f}{r['known_p99_ms']:>7.1f}"
            f"{r['known_alone_p99_ms']:>11.1f}{r['known_shared_p99_ms']:>11.1f}{h['labelled']:>10,.0f}"
            f"{h['pending']:>9,.0f}{h['hold_full']:>6,.0f}{r['llm_calls']:>9,}"
        )
    on, off = rows["on"], rows["off"]
    print(
        f"known records: {on['known_records']:,} per mode ({on['known_lines']} seed lines the regex/memory decide); "
        "'shared': in a request with a new record, which waits relay.budget_ms for it"
    )
    for name, r in rows.items():
        if not r["complete"]:
            print(f"hold {name}: NOT every record reached the upstream (new tiers {r['new_tiers']})")
    diff = on["known_p99_ms"] - off["known_p99_ms"]
    band = max(NOISE_MS, NOISE_RATIO * off["known_p99_ms"])
    pending_ok = on["new_pending_share"] == 0 and bool(on["complete"])
    known_ok = bool(diff <= band)
    print(
        f"\n{'PASS' if pending_ok else 'FAIL'}  hold on: no record of a new template stored with tier pending "
        f"({on['new_pending_share']:.1%}; hold off {off['new_pending_share']:.1%})"
    )
    print(
        f"{'PASS' if known_ok else 'FAIL'}  known records' delivery p99, hold on vs off: {diff:+.1f} ms "
        f"(within noise: <= +{band:.0f} ms, the larger of {NOISE_MS:.0f} ms and {NOISE_RATIO:.0%}); p50 "
        f"{on['known_p50_ms'] - off['known_p50_ms']:+.1f} ms, alone p99 "
        f"{on['known_alone_p99_ms'] - off['known_alone_p99_ms']:+.1f} ms, shared p99 "
        f"{on['known_shared_p99_ms'] - off['known_shared_p99_ms']:+.1f} ms"
    )
    return pending_ok and known_ok
