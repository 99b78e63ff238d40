"""The `logclass` command: one module per subcommand, each with its options and its handler.

Only the top-level parser lives here. Command modules import what their handler needs inside it,
so `logclass --help` (and any command's start) loads no torch, grpc or pandas.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Protocol

from logclass import __version__
from logclass.cli import (
    bootstrap,
    classify,
    config,
    distill,
    evaluate,
    export_encoder,
    relay,
    report,
    serve,
    train,
)
from logclass.cli.common import EXIT_REFUSED, EXIT_USAGE, Subparsers
from logclass.errors import LogclassError

__all__ = ["EXIT_REFUSED", "EXIT_USAGE", "build_parser", "main"]


class Command(Protocol):
    """What a command module offers."""

    def add_parser(self, subparsers: Subparsers) -> argparse.ArgumentParser: ...

    def run(self, args: argparse.Namespace) -> int: ...


# In the order `logclass --help` lists them.
COMMANDS: tuple[Command, ...] = (
    classify,
    train,
    bootstrap,
    distill,
    evaluate,
    report,
    serve,
    relay,
    export_encoder,
    config,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logclass", description="Inline log classification.")
    parser.add_argument("--version", action="version", version=f"logclass {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers).set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except LogclassError as exc:
        # Only errors raised on purpose: any other exception is a bug and keeps its traceback.
        print(f"logclass {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`logclass classify ... | head`): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
