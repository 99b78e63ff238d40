"""The relay as senders and upstreams see it, through faults: a real `logclass relay` process, the
test upstream (tests/relay/forward_peer.py) and real clients. Every fault test counts every record
end to end: all sent records arrive, duplicates are allowed and reported."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.relay.conftest import report
from tests.relay.forward_peer import ForwardClient, Upstream, free_port

LINES = [
    ("User User{} logged in.", "User Action"),
    ("System reboot initiated by user User{}.", "System Notification"),
    ("Backup completed successfully. {}", "System Notification"),
]


def records(prefix: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"log": LINES[i % 3][0].format(i), "seq": f"{prefix}-{i}", "n": i} for i in range(start, start + n)]


def send_acked(port: int, chunks: list[list[dict[str, Any]]], tag: str = "app.web", timeout: float = 10) -> None:
    """PackedForward with `chunk`, one at a time, each acked before the next (as Fluent Bit does)."""
    with ForwardClient(port) as client:
        for chunk in chunks:
            assert client.wait_ack(client.packed(tag, chunk), timeout), "relay did not ack a chunk"


def test_upstream_down_then_back_delivers_everything(relays: Any) -> None:
    upstream = Upstream()  # not started: the next hop is down
    relay = relays([upstream.port])
    chunks = [records(f"down{c}", 50) for c in range(20)]
    # Acked while the upstream is down: durably queued on disk, not delivered.
    send_acked(relay.port, chunks)
    assert len(relay.buffered_files()) >= 1
    metrics = relay.metrics()
    assert metrics['logclass_relay_records_in_total{mode="packed_forward"}'] == 1000
    assert metrics["logclass_relay_buffer_chunks"] >= 1 and metrics["logclass_relay_buffer_bytes"] > 0
    assert metrics[f'logclass_relay_upstream_errors_total{{kind="connect",upstream="127.0.0.1:{upstream.port}"}}'] >= 1
    assert "no upstream reachable" in relay.log()

    upstream.start()
    try:
        sent = [r["seq"] for chunk in chunks for r in chunk]
        assert upstream.wait_for_all(sent, timeout=30), relay.log()
        report("upstream down then back", sent, upstream.values())
        labels = {e.record["seq"]: e.record["log_label"] for e in upstream.events}
        assert labels["down0-0"] == "User Action" and labels["down0-1"] == "System Notification"
        wait_until(lambda: not relay.buffered_files(), 10, "condition not met in time")
        metrics = relay.metrics()
        assert metrics["logclass_relay_records_out_total"] >= 1000
        assert metrics["logclass_relay_buffer_chunks"] == 0 and metrics["logclass_relay_buffer_bytes"] == 0
        assert metrics["logclass_relay_ack_seconds_count"] == 20
    finally:
        upstream.stop()
    assert relay.stop() == 0


def test_sigkill_with_buffered_and_unacked_chunks_then_restart_delivers_everything(relays: Any) -> None:
    upstream = Upstream(ack=False)
    relay = relays([upstream.port])
    # 1. Upstream down: chunks acked by the relay sit in its buffer.
    first = [records(f"kill-a{c}", 40) for c in range(10)]
    send_acked(relay.port, first)
    # 2. Upstream up but never acking: the relay sends the oldest chunks again and again (a batch of
    # relay.forward.max_inflight_chunks per ack timeout) and deletes nothing.
    upstream.start()
    second = [records(f"kill-b{c}", 40) for c in range(10)]
    send_acked(relay.port, second)
    sent = [r["seq"] for chunk in first + second for r in chunk]
    assert upstream.wait_for(lambda u: len(u.events) >= 40), "the relay should have sent (unacked) chunks"
    on_disk = len(relay.buffered_files())
    relay.kill()
    upstream.stop()
    received_before = upstream.values()
    assert on_disk >= 1 and set(received_before) < set(sent)

    # 3. Restart on the same buffer with an upstream that acks: what was not acked is sent again.
    upstream.ack = True
    upstream.events.clear()
    upstream.start()
    try:
        relay.start()
        recovered = re.findall(r"(\d+) chunks / (\d+) records recovered", relay.log())[-1]
        assert int(recovered[0]) >= 1 and int(recovered[1]) == len(sent), recovered
        assert upstream.wait_for_all(sent, timeout=30), relay.log()
        wait_until(lambda: not relay.buffered_files(), 10, "condition not met in time")
        duplicates = report("SIGKILL and restart", sent, received_before + upstream.values())
        # What reached the upstream unacked before the kill was sent again: duplicates, no loss.
        assert duplicates >= len(set(received_before))
    finally:
        upstream.stop()
    assert relay.stop() == 0


def test_full_buffer_withholds_acks_and_drops_nothing(relays: Any) -> None:
    upstream = Upstream()  # down
    relay = relays([upstream.port], {"buffer": {"max_bytes": 65536, "full_wait_s": 1}})
    chunks = [records(f"full{c}", 40) for c in range(40)]  # ~4 KB each, ~160 KB in all
    acked: list[int] = []
    refused: int | None = None
    client = ForwardClient(relay.port)
    for i, chunk in enumerate(chunks):
        if client.wait_ack(client.packed("app.web", chunk), timeout=4):
            acked.append(i)
        else:
            refused = i
            break
    assert refused is not None and acked, "the buffer should fill before 160 KB"
    # No ack, and the relay closed the connection so the sender knows to resend.
    assert client.is_closed(timeout=3)
    client.close()
    log = relay.log()
    assert "relay buffer full" in log and "not acknowledged, the sender will resend it" in log
    metrics = relay.metrics()
    assert metrics['logclass_relay_backpressure_total{outcome="refused"}'] >= 1
    assert metrics["logclass_relay_buffer_bytes"] <= 65536

    # The upstream comes back; the sender resends what was not acked (Fluent Bit's retry).
    upstream.start()
    try:
        send_acked(relay.port, chunks[refused:], timeout=10)
        sent = [r["seq"] for chunk in chunks for r in chunk]
        assert upstream.wait_for_all(sent, timeout=30), relay.log()
        report("buffer full", sent, upstream.values())
    finally:
        upstream.stop()


def test_malformed_and_wrong_types_close_only_their_connection(relays: Any, upstream: Upstream) -> None:
    relay = relays([upstream.port])
    good = ForwardClient(relay.port)
    assert good.wait_ack(good.packed("app.good", records("good-a", 5)))
    bad_requests = {
        "malformed msgpack": b"\xc1\x00\x00",
        "tag must be a string": _packb([42, 1700000000, {"log": "x"}]),
        "record must be a map": _packb(["app", [[1700000000, "not a map"]], {"chunk": "c1"}]),
        "time must be an integer or EventTime": _packb(["app", [["yesterday", {"log": "x"}]]]),
        "event stream ends inside entry": _packb(["app", _packb([1700000000, {"log": "x"}])[:-2], {"chunk": "c2"}]),
        "not valid gzip": _packb(["app", b"not gzip", {"chunk": "c3", "compressed": "gzip"}]),
    }
    for reason, data in bad_requests.items():
        with ForwardClient(relay.port) as bad:
            bad.send_raw(data)
            assert bad.is_closed(timeout=5), f"connection not closed for: {reason}"
    # Values other than arrays are ignored (the spec), nil is a heartbeat: the connection stays.
    with ForwardClient(relay.port) as odd:
        odd.send_raw(_packb(42) + _packb(None) + _packb({"a": 1}))
        assert odd.wait_ack(odd.packed("app.odd", records("odd", 3)))
    # The good connection, open all along, is unaffected.
    assert good.wait_ack(good.packed("app.good", records("good-b", 5)))
    good.close()
    log = relay.log()
    for reason in bad_requests:
        assert reason in log, f"no log line for: {reason}\n{log}"
    assert "closing connection from 127.0.0.1:" in log and "ignoring int from 127.0.0.1:" in log
    sent = [r["seq"] for r in records("good-a", 5) + records("good-b", 5) + records("odd", 3)]
    assert upstream.wait_for_all(sent)
    report("malformed", sent, upstream.values())
    metrics = relay.metrics()
    assert metrics['logclass_relay_protocol_errors_total{kind="malformed"}'] == 1
    assert metrics['logclass_relay_protocol_errors_total{kind="invalid"}'] == 5


def test_failover_to_the_next_upstream_and_back(relays: Any) -> None:
    primary, secondary = Upstream(), Upstream().start()
    relay = relays([primary.port, secondary.port], {"forward": {"failback_s": 0.5}})
    try:
        send_acked(relay.port, [records("fo-a", 20)])
        assert secondary.wait_for_all([f"fo-a-{i}" for i in range(20)])
        assert "(fallback)" in relay.log()
        primary.start()
        time.sleep(0.7)  # past failback_s: the next chunk goes to the preferred upstream again
        send_acked(relay.port, [records("fo-b", 20)])
        assert primary.wait_for_all([f"fo-b-{i}" for i in range(20)]), relay.log()
        sent = [f"fo-a-{i}" for i in range(20)] + [f"fo-b-{i}" for i in range(20)]
        report("failover", sent, primary.values() + secondary.values())
    finally:
        primary.stop()
        secondary.stop()


def test_relay_cli_explains_its_config_errors(relays: Any, tmp_path: Any) -> None:
    from tests.conftest import run_cli

    result = run_cli("relay", "--buffer-path", str(tmp_path / "b"))
    assert result.returncode == 2 and "relay.upstreams is empty" in result.stderr, result.stderr
    result = run_cli("relay", "--upstream", "127.0.0.1:1", env={"LOGCLASS_RELAY__MESSAGE_KEY": "$.a[b]"})
    assert result.returncode == 2 and "relay.message_key" in result.stderr, result.stderr
    port = free_port()
    secret = {"LOGCLASS_RELAY__AUTH__SHARED_KEY": "s3cret-relay-key"}
    result = run_cli(
        "relay", "--upstream", f"127.0.0.1:{port}", "--listen", "127.0.0.1:1234", "--print-config", env=secret
    )
    assert result.returncode == 0 and f"port: {port}" in result.stdout and "127.0.0.1:1234" in result.stdout
    assert "s3cret-relay-key" not in result.stdout and "shared_key: <redacted>" in result.stdout
    # Two relays on one buffer directory would resend each other's chunks: refused.
    first = relays([port])
    second = relays([port], {"buffer": {"path": str(first.buffer)}}, start=False)
    with pytest.raises(AssertionError, match="in use by another relay process"):
        second.start(timeout=30)


def _packb(value: object) -> bytes:
    import msgpack

    return bytes(msgpack.packb(value))
