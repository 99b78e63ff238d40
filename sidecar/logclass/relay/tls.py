"""TLS contexts for the relay: towards senders (server side) and towards upstreams (client side)."""

from __future__ import annotations

import ssl

from logclass.config.settings import ServerTlsSettings, UpstreamTlsSettings
from logclass.relay import RelayError


def server_context(tls: ServerTlsSettings) -> ssl.SSLContext:
    """Certificate and key for senders; with ``client_ca_file``, senders must show a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, tls, "relay.tls")
    if tls.client_ca_file:
        _load_ca(context, tls.client_ca_file, "relay.tls.client_ca_file")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(tls: UpstreamTlsSettings, upstream: str) -> ssl.SSLContext:
    """Verifies the upstream against ``ca_file`` (else the system CAs) unless ``verify`` is false."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    setting = f"relay.upstreams {upstream} tls"
    if tls.ca_file:
        _load_ca(context, tls.ca_file, f"{setting}.ca_file")
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file or tls.key_file:
        _load_chain(context, tls, setting)
    return context


def _load_chain(context: ssl.SSLContext, tls: ServerTlsSettings | UpstreamTlsSettings, setting: str) -> None:
    if not (tls.cert_file and tls.key_file):
        raise RelayError(f"{setting} needs both cert_file and key_file")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise RelayError(f"cannot load {setting}.cert_file/key_file ({tls.cert_file}, {tls.key_file}): {exc}") from exc


def _load_ca(context: ssl.SSLContext, path: str, setting: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise RelayError(f"cannot load {setting} {path}: {exc}") from exc
