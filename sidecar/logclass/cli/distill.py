"""`logclass distill`: retrain with an LLM teacher file, and keep the result only if it is no worse."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from logclass.cli.common import EXIT_REFUSED, CliError, Subparsers, add_common_options, load_settings, write_json

if TYPE_CHECKING:
    from logclass.training.distill import DistillOptions


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "distill",
        help="retrain with an LLM teacher file; write the new bundle only if hold-out macro-F1 did not drop",
    )
    p.add_argument("--data", type=Path, required=True, help="the original labelled CSV")
    p.add_argument(
        "--teacher", type=Path, action="append", required=True, metavar="JSONL", help="LLM teacher file; repeatable"
    )
    p.add_argument("--model", type=Path, required=True, help="the current bundle, scored on the same hold-out")
    p.add_argument("--out", type=Path, required=True, help="new bundle directory (must not exist)")
    p.add_argument("--name", help="bundle name (default: the directory name)")
    p.add_argument("--labels", type=Path, metavar="YAML", help="labels.yaml, as for train")
    g = p.add_argument_group(
        "hold-out (default: the split the --model bundle's manifest records for the same CSV, else 0.2, seed 42)"
    )
    g.add_argument("--holdout-size", type=float, help="share of the CSV held out for the comparison")
    g.add_argument("--random-state", type=int, help="seed of the hold-out split and the folds")
    g.add_argument("--split", choices=["stratified", "random"])
    p.add_argument(
        "--retune",
        action="store_true",
        help="choose features and C by CV as train does (default: the --model bundle's recorded recipe)",
    )
    p.add_argument("--folds", type=int, help="with --retune (default 5)")
    p.add_argument("--features", choices=["auto", "embedding", "lexical", "both"], help="with --retune (default auto)")
    p.add_argument(
        "--link",
        type=Path,
        metavar="SYMLINK",
        help="on acceptance, atomically point this symlink at --out (a sidecar's model.bundle; reload picks it up)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="macro-F1 the new bundle may lose and still be written (default 0: it must not drop)",
    )
    p.add_argument("--json", type=Path, help="also write the comparison as JSON (written when refused too)")
    p.add_argument("--no-progress", action="store_true")
    add_common_options(p, model=False)
    return p


def run(args: argparse.Namespace) -> int:
    from logclass.training.distill import DistillRefused, distill

    if not args.retune and (args.features is not None or args.folds is not None):
        raise CliError("--features and --folds need --retune: without it distill retrains with the bundle's recipe")
    settings = load_settings(args)
    options = _options(args)
    try:
        report = distill(
            args.data, args.teacher, args.model, args.out, settings, options, progress=not args.no_progress
        )
    except DistillRefused as exc:
        print(f"logclass distill: {exc}", file=sys.stderr)
        if args.json:
            write_json(args.json, exc.report)
        return EXIT_REFUSED
    if args.json:
        write_json(args.json, report)
    print(
        f"accepted: macro-F1 {report['current']['macro_f1']:.4f} -> {report['new']['macro_f1']:.4f}; wrote {args.out}"
        + (f"; {args.link} -> {args.out}" if args.link else "")
    )
    return 0


def _options(args: argparse.Namespace) -> DistillOptions:
    from logclass.training.distill import DEFAULT_HOLDOUT, DistillOptions, Holdout
    from logclass.training.train import TrainOptions

    # No hold-out flag: distill reuses the split the bundle's manifest records.
    holdout = (
        None
        if args.holdout_size is None and args.random_state is None and args.split is None
        else Holdout(
            DEFAULT_HOLDOUT.test_size if args.holdout_size is None else args.holdout_size,
            DEFAULT_HOLDOUT.random_state if args.random_state is None else args.random_state,
            args.split or DEFAULT_HOLDOUT.split,
        )
    )
    return DistillOptions(
        train=TrainOptions(
            folds=args.folds or 5, features=args.features or "auto", name=args.name, labels_file=args.labels
        ),
        holdout=holdout,
        tolerance=args.tolerance,
        retune=args.retune,
        link=args.link,
    )
