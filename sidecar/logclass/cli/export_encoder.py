"""`logclass export-encoder`: the embedding model's ONNX exports, made ahead of the first serve."""

from __future__ import annotations

import argparse
import sys

from logclass.cli.common import Subparsers, add_common_options, load_settings


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export-encoder", help="export the embedding model to ONNX into the cache now (else done on first use)"
    )
    p.add_argument(
        "--variant",
        action="append",
        choices=["fp32", "int8", "fp16"],
        help="int8: embedding.backend onnx-int8 (the default); fp32: onnx on CPU; fp16: onnx on CUDA. Repeatable",
    )
    add_common_options(p, model=False)
    return p


def run(args: argparse.Namespace) -> int:
    """Make (or verify) the ONNX exports now, so no serve or classify pays for them on first use."""
    from logclass.encoders.export import ensure_export
    from logclass.encoders.model import model_folder

    embedding = load_settings(args).embedding
    source = model_folder(embedding.model_path)
    for variant in dict.fromkeys(args.variant or ["int8"]):
        path = ensure_export(source, variant, embedding.cache_dir, log=lambda m: print(m, file=sys.stderr))
        print(path)
    return 0
