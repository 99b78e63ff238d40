"""`logclass bootstrap`: a model bundle from raw logs and a labels.yaml, the LLM labelling templates."""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

from logclass.cli.common import Subparsers, add_common_options, load_settings
from logclass.config.settings import LlmBackendName

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)


def size(text: str) -> int:
    """A byte count: 500000, 500K, 2G (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; e.g. 500M or 2G")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " "))


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bootstrap",
        help="a model bundle from raw logs and labels.yaml: the LLM labels each template once",
        description="Mask every line into its template, ask the LLM once per template (most frequent first, "
        "within the budget, answers kept for the next run), and train a bundle on the answers weighted by line "
        "counts. Unsure answers are kept out and listed in the review file.",
    )
    p.add_argument("logs", type=Path, help="a CSV with source,log_message, a log file (one line a record), or a folder")
    p.add_argument("--labels", type=Path, required=True, metavar="YAML", help="labels.yaml: label -> description")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write, e.g. models/mine")
    p.add_argument("--name", help="bundle name (default: the directory name)")
    g = p.add_argument_group("input")
    g.add_argument("--source", help="source of plain log lines (default: the file name without its suffix)")
    g.add_argument(
        "--source-regex",
        metavar="REGEX",
        help="source from each plain line: a regex with a group (?P<source>...), optionally (?P<message>...)",
    )
    g.add_argument("--max-files", type=int, default=10_000, help="most log files in a folder (default 10000)")
    g.add_argument("--max-bytes", type=size, default=2 << 30, help="most bytes of LOGS in all (default 2G)")
    g = p.add_argument_group("the LLM")
    g.add_argument("--max-llm-calls", type=int, metavar="N", help="most LLM calls this run (0: reuse answers only)")
    g.add_argument("--max-minutes", type=float, metavar="M", help="most minutes spent asking the LLM this run")
    g.add_argument(
        "--min-confidence",
        type=float,
        default=0.7,  # BootstrapOptions.min_confidence (imported late: the CLI starts fast)
        help="answers below this confidence stay out of the bundle and go to review (default %(default)s)",
    )
    g.add_argument(
        "--no-written-examples",
        action="store_true",
        help="do not have the LLM write a worked example for each label labels.yaml gives none "
        "(one call per such label, once, kept in WORK/examples.yaml; not counted in --max-llm-calls)",
    )
    g.add_argument("--llm-backend", choices=typing.get_args(LlmBackendName), help="llm.backend")
    g.add_argument("--llm-url", metavar="URL", help="OpenAI-compatible base URL, e.g. http://vllm:8000/v1")
    g.add_argument("--llm-model", help="model name on the server, or llama.cpp model name or .gguf path")
    g = p.add_argument_group("files (default: in the work folder OUT.bootstrap)")
    g.add_argument("--work", type=Path, metavar="DIR", help="work folder: answers, review, labelled rows, report")
    g.add_argument("--answers", type=Path, metavar="JSONL", help="the LLM's answers (teacher-file format); reused")
    g.add_argument("--review", type=Path, metavar="CSV", help="review file to write (one row per template)")
    g.add_argument("--review-in", type=Path, metavar="CSV", help="a reviewed file: its corrected_label wins")
    g = p.add_argument_group("training (as `logclass train`)")
    g.add_argument("--features", choices=["auto", "embedding", "lexical", "both"], default="auto")
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds for choosing features and C")
    g.add_argument("--random-state", type=int, default=42)
    g.add_argument("--no-train", action="store_true", help="ask and write the review file only, no bundle")
    p.add_argument("--no-progress", action="store_true")
    add_common_options(p, model=False)
    return p


def run(args: argparse.Namespace) -> int:
    from logclass.training.bootstrap.report import format_report
    from logclass.training.bootstrap.run import BootstrapOptions, bootstrap

    options = BootstrapOptions(
        labels_file=args.labels,
        work=args.work,
        answers=args.answers,
        review=args.review,
        review_in=args.review_in,
        source=args.source,
        source_regex=args.source_regex,
        max_llm_calls=args.max_llm_calls,
        max_minutes=args.max_minutes,
        min_confidence=args.min_confidence,
        max_files=args.max_files,
        max_bytes=args.max_bytes,
        features=args.features,
        folds=args.folds,
        random_state=args.random_state,
        name=args.name,
        train=not args.no_train,
        write_examples=not args.no_written_examples,
    )
    result = bootstrap(args.logs, args.out, load_settings(args), options, progress=not args.no_progress)
    print(format_report(result.report))
    print(f"review: {result.review}  answers: {result.answers}  work folder: {result.work}")
    return 0
