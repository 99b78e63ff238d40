"""`logclass classify`: a CSV of logs, classified in-process or by a running sidecar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from logclass.cli.common import CliError, Subparsers, add_common_options, encoding, load_settings, offline_engine

if TYPE_CHECKING:
    from logclass.jobs.chunks import BatchClassifier


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("classify", help="classify a CSV of logs (source, log_message)")
    p.add_argument("input", type=Path, help="input CSV with source and log_message columns")
    p.add_argument("-o", "--output", help="output CSV ('-' for stdout); without it a table is printed")
    p.add_argument("--chunk-rows", type=int, default=2048, help="rows per batch (memory stays constant)")
    p.add_argument("--encoding", type=encoding, default="utf-8", help="input text encoding (default utf-8)")
    p.add_argument(
        "--server", metavar="ADDR", help="classify through a running sidecar (host:port) instead of in-process"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar on stderr")
    add_common_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    import grpc

    from logclass.jobs.csv_classify import classify_csv

    router = _router(args)
    progress = args.progress if args.progress is not None else args.output is not None and args.output != "-"
    try:
        summary = classify_csv(
            args.input,
            args.output,
            router,
            chunk_rows=args.chunk_rows,
            encoding=args.encoding,
            progress=progress,
        )
    except grpc.RpcError as exc:  # the sidecar refused or failed: its log has the cause, not this process
        raise CliError(
            f"--server {args.server}: {exc.code().name} ({exc.details()}); is `logclass serve` running there? "
            "(this command speaks plaintext gRPC without a token: no server.tls or server.auth)"
        ) from exc
    finally:
        router.close()
    print(summary.format(), file=sys.stderr)
    return 0


def _router(args: argparse.Namespace) -> BatchClassifier:
    """A client of the sidecar at --server, else the engine in this process."""
    settings = load_settings(args)
    if not args.server:
        router: BatchClassifier = offline_engine(settings, args)
        return router
    from logclass.client import ClassifierClient

    # A batch job: the server waits for every answer (up to the call's deadline).
    budget_ms = args.budget_ms
    return ClassifierClient(
        args.server,
        batch_size=min(args.chunk_rows, 1000),
        timeout=600.0,
        budget_ms=budget_ms,
        wait_for_all=budget_ms is None,
    )
