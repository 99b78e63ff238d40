"""Hostile senders against a real `logclass relay`: inputs built to make the decoder allocate far
more than they weigh, too many connections, silent ones, records nested past what msgpack packs.
Each case checks what the relay answered, that its peak memory grew less than 64 MiB (the bound
stated in docs/relay.md for a request within the limits), and that an honest sender on another
connection is still acked afterwards."""

from __future__ import annotations

import contextlib
import gzip
import io
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.conftest import wait_until
from tests.relay.conftest import RelayProcess
from tests.relay.forward_peer import ForwardClient, Upstream

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/status")

# The defaults of relay.max_request_bytes, max_request_objects and max_container_len.
MAX_BYTES, MAX_OBJECTS, MAX_CONTAINER = 6 << 20, 262144, 2048
TARGET_MIB = 64


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _peak_growth(relay: RelayProcess, attack: Callable[[], None]) -> float:
    """MiB the relay's peak RSS rose above its RSS before ``attack``."""
    assert relay.proc is not None
    pid = relay.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM, the peak, to the RSS now
    before = _status(pid, "VmRSS")
    attack()
    return (_status(pid, "VmHWM") - before) / (1 << 20)


def _array_header(n: int) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big")


def _bin(data: bytes) -> bytes:
    return b"\xc6" + len(data).to_bytes(4, "big") + data


def _packed(stream: bytes, option: dict[str, Any] | None = None) -> bytes:
    return b"\x93\xa3tag" + _bin(stream) + msgpack.packb(option or {})


def _records_of_empties(empty: bytes) -> bytes:
    """PackedForward entries [1, {"k": [empty x MAX_CONTAINER]}], 1.8 MB of them."""
    entry = b"\x92\x01\x81\xa1k" + _array_header(MAX_CONTAINER) + empty * MAX_CONTAINER
    return _packed(entry * 900)


ATTACKS: dict[str, tuple[bytes, str]] = {
    # 4 MiB of empty arrays inside records: 4 million lists (~300 MB) unbounded.
    "empty arrays": (
        _packed(
            b"".join(b"\x92\x01\x81\xa1k" + _array_header(MAX_CONTAINER) + b"\x90" * MAX_CONTAINER for _ in range(900))
        ),
        "max_request_objects",
    ),
    # The same with empty maps.
    "empty maps": (
        _packed(
            b"".join(b"\x92\x01\x81\xa1k" + _array_header(MAX_CONTAINER) + b"\x80" * MAX_CONTAINER for _ in range(900))
        ),
        "max_request_objects",
    ),
    # A 5-byte header claiming 16M elements, nested: msgpack reserves the slots when it reads one.
    "huge array headers": (b"\x92\xa3tag" + _array_header(1 << 24) * 8, "exceeds max_array_len"),
    # Headers at the length limit, nested as deep as msgpack goes, the request never finished.
    "deep open arrays": (b"\x92\xa3tag" + (b"\xdc" + MAX_CONTAINER.to_bytes(2, "big")) * 1022, ""),
    # A gzip member inflating to 64 MiB from 64 KB.
    "gzip bomb": (_packed(gzip.compress(b"\x90" * (64 << 20)), {"compressed": "gzip"}), "inflate past"),
    # One string just over the request bound.
    "over-long string": (b"\x93\xa3tag\x01\xdb" + (MAX_BYTES + 1).to_bytes(4, "big") + b"x" * 1024, ""),
}


def _honest(relay: RelayProcess, upstream: Upstream, seq: int) -> None:
    with ForwardClient(relay.port) as sender:
        assert sender.wait_ack(sender.packed("app", [{"log": "User User1 logged in.", "seq": seq}])), relay.log()
    assert upstream.wait_for(lambda u: seq in u.values()), relay.log()


