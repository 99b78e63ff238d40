"""The Forward protocol codec, handshake digests and record key paths, against the spec's own
examples and the independent test peer (tests/relay/forward_peer.py)."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import msgpack
import pytest

from logclass.relay import RelayError, auth, protocol
from logclass.relay.keypath import KeyPath
from logclass.relay.protocol import ProtocolError
from tests.relay.forward_peer import event_time, packed_request, sha512_hex

MAX = 1 << 20
LIMITS = protocol.DecodeLimits(MAX, max_objects=1 << 16, max_container_len=1024)


def _decode(data: bytes) -> Any:
    unpacker = protocol.unpacker(LIMITS, protocol.ObjectBudget(LIMITS.max_objects))
    unpacker.feed(data)
    return next(unpacker)


def _parse(request: Any) -> protocol.EventBatch:
    return protocol.parse_request(request, LIMITS, protocol.ObjectBudget(LIMITS.max_objects))


def test_event_time_fixext_and_ext8_both_read_and_fixext_is_written() -> None:
    # The spec's two encodings of the same EventTime: fixext 8 (D7 00) and ext 8 (C7 08 00).
    fixext = b"\xd7\x00" + (1441588984).to_bytes(4, "big") + (123456789).to_bytes(4, "big")
    ext8 = b"\xc7\x08\x00" + fixext[2:]
    for raw in (fixext, ext8):
        value = _decode(raw)
        assert protocol.event_time_parts(value) == (1441588984, 123456789)
    assert protocol.packer().pack(protocol.event_time(1441588984, 123456789)) == fixext
    assert protocol.event_time(5, 6) == event_time(5, 6)


def test_every_mode_decodes_to_the_same_events() -> None:
    when = event_time(1441588984, 5)
    records = [{"message": "foo"}, {"message": "bar"}]
    requests = {
        protocol.MODE_MESSAGE: msgpack.packb(["tag.name", when, records[0], {"chunk": "c"}]),
        protocol.MODE_FORWARD: msgpack.packb(["tag.name", [[when, r] for r in records], {"chunk": "c"}]),
        protocol.MODE_PACKED: packed_request("tag.name", records, when=when)[0],
        protocol.MODE_COMPRESSED: packed_request("tag.name", records, compressed=True, when=when)[0],
    }
    for mode, data in requests.items():
        batch = _parse(_decode(data))
        assert batch.mode == mode and batch.tag == "tag.name" and batch.chunk is not None
        expected = records[:1] if mode == protocol.MODE_MESSAGE else records
        assert batch.entries == [[when, r] for r in expected]
    # out_forward sends the stream as msgpack str for compatibility; it must still decode.
    legacy = _parse(_decode(packed_request("t", records, as_str=True, when=1)[0]))
    assert legacy.mode == protocol.MODE_PACKED and [e[1] for e in legacy.entries] == records
    # No option, integer time, and `compressed` values other than gzip are ignored (plain stream).
    plain = _parse(_decode(msgpack.packb(["t", 1441588984, {"a": 1}])))
    assert plain.chunk is None and plain.entries == [[1441588984, {"a": 1}]]
    stream = msgpack.packb([1, {"a": 1}])
    text = _parse(_decode(msgpack.packb(["t", stream, {"compressed": "text"}])))
    assert text.mode == protocol.MODE_PACKED and text.entries == [[1, {"a": 1}]]


def test_fluent_bit_metadata_entries_and_non_utf8_strings_pass_through() -> None:
    entry = [[event_time(1, 2), {"otel": {}}], {"log": "x"}]
    batch = _parse(_decode(msgpack.packb(["t", [entry]])))
    assert batch.entries == [entry]
    raw = b"\x92\xa3tag" + b"\x91" + msgpack.packb([1, {"log": b"\xff\xfe"}], use_bin_type=False)
    batch = _parse(_decode(raw))
    packed = protocol.pack_entries(batch.entries, protocol.packer())
    assert packed == msgpack.packb([1, {"log": b"\xff\xfe"}], use_bin_type=False)  # byte for byte


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ([1, 2, {}], "tag must be a string"),
        (["t"], "2 to 4 elements"),
        (["t", 1, "record"], "record must be a map"),
        (["t", 1, {}, "opt"], "option must be a map"),
        (["t", [[1, {}]], {"chunk": 5}], "chunk must be a non-empty string"),
        (["t", [["x", {}]]], "time must be an integer or EventTime"),
        (["t", [[msgpack.ExtType(5, b"12345678"), {}]]], "ext type 5"),
        (["t", [[1, {}, 3]]], "entry 0 must be [time, record]"),
        (["t", {"a": 1}], "second element must be"),
        (["t", msgpack.packb([1, {}])[:-1]], "ends inside entry 0"),
        (["t", b"\xc1", {}], "not valid msgpack"),
        (["t", b"garbage", {"compressed": "gzip"}], "not valid gzip"),
        (["t", gzip.compress(b"x" * 100)[:-4], {"compressed": "gzip"}], "inside a gzip member"),
    ],
)
def test_protocol_errors_say_what_is_wrong(request_: list[Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _parse(request_)


def test_gzip_inflation_is_bounded() -> None:
    bomb = gzip.compress(b"\x00" * 200_000)
    with pytest.raises(ProtocolError, match="max_request_bytes"):
        protocol.gunzip(bomb, 100_000)
    assert protocol.gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"


def test_packed_forward_request_and_ack_round_trip() -> None:
    stream = protocol.pack_entries([[1, {"a": 1}], [2, {"b": 2}]], protocol.packer())
    for compress in (False, True):
        data = protocol.packed_forward("tag", stream, 2, "Y2h1bms=", compress=compress)
        batch = _parse(_decode(data))
        assert batch.chunk == "Y2h1bms=" and [e[1] for e in batch.entries] == [{"a": 1}, {"b": 2}]
        assert _decode(data)[2]["size"] == 2
    assert protocol.parse_ack(_decode(protocol.ack("abc"))) == "abc"
    with pytest.raises(ProtocolError):
        protocol.parse_ack(["nope"])
    assert len(protocol.new_chunk_id()) == 24  # base64 of 128 bits, as the spec's example


def test_handshake_digests_follow_the_spec() -> None:
    nonce, auth_salt, key_salt = b"n" * 16, b"a" * 16, b"s" * 16
    helo = auth.parse_helo(_decode(auth.helo(nonce, auth_salt)))
    assert helo == auth.Helo(nonce, auth_salt, True)
    ping_bytes = auth.ping("client.example", "secret", helo, key_salt, "alice", "pw")
    message = _decode(ping_bytes)
    # Independent digests (forward_peer.sha512_hex) of the spec's concatenations.
    assert message[3] == sha512_hex(key_salt, "client.example", nonce, "secret")
    assert message[5] == sha512_hex(auth_salt, "alice", "pw")
    ping = auth.parse_ping(message)
    assert auth.check_ping(ping, nonce, "secret", auth_salt, {"alice": "pw"}) == ""
    assert auth.check_ping(ping, nonce, "other", auth_salt, {}) == "shared_key mismatch"
    assert auth.check_ping(ping, nonce, "secret", auth_salt, {"alice": "nope"}) == "username/password mismatch"
    assert auth.check_ping(ping, nonce, "secret", auth_salt, {"bob": "pw"}) == "username/password mismatch"
    pong = _decode(auth.pong(True, "", "server.example", "secret", ping, nonce))
    assert pong[4] == sha512_hex(key_salt, "server.example", nonce, "secret")
    auth.check_pong(pong, "secret", key_salt, nonce)
    with pytest.raises(ProtocolError, match="different shared_key"):
        auth.check_pong(pong, "other", key_salt, nonce)
    with pytest.raises(ProtocolError, match="refused the handshake: nope"):
        auth.check_pong(["PONG", False, "nope", "h", ""], "secret", key_salt, nonce)


def test_key_paths() -> None:
    record = {"log": "a", "log.message": "b", "k8s": {"labels": {"app.kubernetes.io/name": "c"}, "n": 1}}
    assert KeyPath("log", "x").get(record) == "a"
    assert KeyPath("log.message", "x").get(record) == "b"  # a plain name is one key, dots and all
    assert KeyPath("$.k8s.labels['app.kubernetes.io/name']", "x").get(record) == "c"
    assert KeyPath('$["k8s"]["labels"]["app.kubernetes.io/name"]', "x").get(record) == "c"
    assert KeyPath("$.k8s.n.deeper", "x").get(record) is None
    assert KeyPath("$.missing", "x").get(record) is None
    for bad in ("", "$", "$.a[b]", "$..a", "$['a'"):
        with pytest.raises(RelayError, match=r"relay\.message_key"):
            KeyPath(bad, "relay.message_key")


def test_a_packed_stream_decodes_stepwise_with_the_loop_turning_between_pieces() -> None:
    """A stream of tiny objects is decoded a piece at a time, each entry cut across pieces
    resumed where it stopped, with other tasks running in between; the entries are the same."""
    entry = [1, {"k": [{} for _ in range(1000)]}]
    stream = b"".join(protocol.packer().pack(entry) for _ in range(60))
    pieces = -(-len(stream) // protocol.DECODE_PIECE_BYTES)
    assert pieces >= 3
    budget = protocol.ObjectBudget(LIMITS.max_objects * 4)

    async def scenario() -> tuple[list[protocol.Entry], int]:
        turns = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal turns
            while not done.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        turns = 0
        entries = await protocol.decode_entries_stepwise(stream, LIMITS, budget)
        done.set()
        await task
        return entries, turns

    entries, turns = asyncio.run(scenario())
    assert entries == protocol.decode_entries(stream, LIMITS, protocol.ObjectBudget(LIMITS.max_objects * 4))
    assert len(entries) == 60 and budget.used == 60 * (3 + 3 + 1001 + 1000)  # entry, record, list, the empty maps
    assert turns >= pieces - 1


def test_a_stepwise_stream_cut_inside_an_entry_is_refused() -> None:
    stream = protocol.packer().pack([1, {"k": "v" * 40000}])
    with pytest.raises(ProtocolError, match="ends inside entry 0"):
        asyncio.run(protocol.decode_entries_stepwise(stream[:-1], LIMITS, protocol.ObjectBudget(LIMITS.max_objects)))


def test_a_stepwise_stream_past_the_object_budget_is_refused_as_too_large() -> None:
    stream = protocol.packer().pack([1, {"k": [[] for _ in range(1000)]}]) * 3
    with pytest.raises(protocol.RequestTooLarge, match=r"relay\.max_request_objects"):
        asyncio.run(protocol.decode_entries_stepwise(stream, LIMITS, protocol.ObjectBudget(2500)))
