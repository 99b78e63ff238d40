"""`logclass serve`: the classification sidecar (gRPC, the HTTP API and the web console)."""

from __future__ import annotations

import argparse
from typing import Any

from logclass.cli.common import Subparsers, add_common_options, run_sidecar


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the classification sidecar: gRPC, the HTTP API and the web console")
    p.add_argument("--listen", help="gRPC host:port (overrides server.listen; '' for none)")
    p.add_argument("--unix-socket", help="unix socket path (overrides server.unix_socket)")
    p.add_argument("--http-listen", help="HTTP API and console host:port (overrides server.http_listen; '' for none)")
    p.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    add_common_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    return run_sidecar(args, grpc=True, server=_server_overrides(args))


def _server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    # An empty value turns the listener off (None), where leaving the flag out keeps the config's.
    if args.listen is not None:
        server["listen"] = args.listen or None
    if args.unix_socket is not None:
        server["unix_socket"] = args.unix_socket or None
    if args.http_listen is not None:
        server["http_listen"] = args.http_listen or None
    return server