@pytest.fixture
def relay(relays: Any, upstream: Upstream) -> RelayProcess:
    process: RelayProcess = relays([upstream.port], {"max_connections": 8, "idle_timeout_s": 2})
    return process


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_decoding_bomb_is_refused_within_the_memory_bound(
    relay: RelayProcess, upstream: Upstream, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data, refusal = ATTACKS[name]

    def attack() -> None:
        with ForwardClient(relay.port, timeout=30) as sender:
            with contextlib.suppress(OSError):  # closed while sending: the refusal came first
                sender.send_raw(data)
            assert sender.is_closed(timeout=30), f"{name}: the connection stayed open"

    grown = _peak_growth(relay, attack)
    with capsys.disabled():
        print(f"\n{name}: {len(data):,} bytes sent, connection closed, peak RSS +{grown:.1f} MiB")
    assert grown < TARGET_MIB, f"{name}: peak RSS grew {grown:.1f} MiB"
    if refusal:
        assert refusal in relay.log(), relay.log()
    _honest(relay, upstream, 1)


def test_past_max_connections_a_connection_is_refused_and_the_rest_go_on(
    relay: RelayProcess, upstream: Upstream
) -> None:
    held = [socket.create_connection(("127.0.0.1", relay.port)) for _ in range(8)]
    try:
        # Each held connection sends a heartbeat, so the relay has accepted it before the next.
        for sock in held:
            sock.sendall(b"\xc0")
        with ForwardClient(relay.port) as extra:
            assert extra.is_closed(timeout=10), "the ninth connection was not refused"
        assert "relay.max_connections (8) are open" in relay.log()
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: relay.metrics()["logclass_relay_connections"] == 0, 10, "the closed connections linger")
    _honest(relay, upstream, 2)


def test_a_silent_connection_is_closed_after_idle_timeout(relay: RelayProcess, upstream: Upstream) -> None:
    with ForwardClient(relay.port) as quiet:
        quiet.send_raw(b"\x93\xa3tag")  # the start of a request, then nothing
        assert quiet.is_closed(timeout=15)
    assert "relay.idle_timeout_s (2 s)" in relay.log()
    _honest(relay, upstream, 3)


@pytest.mark.parametrize(("depth", "forwarded"), [(1000, True), (1100, False)])
def test_nesting_as_deep_as_msgpack_decodes_is_forwarded_and_deeper_is_refused(
    relay: RelayProcess, upstream: Upstream, depth: int, forwarded: bool
) -> None:
    """msgpack decodes up to 1,023 levels and packs them again; past that a request is malformed."""
    record = b"\x83\xa3log\xa1x\xa3seq\x05\xa6nested" + b"\x91" * depth + b"\xa6bottom"
    with ForwardClient(relay.port) as sender:
        sender.send_raw(_packed(b"\x92\x01" + record, {"chunk": "ZGVlcA=="}))
        assert sender.wait_ack("ZGVlcA==", timeout=10) is forwarded
    if forwarded:
        assert upstream.wait_for(lambda u: 5 in u.values()), relay.log()
    else:
        assert "not valid msgpack" in relay.log()
    _honest(relay, upstream, 4)


def test_a_chunk_the_upstream_keeps_refusing_is_split_then_set_aside_and_the_queue_flows(
    relays: Any, tmp_path: Path
) -> None:
    """A record the next hop refuses (too large for it, or one it chokes on) must not block every
    record behind it: blamed when the chunk behind it gets through, split, then set aside."""
    upstream = Upstream(refuse=lambda record: bool(record.get("poison"))).start()
    try:
        relay: RelayProcess = relays([upstream.port], {"forward": {"dead_letter_after": 2}})
        with ForwardClient(relay.port) as sender:
            first = [{"log": "User User1 logged in.", "seq": i, "poison": i == 1} for i in range(4)]
            assert sender.wait_ack(sender.packed("app", first))
            for seq in range(4, 10):
                assert sender.wait_ack(sender.packed("app", [{"log": "User User1 logged in.", "seq": seq}]))
        good = [0, 2, 3, *range(4, 10)]
        assert upstream.wait_for_all(good, timeout=60), relay.log()
        dead = relay.buffer / "dead-letter"
        wait_until(lambda: len(list(dead.glob("*.chunk"))) == 1, 30, lambda: relay.log())
        metrics = relay.metrics()
        assert metrics["logclass_relay_dead_letter_chunks_total"] == 1
        assert metrics["logclass_relay_split_chunks_total"] >= 1
        assert 1 not in upstream.values() and not relay.buffered_files()
        (aside,) = dead.glob("*.chunk")
        _, stream, _ = msgpack.unpackb(aside.read_bytes(), raw=False)
        assert [record["seq"] for _, record in msgpack.Unpacker(io.BytesIO(stream), raw=False)] == [1]
        assert "moved to" in relay.log() and str(dead) in relay.log()
    finally:
        upstream.stop()
