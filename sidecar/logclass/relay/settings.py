"""The relay's settings: the typed ``relay`` section plus what its values name, resolved once.

The schema checks shapes; this module checks what the schema cannot (readable secret files, a
parsable listen address, key paths, TLS files given in pairs, at least one upstream) and says
which setting to fix.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logclass.address import AddressError, split_host_port
from logclass.config.settings import (
    OptOutCondition,
    RelaySectionSettings,
    ServerTlsSettings,
    Settings,
    UpstreamSettings,
    UpstreamTlsSettings,
)
from logclass.relay import RelayError
from logclass.relay.keypath import KeyPath
from logclass.relay.protocol import DecodeLimits
from logclass.secrets import SecretError, SecurityConfigError, read_secret, tls_files


@dataclass(frozen=True, slots=True)
class Upstream:
    """A next hop with its secrets read (``shared_key_file``, ``password_file``)."""

    settings: UpstreamSettings
    shared_key: str | None
    password: str

    @property
    def host(self) -> str:
        return self.settings.host

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def username(self) -> str:
        return self.settings.username or ""

    @property
    def tls(self) -> UpstreamTlsSettings | None:
        return self.settings.tls

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class OptOut:
    """One ``relay.opt_out`` condition, parsed: the record's value at ``key``, as text, equals
    ``equals`` ignoring case and surrounding spaces (annotations are strings, but "False" and
    " false" are what people type)."""

    key: KeyPath
    equals: str

    def matches(self, record: dict[Any, Any]) -> bool:
        value = _as_text(self.key.get(record))
        return value is not None and value.strip().casefold() == self.equals

    @classmethod
    def of(cls, condition: OptOutCondition, setting: str) -> OptOut:
        return cls(KeyPath(condition.key, f"{setting}.key"), condition.equals.strip().casefold())


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """The ``relay`` section (``section``) and what its values name, resolved and checked once:
    the parsed listen address and key paths, the secrets read, the buffer folder, the budget."""

    section: RelaySectionSettings
    host: str
    port: int
    message_key: KeyPath
    # relay.source_key in order: the first holding a non-empty string names the record's source.
    source_keys: tuple[KeyPath, ...]
    opt_out: tuple[OptOut, ...]
    # How long a read of requests waits for model answers (relay.budget_ms, else server.inline_budget_ms).
    budget_s: float
    # relay.fallback_label, else router.fallback_label: one label for "not decided", whichever the
    # cause; the tier (fallback vs none/pending) and the reason key tell the causes apart.
    fallback_label: str
    hostname: str
    shared_key: str | None
    users: dict[str, str]
    # relay.tls when it turns TLS on (cert_file and key_file), else None.
    tls: ServerTlsSettings | None
    buffer_path: Path
    upstreams: list[Upstream]
    grace_s: float

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def limits(self) -> DecodeLimits:
        section = self.section
        return DecodeLimits(section.max_request_bytes, section.max_request_objects, section.max_container_len)


def resolve(settings: Settings) -> RelaySettings:
    """The relay of ``settings``; raises RelayError naming the setting to fix."""
    relay = settings.relay
    host, port = split_address(relay.listen, "relay.listen")
    auth = relay.auth
    budget_ms = relay.budget_ms
    if budget_ms is None:
        # With the hold, a record of a new template waits in the buffer, not in the request: the
        # known records sent with it need not wait for its model at all.
        budget_ms = 0 if relay.hold.max_s > 0 else settings.server.inline_budget_ms
    return RelaySettings(
        section=relay,
        host=host,
        port=port,
        message_key=KeyPath(relay.message_key, "relay.message_key"),
        source_keys=source_keys(relay.source_key),
        opt_out=tuple(OptOut.of(c, f"relay.opt_out[{i}]") for i, c in enumerate(relay.opt_out)),
        budget_s=budget_ms / 1000.0,
        fallback_label=relay.fallback_label or settings.router.fallback_label,
        hostname=relay.hostname or socket.gethostname(),
        shared_key=_secret(auth.shared_key, auth.shared_key_file, "relay.auth.shared_key"),
        users={u.username: u.password for u in auth.users},
        tls=_server_tls(relay.tls),
        buffer_path=Path(relay.buffer.path) if relay.buffer.path else default_buffer_path(),
        upstreams=[_upstream(u, i) for i, u in enumerate(relay.upstreams)],
        grace_s=settings.server.grace_seconds,
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


def source_keys(spec: str | tuple[str, ...] | None) -> tuple[KeyPath, ...]:
    """relay.source_key as key paths: one string is a list of one (the form before lists)."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        return (KeyPath(spec, "relay.source_key"),)
    return tuple(KeyPath(item, f"relay.source_key[{i}]") for i, item in enumerate(spec))


def _as_text(value: object) -> str | None:
    """A record value compared as text: strings, bytes, booleans (JSON true/false) and numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


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


def _server_tls(tls: ServerTlsSettings) -> ServerTlsSettings | None:
    try:
        files = tls_files(tls, "relay")
    except SecurityConfigError as exc:
        raise RelayError(str(exc)) from None
    return None if files is None else tls


def _upstream(item: UpstreamSettings, index: int) -> Upstream:
    where = f"relay.upstreams[{index}]"
    return Upstream(
        settings=item,
        shared_key=_secret(item.shared_key, item.shared_key_file, f"{where}.shared_key"),
        password=_secret(item.password, item.password_file, f"{where}.password") or "",
    )
