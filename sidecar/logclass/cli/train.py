"""`logclass train`: a model bundle from a labelled CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from logclass.cli.common import Subparsers, add_common_options, load_settings


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a model bundle from a labelled CSV")
    p.add_argument("data", type=Path, help="CSV with source, log_message, target_label")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write, e.g. models/mymodel")
    p.add_argument("--name", help="bundle name (default: the directory name)")
    p.add_argument(
        "--labels", type=Path, metavar="YAML", help="label descriptions, LLM examples and router profile (labels.yaml)"
    )
    p.add_argument(
        "--test-size", type=float, default=0.0, help="hold-out share, left out of training (default 0: CV only)"
    )
    p.add_argument("--random-state", type=int, default=42)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for choosing features and C")
    p.add_argument("--split", choices=["stratified", "random"], default="stratified")
    p.add_argument(
        "--features",
        choices=["auto", "embedding", "lexical", "both"],
        default="auto",
        help="head features; auto: chosen by cross-validation",
    )
    p.add_argument(
        "--ood-quantile",
        type=float,
        default=0.0,
        help="out-of-distribution threshold: this quantile of the similarity of correctly predicted held-out "
        "templates to their label's training templates (default 0: their minimum)",
    )
    p.add_argument("--memory-min-rows", type=int, default=1, help="rows a template needs to be remembered")
    p.add_argument("--memory-min-purity", type=float, default=0.9, help="share of its rows the top label needs")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="JSONL|CSV|URL",
        help="LLM teacher file (llm.teacher_file), learnt memory (memory.learnt_file), a `logclass bootstrap` "
        "review file (CSV: its corrected rows), or the shared store's lessons (redis:// or rediss:// URL; "
        "store.password_file and store.key_prefix from the config)",
    )
    p.add_argument("--no-progress", action="store_true")
    add_common_options(p, model=False)
    return p


def run(args: argparse.Namespace) -> int:
    from logclass.training.train import TrainOptions, train

    settings = load_settings(args)
    options = TrainOptions(
        test_size=args.test_size,
        random_state=args.random_state,
        folds=args.folds,
        split=args.split,
        features=args.features,
        name=args.name,
        extra=args.extra,
        labels_file=args.labels,
        memory_min_rows=args.memory_min_rows,
        memory_min_purity=args.memory_min_purity,
        ood_quantile=args.ood_quantile,
    )
    train(args.data, args.out, settings, options, progress=not args.no_progress)
    return 0
