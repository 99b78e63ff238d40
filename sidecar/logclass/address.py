"""HOST:PORT settings and flags, parsed one way everywhere (IPv6 in brackets, empty host = all)."""

from __future__ import annotations

from logclass.errors import LogclassError


class AddressError(LogclassError):
    pass


def split_host_port(address: str, setting: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``"[::1]:50051"`` -> ``("::1", 50051)``; ``":9464"`` -> ``(default_host, 9464)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"{setting}: {address!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return host.strip("[]") or default_host, int(port)
