"""`logclass report`: charts and tables of a classified CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from logclass.cli.common import CliError, Subparsers, add_common_options, encoding, load_settings


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="charts and tables of a classified CSV, as one HTML page and/or PNGs")
    p.add_argument(
        "input",
        type=Path,
        help="output of `logclass classify IN.csv -o OUT.csv`, or a bundle (or work folder) of `logclass bootstrap`",
    )
    p.add_argument("-o", "--output", type=Path, help="HTML file to write (self-contained: images embedded)")
    p.add_argument("--png", type=Path, metavar="DIR", help="also write each chart as DIR/<name>.png")
    p.add_argument(
        "--gold",
        metavar="COLUMN",
        help="column with the right answers (default: input_target_label, where classify keeps the input's "
        "own target_label)",
    )
    p.add_argument("--templates", type=int, default=10, metavar="N", help="templates listed per label (default 10)")
    p.add_argument("--examples", type=int, default=25, metavar="N", help="low-confidence examples listed (default 25)")
    p.add_argument("--encoding", type=encoding, default="utf-8", help="CSV text encoding (default utf-8)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars on stderr")
    add_common_options(p, model=False)
    return p


def run(args: argparse.Namespace) -> int:
    if args.input.is_dir():
        return _bootstrap_report(args.input)
    from logclass.jobs.report import ReportOptions, build_report

    if args.templates < 1 or args.examples < 1:
        raise CliError("--templates and --examples must be at least 1")
    options = ReportOptions(
        gold=args.gold,
        templates_per_label=args.templates,
        examples=args.examples,
        encoding=args.encoding,
        progress=args.progress,
    )
    result = build_report(args.input, args.output, args.png, load_settings(args), options)
    written = [str(p) for p in ([result.html] if result.html else []) + result.pngs]
    print(f"{result.rows:,} records, {len(result.charts)} charts: wrote {', '.join(written)}", file=sys.stderr)
    return 0


def _bootstrap_report(folder: Path) -> int:
    """The report `logclass bootstrap` wrote into its bundle and work folder, as text."""
    from logclass.training.bootstrap.report import format_report, read_report

    print(format_report(read_report(folder)))
    return 0
