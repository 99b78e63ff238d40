"""`logclass relay`: the Forward-protocol relay (Fluent Bit, Fluentd), without gRPC."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from logclass.cli.common import CliError, Subparsers, add_common_options, run_sidecar


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("relay", help="run the Forward-protocol relay (Fluent Bit, Fluentd) without gRPC")
    p.add_argument("--listen", help="host:port for senders (overrides relay.listen)")
    p.add_argument(
        "--upstream",
        action="append",
        metavar="HOST:PORT",
        help="next hop; repeat for failover (replaces relay.upstreams)",
    )
    p.add_argument("--buffer-path", type=Path, help="directory of the on-disk buffer (overrides relay.buffer.path)")
    p.add_argument("--no-classify", action="store_true", help="forward records untouched (relay.classify false)")
    p.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    add_common_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    return run_sidecar(args, grpc=False, relay=_relay_overrides(args))


def _relay_overrides(args: argparse.Namespace) -> dict[str, Any]:
    relay: dict[str, Any] = {}
    if args.listen:
        relay["listen"] = args.listen
    if args.upstream:
        relay["upstreams"] = [_upstream(u) for u in args.upstream]
    if args.buffer_path:
        relay["buffer"] = {"path": str(args.buffer_path)}
    if args.no_classify:
        relay["classify"] = False
    return relay


def _upstream(value: str) -> dict[str, Any]:
    from logclass.address import AddressError, split_host_port

    try:
        host, port = split_host_port(value, "--upstream", default_host="")
    except AddressError as exc:
        raise CliError(str(exc)) from exc
    if not host:
        raise CliError(f"--upstream {value!r}: the host is missing (HOST:PORT)")
    return {"host": host, "port": port}
