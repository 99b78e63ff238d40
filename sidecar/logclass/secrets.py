"""Secrets given in a config either inline (``X``) or as a file holding them (``X_file``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from logclass.config.settings import ServerAuthSettings, ServerSettings, ServerTlsSettings
from logclass.errors import LogclassError


class SecretError(LogclassError):
    """A secret setting cannot be used; ``reason`` and ``strerror`` let callers word their own message."""

    def __init__(
        self, message: str, reason: Literal["both", "unreadable", "empty"], strerror: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.strerror = strerror


def read_secret(value: Any, path: str | None, setting: str) -> Any:
    """``value``, or the stripped contents of the file at ``path``; None when neither is given.

    ``setting`` names the inline setting (``relay.auth.shared_key``); the file setting is ``{setting}_file``.
    """
    if value and path:
        raise SecretError(f"set {setting} or {setting}_file, not both", "both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read {setting}_file {path}: {exc.strerror}", "unreadable", exc.strerror) from exc
        if not value:
            raise SecretError(f"{setting}_file {path} is empty", "empty")
    return value or None


class SecurityConfigError(LogclassError):
    pass


def tls_files(tls: ServerTlsSettings, section: str) -> tuple[str, str, str | None] | None:
    """``(cert_file, key_file, client_ca_file)`` of a server's ``{section}.tls``; None for plaintext."""
    cert, key, client_ca = tls.cert_file, tls.key_file, tls.client_ca_file
    if not cert and not key:
        if client_ca:
            raise SecurityConfigError(f"{section}.tls.client_ca_file needs {section}.tls.cert_file and key_file too")
        return None
    if not (cert and key):
        raise SecurityConfigError(f"{section}.tls needs both cert_file and key_file")
    return cert, key, client_ca


def metrics_tls(server: ServerSettings) -> tuple[str, str] | None:
    """(cert_file, key_file) for /metrics when ``server.metrics_tls`` asks for TLS, else None."""
    if not server.metrics_tls:
        return None
    files = tls_files(server.tls, "server")
    if files is None:
        raise SecurityConfigError(
            "server.metrics_tls needs server.tls.cert_file and key_file (the certificate it serves)"
        )
    return files[0], files[1]


def load_token(auth: ServerAuthSettings, setting: str = "server.auth") -> str | None:
    """The bearer token callers of ``setting`` (``server.auth``, ``server.admin_auth``) must
    present; None: no token required."""
    try:
        token = read_secret(auth.token, auth.token_file, f"{setting}.token")
    except SecretError as exc:
        raise SecurityConfigError(str(exc)) from exc.__cause__
    return str(token) if token else None
