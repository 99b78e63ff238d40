"""Forward protocol v1 on the wire: event modes, options, acks and the EventTime ext type.

Follows https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1. A request is a
msgpack array; the second element tells the mode::

    Message                  [tag, time, record, option?]
    Forward                  [tag, [[time, record], ...], option?]
    PackedForward            [tag, bin|str <<[time, record]>>*, option?]
    CompressedPackedForward  [tag, bin gzip(<<[time, record]>>*), {"compressed": "gzip", ...}]

Options: ``chunk`` (answered with ``{"ack": chunk}`` once the events are safe), ``size`` (event
count, informative), ``compressed``. Time is an integer or EventTime (ext type 0: 32-bit seconds
and nanoseconds, big-endian). Handshake messages live in ``auth.py``.

Strings are decoded with ``surrogateescape``, so bytes that are not UTF-8 travel through the relay
unchanged instead of failing the whole chunk.

Decoding is bounded (``DecodeLimits``), because a sender chooses every byte: a string or binary
is at most ``max_bytes``, an array or map at most ``max_container_len`` long (msgpack reserves
8 bytes a slot as soon as it reads a header, and nests at most 1,023 deep), and the arrays and
maps decoded, with their elements, count against ``max_objects`` (``ObjectBudget``): 4 MiB of
empty arrays (0x90) would otherwise become four million Python lists, 300 MB.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import struct
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from logclass.errors import LogclassError

EVENT_TIME_CODE = 0
_EVENT_TIME = struct.Struct(">II")

MODE_MESSAGE = "message"
MODE_FORWARD = "forward"
MODE_PACKED = "packed_forward"
MODE_COMPRESSED = "compressed_packed_forward"
MODES = (MODE_MESSAGE, MODE_FORWARD, MODE_PACKED, MODE_COMPRESSED)
# Bytes decoded between two turns of the event loop. A byte can be a whole object (an empty map),
# and decoding one through the budget's hooks costs ~0.22 us: 16 KiB is ~4 ms at worst.
DECODE_PIECE_BYTES = 16 * 1024

# Decoding options shared by every reader: see the module docstring for surrogateescape; map keys
# may be any type (records from other shippers sometimes use integers).
UNPACK_OPTIONS: dict[str, Any] = {"raw": False, "unicode_errors": "surrogateescape", "strict_map_key": False}

# Python type names as the spec calls them, for error messages.
_MSGPACK_NAMES = {"str": "string", "bytes": "binary", "list": "array", "dict": "map", "NoneType": "nil"}

Entry = list[Any]  # [time, record]; kept as decoded so re-encoding preserves every value


class ProtocolError(LogclassError):
    """A request that breaks the Forward protocol; the relay closes the connection it came on."""


class RequestTooLarge(ProtocolError):
    """A request past one of the decoding limits; the message names the setting."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one request may decode into (relay.max_request_bytes, relay.max_request_objects,
    relay.max_container_len)."""

    max_bytes: int
    max_objects: int
    max_container_len: int


class ObjectBudget:
    """Counts the arrays and maps decoded, elements included, as msgpack completes each one
    (its ``list_hook`` and ``object_hook``), and stops the decoding past ``limit``. The count
    runs until ``reset``: objects decoded and not yet handed on all stay in memory."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def release(self, objects: int) -> None:
        """Uncounts ``objects`` handed on (queued); what a request still arriving holds stays."""
        self.used -= objects

    def array(self, value: list[Any]) -> list[Any]:
        self.used += 1 + len(value)
        if self.used > self.limit:
            self._refuse()
        return value

    def map(self, value: dict[Any, Any]) -> dict[Any, Any]:
        self.used += 1 + 2 * len(value)
        if self.used > self.limit:
            self._refuse()
        return value

    def _refuse(self) -> None:
        raise RequestTooLarge(
            f"a request decodes into more than relay.max_request_objects ({self.limit:,}) arrays, maps and "
            "their elements; raise it or lower the sender's chunk size"
        )


@dataclass(slots=True)
class EventBatch:
    """One request's events."""

    tag: str
    mode: str
    entries: list[Entry]
    # The option's `chunk`: the sender waits for {"ack": chunk}. None: no ack wanted.
    chunk: str | None
    # A packed stream whose entries are still to decode (``parse_request(..., streams=False)``).
    stream: bytes | None = None


