"""Forward protocol peers for the tests, written from the spec with plain msgpack and sockets and
sharing no code with ``logclass.relay`` (a decoding bug there must not cancel out here):

- ``Upstream``: an in_forward stand-in on 127.0.0.1 that records every event it receives, acks
  chunks (or not, to simulate a stuck upstream), optionally requires the handshake or TLS, and can
  be stopped and started again on the same port;
- ``ForwardClient``: a raw sender for every mode, with ``chunk`` acks and the handshake.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from tests.conftest import free_port


def sha512_hex(*parts: bytes | str) -> str:
    h = hashlib.sha512()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()


def event_time(seconds: int, nanos: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, seconds.to_bytes(4, "big") + nanos.to_bytes(4, "big"))


@dataclass
class Received:
    tag: str
    time: Any
    record: dict[str, Any]
    chunk: str | None
    option: dict[str, Any] = field(default_factory=dict)


class Upstream:
    def __init__(
        self,
        port: int | None = None,
        *,
        ack: bool = True,
        shared_key: str | None = None,
        tls: ssl.SSLContext | None = None,
        hostname: str = "upstream.test",
        refuse: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.ack = ack
        # A request holding a record this says yes to is refused: the connection is closed
        # without an ack, as Fluent Bit does with a chunk over its Buffer_Max_Size.
        self.refuse = refuse
        self.refused = 0
        self.shared_key = shared_key
        self.tls = tls
        self.hostname = hostname
        self.events: list[Received] = []
        self.requests = 0
        self.handshake_failures = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Upstream:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True)
        thread.start()
        self._threads = [thread]
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- what it got -----------------------------------------------------------------------------

    def values(self, key: str = "seq") -> list[Any]:
        with self._lock:
            return [e.record.get(key) for e in self.events]

    def wait_for(self, predicate: Callable[[Upstream], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def wait_for_all(self, expected: Iterable[Any], key: str = "seq", timeout: float = 20.0) -> bool:
        wanted = set(expected)
        return self.wait_for(lambda u: wanted <= set(u.values(key)), timeout)

    # -- server ----------------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn.settimeout(5)
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            conn.settimeout(None)
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        try:
            if self.shared_key is not None and not self._handshake(conn, unpacker):
                return
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                unpacker.feed(data)
                for request in unpacker:
                    self._handle(conn, request)
        except OSError:
            return
        finally:
            conn.close()

    def _handshake(self, conn: socket.socket, unpacker: msgpack.Unpacker) -> bool:
        assert self.shared_key is not None
        nonce = os.urandom(16)
        conn.sendall(msgpack.packb(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}]))
        ping = _read(conn, unpacker)
        _, client_host, salt, digest, _user, _password = ping
        salt = salt if isinstance(salt, bytes) else salt.encode()
        if digest != sha512_hex(salt, client_host, nonce, self.shared_key):
            self.handshake_failures += 1
            conn.sendall(msgpack.packb(["PONG", False, "shared key mismatch", self.hostname, ""]))
            return False
        conn.sendall(
            msgpack.packb(["PONG", True, "", self.hostname, sha512_hex(salt, self.hostname, nonce, self.shared_key)])
        )
        return True

    def _handle(self, conn: socket.socket, request: list[Any]) -> None:
        tag, second = request[0], request[1]
        if isinstance(second, list):
            option = request[2] if len(request) > 2 else {}
            entries = second
        elif isinstance(second, bytes | str):
            option = request[2] if len(request) > 2 else {}
            stream = second if isinstance(second, bytes) else second.encode()
            if (option or {}).get("compressed") == "gzip":
                stream = gzip.decompress(stream)
            entries = _entries(stream)
        else:
            option = request[3] if len(request) > 3 else {}
            entries = [[second, request[2]]]
        option = option or {}
        chunk = option.get("chunk")
        if self.refuse is not None and any(self.refuse(record) for _, record in entries):
            with self._lock:
                self.refused += 1
            raise OSError("refused")
        with self._lock:
            self.requests += 1
            self.events.extend(Received(tag, t, record, chunk, option) for t, record in entries)
        if chunk is not None and self.ack:
            conn.sendall(msgpack.packb({"ack": chunk}))


def _entries(stream: bytes) -> list[list[Any]]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(stream)
    return list(unpacker)


def _read(conn: socket.socket, unpacker: msgpack.Unpacker) -> Any:
    while True:
        for obj in unpacker:
            return obj
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("closed")
        unpacker.feed(data)


class ForwardClient:
    """A raw Forward sender: one connection, explicit modes, ``chunk`` acks, optional handshake."""

    def __init__(
        self,
        port: int,
        *,
        shared_key: str | None = None,
        hostname: str = "client.test",
        username: str = "",
        password: str = "",
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls is not None else sock
        self.unpacker = msgpack.Unpacker(raw=False)
        self.pong: list[Any] | None = None
        if shared_key is not None:
            self._handshake(shared_key, hostname, username, password)

    def _handshake(self, shared_key: str, hostname: str, username: str, password: str) -> None:
        helo = self.read(5.0)
        assert isinstance(helo, list) and helo[0] == "HELO", helo
        nonce, auth_salt = helo[1]["nonce"], helo[1]["auth"]
        salt = os.urandom(16)
        password_digest = sha512_hex(auth_salt, username, password) if auth_salt else ""
        self.sock.sendall(
            msgpack.packb(
                ["PING", hostname, salt, sha512_hex(salt, hostname, nonce, shared_key), username, password_digest]
            )
        )
        pong = self.read(5.0)
        self.pong = pong
        if pong[1] is True:
            assert pong[4] == sha512_hex(salt, pong[3], nonce, shared_key), "server digest"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ForwardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def message(self, tag: str, record: dict[str, Any], *, chunk: bool = True, when: Any = None) -> str | None:
        cid = _chunk_id() if chunk else None
        request: list[Any] = [tag, when if when is not None else int(time.time()), record]
        if cid:
            request.append({"chunk": cid})
        self.send_raw(msgpack.packb(request))
        return cid

    def forward(self, tag: str, records: list[dict[str, Any]], *, chunk: bool = True) -> str | None:
        cid = _chunk_id() if chunk else None
        now = int(time.time())
        request: list[Any] = [tag, [[now, r] for r in records]]
        if cid:
            request.append({"chunk": cid, "size": len(records)})
        self.send_raw(msgpack.packb(request))
        return cid

    def packed(
        self,
        tag: str,
        records: list[dict[str, Any]],
        *,
        chunk: bool = True,
        compressed: bool = False,
        as_str: bool = False,
        when: Any = None,
    ) -> str | None:
        data, cid = packed_request(tag, records, chunk=chunk, compressed=compressed, as_str=as_str, when=when)
        self.send_raw(data)
        return cid

    # -- reading ---------------------------------------------------------------------------------

    def read(self, timeout: float) -> Any:
        """The next msgpack object from the relay; raises TimeoutError or ConnectionError."""
        self.sock.settimeout(timeout)
        while True:
            for obj in self.unpacker:
                return obj
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("relay closed the connection")
            self.unpacker.feed(data)

    def wait_ack(self, chunk: str | None, timeout: float = 10.0) -> bool:
        """True once {"ack": chunk} arrives; False on timeout or a closed connection."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                response = self.read(remaining)
                if isinstance(response, dict) and response.get("ack") == chunk:
                    return True
        except (TimeoutError, ConnectionError, OSError):
            return False

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True when the relay closes this connection within ``timeout`` (data read is discarded)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
                if not self.sock.recv(65536):
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
        return False


def _chunk_id() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode()


def packed_request(
    tag: str,
    records: list[dict[str, Any]],
    *,
    chunk: bool = True,
    compressed: bool = False,
    as_str: bool = False,
    when: Any = None,
) -> tuple[bytes, str | None]:
    """A PackedForward (or CompressedPackedForward) request and its chunk id."""
    stamp = when if when is not None else event_time(int(time.time()), 123456789)
    stream = b"".join(msgpack.packb([stamp, r]) for r in records)
    option: dict[str, Any] = {"size": len(records)}
    cid = _chunk_id() if chunk else None
    if cid:
        option["chunk"] = cid
    if compressed:
        # Two gzip members concatenated, which the spec allows.
        half = len(stream) // 2
        stream = gzip.compress(stream[:half]) + gzip.compress(stream[half:])
        option["compressed"] = "gzip"
    packer = msgpack.Packer(use_bin_type=not as_str)
    return packer.pack([tag, stream, option]), cid
