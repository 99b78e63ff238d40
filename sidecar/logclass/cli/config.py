"""`logclass config`: the effective configuration."""

from __future__ import annotations

import argparse

from logclass.cli.common import Subparsers, add_common_options, load_settings, print_config


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("config", help="print the effective configuration")
    add_common_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    return print_config(load_settings(args))