def unpacker(limits: DecodeLimits, budget: ObjectBudget, max_buffer_bytes: int | None = None) -> msgpack.Unpacker:
    """A bounded streaming decoder for one connection; feed() raises BufferFull past
    ``max_buffer_bytes`` (default: ``limits.max_bytes``), and decoding past ``limits`` or
    ``budget`` raises ValueError or RequestTooLarge."""
    return msgpack.Unpacker(
        max_buffer_size=max_buffer_bytes or limits.max_bytes,
        max_str_len=limits.max_bytes,
        max_bin_len=limits.max_bytes,
        max_array_len=limits.max_container_len,
        max_map_len=limits.max_container_len,
        max_ext_len=limits.max_container_len,
        list_hook=budget.array,
        object_hook=budget.map,
        **UNPACK_OPTIONS,
    )


def packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


def event_time(seconds: int, nanoseconds: int = 0) -> msgpack.ExtType:
    return msgpack.ExtType(EVENT_TIME_CODE, _EVENT_TIME.pack(seconds, nanoseconds))


def event_time_parts(value: msgpack.ExtType) -> tuple[int, int]:
    """(seconds, nanoseconds) of an EventTime."""
    seconds, nanoseconds = _EVENT_TIME.unpack(value.data)
    return int(seconds), int(nanoseconds)


def parse_request(
    request: list[Any], limits: DecodeLimits, budget: ObjectBudget, *, streams: bool = True
) -> EventBatch:
    """The events of one request (a msgpack array). Raises ProtocolError naming what is wrong.
    The entries of a packed stream are decoded within ``limits``, counted in ``budget``;
    ``streams`` False leaves them in ``EventBatch.stream`` for ``decode_entries_stepwise``."""
    if len(request) < 2 or len(request) > 4:
        raise ProtocolError(f"a request is [tag, time|entries, ...] with 2 to 4 elements, got {len(request)}")
    tag, second = request[0], request[1]
    if not isinstance(tag, str):
        raise ProtocolError(f"tag must be a string, got {_type(tag)}")
    if isinstance(second, int | float | msgpack.ExtType):
        if len(request) not in (3, 4):
            raise ProtocolError("a Message-mode request is [tag, time, record, option?]")
        entry = [second, request[2]]
        _check_entry(entry, 0)
        return EventBatch(tag, MODE_MESSAGE, [entry], _chunk(_option(request, 3)))
    if len(request) == 4:
        raise ProtocolError(f"a request with {_type(second)} entries has 2 or 3 elements, got 4")
    option = _option(request, 2)
    if isinstance(second, list):
        for i, entry in enumerate(second):
            _check_entry(entry, i)
        return EventBatch(tag, MODE_FORWARD, second, _chunk(option))
    if isinstance(second, bytes | str):
        stream = second if isinstance(second, bytes) else second.encode("utf-8", "surrogateescape")
        mode = MODE_PACKED
        if option.get("compressed") == "gzip":
            # Other values of `compressed` are to be ignored (the spec), i.e. the stream is plain.
            stream, mode = gunzip(stream, limits.max_bytes), MODE_COMPRESSED
        if not streams:
            return EventBatch(tag, mode, [], _chunk(option), stream)
        return EventBatch(tag, mode, decode_entries(stream, limits, budget), _chunk(option))
    raise ProtocolError(f"second element must be a time, an array or a binary stream of entries, got {_type(second)}")


def decode_entries(stream: bytes, limits: DecodeLimits, budget: ObjectBudget) -> list[Entry]:
    """The entries of a MessagePackEventStream; a stream cut mid-entry is an error, not a short chunk."""
    entries: list[Entry] = []
    for _ in _decode_steps(stream, limits, budget, entries, max(len(stream), 1)):
        pass
    return entries


async def decode_entries_stepwise(stream: bytes, limits: DecodeLimits, budget: ObjectBudget) -> list[Entry]:
    """``decode_entries``, giving the event loop a turn every DECODE_PIECE_BYTES: a stream of
    millions of tiny objects must not hold up the callers of the classifier sharing the loop."""
    entries: list[Entry] = []
    for _ in _decode_steps(stream, limits, budget, entries, DECODE_PIECE_BYTES):
        await asyncio.sleep(0)
    return entries


