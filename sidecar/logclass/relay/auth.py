"""Forward protocol handshake: HELO, PING, PONG and their SHA-512 digests, both sides.

    server ── ["HELO", {nonce, auth, keepalive}] ──────────────────────────────► client
    server ◄── ["PING", client_hostname, shared_key_salt, hexdigest, username, password] ── client
    server ── ["PONG", auth_result, reason, server_hostname, hexdigest] ──────► client

``hexdigest`` is sha512_hex(shared_key_salt + hostname + nonce + shared_key) with the sender's own
hostname, so each side proves it knows the key; ``password`` is sha512_hex(auth_salt + username +
password) when the server asks for users (non-empty ``auth`` salt).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from logclass.relay.protocol import ProtocolError, packer


def salt() -> bytes:
    return os.urandom(16)


def hexdigest(*parts: bytes | str) -> str:
    h = hashlib.sha512()
    for part in parts:
        h.update(_bytes(part))
    return h.hexdigest()


def helo(nonce: bytes, auth_salt: bytes, keepalive: bool = True) -> bytes:
    return bytes(packer().pack(["HELO", {"nonce": nonce, "auth": auth_salt, "keepalive": keepalive}]))


@dataclass(frozen=True, slots=True)
class Helo:
    nonce: bytes
    auth_salt: bytes  # empty: the server does not ask for a username and password
    keepalive: bool


def parse_helo(message: object) -> Helo:
    if not (isinstance(message, list) and len(message) == 2 and message[0] == "HELO" and isinstance(message[1], dict)):
        raise ProtocolError("expected HELO from the upstream: is it configured with the same shared_key?")
    options: dict[str, Any] = message[1]
    nonce, auth_salt = options.get("nonce"), options.get("auth", b"")
    if not isinstance(nonce, bytes | str) or not isinstance(auth_salt, bytes | str):
        raise ProtocolError("HELO must carry nonce and auth as strings")
    return Helo(_bytes(nonce), _bytes(auth_salt), options.get("keepalive", True) is not False)


def ping(
    hostname: str, shared_key: str, helo_: Helo, shared_key_salt: bytes, username: str = "", password: str = ""
) -> bytes:
    digest = hexdigest(shared_key_salt, hostname, helo_.nonce, shared_key)
    password_digest = hexdigest(helo_.auth_salt, username, password) if helo_.auth_salt else ""
    return bytes(packer().pack(["PING", hostname, shared_key_salt, digest, username, password_digest]))


@dataclass(frozen=True, slots=True)
class Ping:
    hostname: str
    shared_key_salt: bytes
    digest: str
    username: str
    password_digest: str


def parse_ping(message: object) -> Ping:
    if not (isinstance(message, list) and len(message) == 6 and message[0] == "PING"):
        raise ProtocolError("expected PING after HELO: the sender must be configured with a shared_key")
    _, hostname, key_salt, digest, username, password = message
    if not all(isinstance(v, str) for v in (hostname, digest, username, password)) or not isinstance(
        key_salt, bytes | str
    ):
        raise ProtocolError("PING fields must be strings")
    return Ping(hostname, _bytes(key_salt), digest, username, password)


def check_ping(ping_: Ping, nonce: bytes, shared_key: str, auth_salt: bytes, users: dict[str, str]) -> str:
    """Why the client is refused; empty when it proved the shared key (and a user, when ``users``)."""
    if not hmac.compare_digest(ping_.digest, hexdigest(ping_.shared_key_salt, ping_.hostname, nonce, shared_key)):
        return "shared_key mismatch"
    if users:
        password = users.get(ping_.username)
        expected = hexdigest(auth_salt, ping_.username, password) if password is not None else ""
        if not expected or not hmac.compare_digest(ping_.password_digest, expected):
            return "username/password mismatch"
    return ""


def pong(ok: bool, reason: str, hostname: str, shared_key: str, ping_: Ping, nonce: bytes) -> bytes:
    digest = hexdigest(ping_.shared_key_salt, hostname, nonce, shared_key) if ok else ""
    return bytes(packer().pack(["PONG", ok, reason, hostname, digest]))


def check_pong(message: object, shared_key: str, shared_key_salt: bytes, nonce: bytes) -> None:
    """Raises ProtocolError unless the upstream accepted us and proved it knows the shared key."""
    if not (isinstance(message, list) and len(message) == 5 and message[0] == "PONG"):
        raise ProtocolError("expected PONG after PING")
    _, ok, reason, hostname, digest = message
    if ok is not True:
        raise ProtocolError(f"upstream refused the handshake: {reason}")
    if not isinstance(hostname, str) or not isinstance(digest, str):
        raise ProtocolError("PONG fields must be strings")
    if not hmac.compare_digest(digest, hexdigest(shared_key_salt, hostname, nonce, shared_key)):
        raise ProtocolError("upstream's PONG digest does not match: it holds a different shared_key")


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
