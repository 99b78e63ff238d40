"""The ``relay`` config section as typed values, checked once at start-up.

The schema checks shapes; this module checks what the schema cannot (readable files, a parsable
listen address, key paths, at least one upstream) and says which setting to fix.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logclass import config as config_mod
from logclass.address import AddressError, split_host_port
from logclass.relay import RelayError
from logclass.relay.keypath import KeyPath
from logclass.secrets import SecretError, SecurityConfigError, read_secret, tls_files


@dataclass(frozen=True, slots=True)
class OutputKeys:
    label: str | None
    tier: str | None
    confidence: str | None
    fallback_reason: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None  # servers: client CA (mutual TLS); clients: CA to verify the server
    verify: bool = True
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int
    shared_key: str | None = None
    username: str = ""
    password: str = ""
    tls: TlsFiles | None = None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RelaySettings:
    host: str
    port: int
    udp_heartbeat: bool
    max_request_bytes: int
    classify: bool
    message_key: KeyPath
    source_key: KeyPath | None
    source: str | None
    output: OutputKeys
    fallback_label: str
    tag_missing_message: bool
    classify_timeout_s: float
    # How long a read of requests waits for model answers (relay.budget_ms, else server.inline_budget_ms).
    budget_s: float
    hostname: str
    shared_key: str | None
    users: dict[str, str]
    tls: TlsFiles | None
    buffer_path: Path
    buffer_max_bytes: int
    full_wait_s: float
    upstreams: list[Upstream]
    ack_timeout_s: float
    connect_timeout_s: float
    max_inflight_chunks: int
    max_chunk_bytes: int
    compress: bool
    retry_initial_s: float
    retry_max_s: float
    failback_s: float
    grace_s: float
    metrics_listen: str | None

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


def from_config(cfg: config_mod.Config) -> RelaySettings:
    relay = cfg["relay"]
    host, port = split_address(relay["listen"], "relay.listen")
    out = relay["output"]
    forward = relay["forward"]
    buffer = relay["buffer"]
    auth = relay["auth"]
    return RelaySettings(
        host=host,
        port=port,
        udp_heartbeat=relay["udp_heartbeat"],
        max_request_bytes=relay["max_request_bytes"],
        classify=relay["classify"],
        message_key=KeyPath(relay["message_key"], "relay.message_key"),
        source_key=KeyPath(relay["source_key"], "relay.source_key") if relay.get("source_key") else None,
        source=relay.get("source"),
        output=OutputKeys(
            out.get("label_key"),
            out.get("tier_key"),
            out.get("confidence_key"),
            out.get("fallback_reason_key"),
            out.get("error_key"),
        ),
        # null: the router's label, so "not classified" is one label; tier and reason tell why.
        fallback_label=relay["fallback_label"] or cfg["router"]["fallback_label"],
        tag_missing_message=relay["tag_missing_message"],
        classify_timeout_s=relay["classify_timeout_ms"] / 1000.0,
        budget_s=(relay["budget_ms"] if relay.get("budget_ms") is not None else cfg["server"]["inline_budget_ms"])
        / 1000.0,
        hostname=relay.get("hostname") or socket.gethostname(),
        shared_key=_secret(auth.get("shared_key"), auth.get("shared_key_file"), "relay.auth.shared_key"),
        users={u["username"]: u["password"] for u in auth.get("users") or []},
        tls=_server_tls(relay.get("tls") or {}),
        buffer_path=Path(buffer["path"]) if buffer.get("path") else default_buffer_path(),
        buffer_max_bytes=buffer["max_bytes"],
        full_wait_s=buffer["full_wait_s"],
        upstreams=[_upstream(u, i) for i, u in enumerate(relay["upstreams"])],
        ack_timeout_s=forward["ack_timeout_s"],
        connect_timeout_s=forward["connect_timeout_s"],
        max_inflight_chunks=forward["max_inflight_chunks"],
        max_chunk_bytes=forward["max_chunk_bytes"],
        compress=forward["compress"] == "gzip",
        retry_initial_s=forward["retry"]["initial_ms"] / 1000.0,
        retry_max_s=forward["retry"]["max_ms"] / 1000.0,
        failback_s=forward["failback_s"],
        grace_s=cfg["server"]["grace_seconds"],
        metrics_listen=relay.get("metrics_listen"),
    )


def check_runnable(settings: RelaySettings) -> None:
    """What a relay about to run needs beyond a valid config."""
    if not settings.upstreams:
        raise RelayError(
            "relay.upstreams is empty: give at least one next hop, e.g. upstreams: [{host: aggregator, port: 24224}] "
            "or `logclass relay --upstream HOST:PORT`"
        )
    if settings.users and not settings.shared_key:
        raise RelayError("relay.auth.users needs relay.auth.shared_key (the handshake carries both)")


def default_buffer_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "logclass" / "relay"


def split_address(address: str, setting: str) -> tuple[str, int]:
    try:
        return split_host_port(address, setting)
    except AddressError as exc:
        raise RelayError(str(exc)) from exc


def _secret(value: str | None, path: str | None, setting: str) -> str | None:
    try:
        secret: str | None = read_secret(value, path, setting)
    except SecretError as exc:
        raise RelayError(str(exc)) from exc.__cause__
    return secret


def _server_tls(tls: dict[str, Any]) -> TlsFiles | None:
    try:
        files = tls_files(tls, "relay")
    except SecurityConfigError as exc:
        raise RelayError(str(exc)) from None
    if files is None:
        return None
    cert, key, client_ca = files
    return TlsFiles(cert_file=cert, key_file=key, ca_file=client_ca)


def _upstream(item: dict[str, Any], index: int) -> Upstream:
    where = f"relay.upstreams[{index}]"
    tls = item.get("tls")
    return Upstream(
        host=item["host"],
        port=item["port"],
        shared_key=_secret(item.get("shared_key"), item.get("shared_key_file"), f"{where}.shared_key"),
        username=item.get("username") or "",
        password=_secret(item.get("password"), item.get("password_file"), f"{where}.password") or "",
        tls=None
        if tls is None
        else TlsFiles(
            cert_file=tls.get("cert_file"),
            key_file=tls.get("key_file"),
            ca_file=tls.get("ca_file"),
            verify=tls.get("verify", True),
            server_name=tls.get("server_name"),
        ),
    )