def _decode_steps(
    stream: bytes, limits: DecodeLimits, budget: ObjectBudget, entries: list[Entry], piece: int
) -> Iterator[None]:
    """Decodes ``stream`` into ``entries``, ``piece`` bytes a step (msgpack resumes an object cut
    between two feeds where it stopped)."""
    reader = unpacker(limits, budget, max_buffer_bytes=max(len(stream), 1))
    end = 0
    view = memoryview(stream)
    try:
        for start in range(0, len(stream), piece):
            reader.feed(view[start : start + piece])
            for entry in reader:
                _check_entry(entry, len(entries))
                entries.append(entry)
                end = reader.tell()
            yield
    except (msgpack.UnpackException, ValueError) as exc:  # _check_entry's ProtocolError passes through
        raise ProtocolError(f"entry {len(entries)} of the event stream is not valid msgpack: {exc}") from exc
    if end != len(stream):
        raise ProtocolError(f"event stream ends inside entry {len(entries)} ({len(stream) - end} bytes left over)")


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompresses one or more concatenated gzip members, refusing output past ``max_bytes``."""
    out: list[bytes] = []
    size = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(data, max_bytes - size + 1)
        except zlib.error as exc:
            raise ProtocolError(f"CompressedPackedForward entries are not valid gzip: {exc}") from exc
        size += len(chunk)
        if size > max_bytes:
            raise ProtocolError(f"gzip entries inflate past relay.max_request_bytes ({max_bytes} bytes)")
        if not inflater.eof:
            raise ProtocolError("CompressedPackedForward entries end inside a gzip member")
        out.append(chunk)
        data = inflater.unused_data
    return b"".join(out)


def pack_entries(entries: Iterable[Entry], pack: msgpack.Packer) -> bytes:
    """A MessagePackEventStream: the entries' msgpack encodings, concatenated."""
    return b"".join([pack.pack(entry) for entry in entries])


def packed_forward(tag: str, stream: bytes, size: int, chunk: str, *, compress: bool = False) -> bytes:
    """A PackedForward request asking for an ack (CompressedPackedForward with ``compress``)."""
    option: dict[str, Any] = {"chunk": chunk, "size": size}
    if compress:
        stream = gzip.compress(stream, compresslevel=6)
        option["compressed"] = "gzip"
    return bytes(packer().pack([tag, stream, option]))


def new_chunk_id() -> str:
    """Base64 of a random 128-bit id, the form the spec gives for `chunk`."""
    return base64.b64encode(uuid.uuid4().bytes).decode("ascii")


def ack(chunk: str) -> bytes:
    return bytes(packer().pack({"ack": chunk}))


def parse_ack(response: object) -> str:
    """The chunk id an upstream acknowledged."""
    if not isinstance(response, dict) or not isinstance(response.get("ack"), str):
        raise ProtocolError(f"expected {{'ack': chunk}} from the upstream, got {_type(response)}")
    return str(response["ack"])


def _option(request: list[Any], index: int) -> dict[str, Any]:
    option = request[index] if len(request) > index else None
    if option is None:
        return {}
    if not isinstance(option, dict):
        raise ProtocolError(f"option must be a map, got {_type(option)}")
    return option


def _chunk(option: dict[str, Any]) -> str | None:
    chunk = option.get("chunk")
    if chunk is None:
        return None
    if not isinstance(chunk, str) or not chunk:
        raise ProtocolError(f"option chunk must be a non-empty string, got {_type(chunk)}")
    return chunk


def _check_entry(entry: object, index: int) -> None:
    if not isinstance(entry, list) or len(entry) != 2:
        raise ProtocolError(f"entry {index} must be [time, record], got {_type(entry)}")
    time, record = entry
    if isinstance(time, list) and len(time) == 2 and isinstance(time[1], dict):
        # Fluent Bit 2.1+ may send [[time, metadata], record]; accepted and passed on as it came.
        time = time[0]
    if isinstance(time, msgpack.ExtType):
        if time.code != EVENT_TIME_CODE or len(time.data) != _EVENT_TIME.size:
            raise ProtocolError(f"entry {index}: time is ext type {time.code} of {len(time.data)} bytes, not EventTime")
    elif not isinstance(time, int | float) or isinstance(time, bool):
        raise ProtocolError(f"entry {index}: time must be an integer or EventTime, got {_type(time)}")
    if not isinstance(record, dict):
        raise ProtocolError(f"entry {index}: record must be a map, got {_type(record)}")


def _type(value: object) -> str:
    if isinstance(value, msgpack.ExtType):
        return f"ext type {value.code}"
    name = type(value).__name__
    return _MSGPACK_NAMES.get(name, name)
