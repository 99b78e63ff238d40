"""Real clients against a real `logclass relay`: fluent-logger (Message mode, nanosecond
EventTime), the UDP heartbeat, and the handshake with users over TLS on both sides (senders to the
relay, the relay to an upstream that requires its own shared key)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import msgpack
from fluent import sender as fluent_sender

from tests.certs import make_certs
from tests.relay.conftest import report
from tests.relay.forward_peer import ForwardClient, Upstream, event_time


def test_fluent_logger_records_arrive_classified(relays: Any, upstream: Upstream) -> None:
    relay = relays([upstream.port], {"message_key": "message", "source_key": "service"})
    logger = fluent_sender.FluentSender("app", host="127.0.0.1", port=relay.port, nanosecond_precision=True)
    lines = ["User User{} logged in.", "Backup completed successfully.", "something new {}"]
    sent = []
    try:
        for i in range(300):
            assert logger.emit("web", {"message": lines[i % 3].format(i), "service": "billing", "seq": i}), (
                logger.last_error
            )
            sent.append(i)
    finally:
        logger.close()
    assert upstream.wait_for_all(sent), relay.log()
    report("fluent-logger", sent, upstream.values())
    by_seq = {e.record["seq"]: e for e in upstream.events}
    assert by_seq[0].tag == "app.web" and by_seq[0].record["log_label"] == "User Action"
    assert by_seq[1].record["log_label"] == "System Notification" and by_seq[1].record["log_label_tier"] == "regex"
    assert by_seq[2].record["log_label"] == "Unclassified" and by_seq[2].record["log_label_tier"] == "none"
    # Nanosecond EventTime travels through unchanged.
    assert isinstance(by_seq[0].time, msgpack.ExtType) and by_seq[0].time.code == 0
    assert relay.metrics()['logclass_relay_records_in_total{mode="message"}'] == 300


def test_every_mode_through_the_relay_with_gzip_upstream(relays: Any, upstream: Upstream) -> None:
    relay = relays([upstream.port], {"forward": {"compress": "gzip"}})
    when = event_time(1700000000, 987654321)

    def rows(mode: str, n: int) -> list[dict[str, Any]]:
        return [{"log": f"User User{i} logged in.", "seq": f"{mode}-{i}"} for i in range(n)]

    with ForwardClient(relay.port) as client:
        chunks = [
            client.message("app.message", rows("message", 1)[0], when=when),
            client.forward("app.forward", rows("forward", 3)),
            client.packed("app.packed", rows("packed", 50), when=when),
            client.packed("app.str", rows("str", 50), as_str=True, when=when),  # out_forward's encoding
            client.packed("app.gzip", rows("gzip", 50), compressed=True, when=when),
        ]
        assert all(client.wait_ack(chunk) for chunk in chunks)
    sent = [
        r["seq"]
        for mode, n in (("message", 1), ("forward", 3), ("packed", 50), ("str", 50), ("gzip", 50))
        for r in rows(mode, n)
    ]
    assert upstream.wait_for_all(sent)
    report("every mode", sent, upstream.values())
    for event in upstream.events:
        mode = event.record["seq"].split("-")[0]
        assert event.tag == f"app.{mode}" and event.record["log_label"] == "User Action"
        assert event.option.get("compressed") == "gzip" and isinstance(event.option["chunk"], str)
        if mode != "forward":  # EventTime travels unchanged, nanoseconds and all
            assert event.time == when
    metrics = relay.metrics()
    for mode, n in (("message", 1), ("forward", 3), ("packed_forward", 100), ("compressed_packed_forward", 50)):
        assert metrics[f'logclass_relay_records_in_total{{mode="{mode}"}}'] == n


def test_udp_heartbeat_is_answered(relays: Any, upstream: Upstream) -> None:
    relay = relays([upstream.port])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"\x00", ("127.0.0.1", relay.port))
        assert udp.recvfrom(16)[0] == b"\x00"


def test_handshake_users_and_tls_on_both_sides(relays: Any, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    upstream_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_tls.load_cert_chain(certs / "server.pem", certs / "server.key")
    upstream = Upstream(shared_key="upstream-key", tls=upstream_tls).start()
    (certs / "relay-key").write_text("relay-key\n")
    relay = relays(
        [upstream.port],
        {
            "auth": {"shared_key_file": str(certs / "relay-key"), "users": [{"username": "fluent", "password": "pw"}]},
            "tls": {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key")},
            "upstreams": [
                {
                    "host": "127.0.0.1",
                    "port": upstream.port,
                    "shared_key": "upstream-key",
                    "tls": {"ca_file": str(certs / "ca.pem"), "server_name": "localhost"},
                }
            ],
        },
    )
    client_tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    try:
        with ForwardClient(relay.port, shared_key="relay-key", username="fluent", password="pw", tls=client_tls) as ok:
            assert ok.pong is not None and ok.pong[1] is True
            chunk = [{"log": f"User User{i} logged in.", "seq": i} for i in range(10)]
            assert ok.wait_ack(ok.packed("secure", chunk))
        refused = {
            "shared_key mismatch": {"shared_key": "wrong", "username": "fluent", "password": "pw"},
            "username/password mismatch": {"shared_key": "relay-key", "username": "fluent", "password": "nope"},
        }
        for reason, credentials in refused.items():
            with ForwardClient(relay.port, tls=client_tls, **credentials) as bad:
                assert bad.pong is not None and bad.pong[1] is False and bad.pong[2] == reason
                assert bad.is_closed()
        # A sender that skips the handshake is refused too.
        with ForwardClient(relay.port, tls=client_tls) as rude:
            assert rude.read(5)[0] == "HELO"
            rude.packed("secure", chunk)
            assert rude.is_closed()
        # The relay passed the upstream's own handshake over TLS.
        assert upstream.wait_for_all(range(10)), relay.log()
        report("tls + handshake", list(range(10)), upstream.values())
        assert upstream.handshake_failures == 0
        assert {e.record["log_label"] for e in upstream.events} == {"User Action"}
    finally:
        upstream.stop()
    log = relay.log()
    assert "handshake refused: shared_key mismatch" in log and "expected PING after HELO" in log
    assert "tls on, handshake users" in log
