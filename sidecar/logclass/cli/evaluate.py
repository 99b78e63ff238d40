"""`logclass evaluate`: the end-to-end and per-tier report on a labelled CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from logclass.cli.common import (
    CliError,
    Subparsers,
    add_common_options,
    load_settings,
    offline_engine,
    write_json,
)


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="end-to-end and per-tier report on a labelled CSV")
    p.add_argument("data", type=Path, help="CSV with source, log_message, target_label")
    p.add_argument("--holdout", action="store_true", help="only rows the bundle was not trained on")
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true")
    add_common_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    from logclass.engine.pipeline import load_configured_bundle
    from logclass.training.evaluate import evaluate, format_report

    settings = load_settings(args)
    bundle = load_configured_bundle(settings)
    if args.holdout and bundle is None:
        raise CliError(
            "--holdout leaves out the bundle's training rows, but router.tiers uses no bundle "
            "(no memory or embedding tier, and llm.labels is set): add such a tier or drop --holdout"
        )
    router = offline_engine(settings, args, bundle)
    try:
        report = evaluate(args.data, router, bundle=bundle, holdout=args.holdout, progress=not args.no_progress)
    finally:
        router.close()
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return 0
