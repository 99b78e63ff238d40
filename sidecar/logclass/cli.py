"""The `logclass` command."""

from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logclass import __version__
from logclass import config as config_mod
from logclass.config.settings import LlmBackendName, Settings
from logclass.errors import LogclassError

EXIT_USAGE = 2
# `logclass distill` trained a bundle that scored lower than the current one and wrote nothing.
EXIT_REFUSED = 1


class CliError(LogclassError):
    """Shown to the user as one line, exit code 2."""


def _load_settings(args: argparse.Namespace, **sections: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = dict(sections)
    if getattr(args, "model", None):
        overrides["model"] = {"bundle": str(args.model)}
    llm: dict[str, Any] = {}
    if getattr(args, "llm_backend", None):
        llm["backend"] = args.llm_backend
    if getattr(args, "llm_url", None):
        llm["server"] = {"url": args.llm_url}
    if getattr(args, "llm_model", None):
        remote = llm.get("backend") == "vllm" or bool(getattr(args, "llm_url", None))
        key = "server" if remote else "llamacpp"
        llm.setdefault(key, {})["model"] = args.llm_model
    if llm:
        overrides["llm"] = llm
    if getattr(args, "budget_ms", None) is not None:
        overrides.setdefault("server", {})["inline_budget_ms"] = args.budget_ms
    return config_mod.load(args.config, overrides=overrides)


def _offline_engine(settings: Settings, args: argparse.Namespace, bundle: Any = None) -> Any:
    """The engine for an offline job: every answer is awaited unless --budget-ms says otherwise."""
    from logclass.engine.blocking import BlockingEngine
    from logclass.engine.pipeline import build_engine, unbounded_lanes

    budget = args.budget_ms / 1000.0 if args.budget_ms is not None else None
    return BlockingEngine(build_engine(unbounded_lanes(settings), bundle=bundle), budget)


def cmd_classify(args: argparse.Namespace) -> int:
    import grpc

    from logclass.jobs.csv_classify import BatchClassifier, classify_csv

    settings = _load_settings(args)
    router: BatchClassifier
    if args.server:
        from logclass.client import ClassifierClient

        # A batch job: the server waits for every answer (up to the call's deadline).
        budget_ms = args.budget_ms if args.budget_ms is not None else None
        router = ClassifierClient(
            args.server,
            batch_size=min(args.chunk_rows, 1000),
            timeout=600.0,
            budget_ms=budget_ms,
            wait_for_all=budget_ms is None,
        )
    else:
        router = _offline_engine(settings, args)
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


def cmd_train(args: argparse.Namespace) -> int:
    from logclass.training.train import TrainOptions, train

    settings = _load_settings(args)
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


def cmd_distill(args: argparse.Namespace) -> int:
    from logclass.training.distill import DEFAULT_HOLDOUT, DistillOptions, DistillRefused, Holdout, distill
    from logclass.training.train import TrainOptions

    if not args.retune and (args.features is not None or args.folds is not None):
        raise CliError("--features and --folds need --retune: without it distill retrains with the bundle's recipe")
    settings = _load_settings(args)
    options = DistillOptions(
        train=TrainOptions(
            folds=args.folds or 5, features=args.features or "auto", name=args.name, labels_file=args.labels
        ),
        holdout=None
        if args.holdout_size is None and args.random_state is None and args.split is None
        else Holdout(
            DEFAULT_HOLDOUT.test_size if args.holdout_size is None else args.holdout_size,
            DEFAULT_HOLDOUT.random_state if args.random_state is None else args.random_state,
            args.split or DEFAULT_HOLDOUT.split,
        ),
        tolerance=args.tolerance,
        retune=args.retune,
        link=args.link,
    )
    try:
        report = distill(
            args.data, args.teacher, args.model, args.out, settings, options, progress=not args.no_progress
        )
    except DistillRefused as exc:
        print(f"logclass distill: {exc}", file=sys.stderr)
        if args.json:
            Path(args.json).write_text(json.dumps(exc.report, indent=2) + "\n", encoding="utf-8")
        return EXIT_REFUSED
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"accepted: macro-F1 {report['current']['macro_f1']:.4f} -> {report['new']['macro_f1']:.4f}; wrote {args.out}"
        + (f"; {args.link} -> {args.out}" if args.link else "")
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from logclass.engine.pipeline import load_configured_bundle
    from logclass.training.evaluate import evaluate, format_report

    settings = _load_settings(args)
    bundle = load_configured_bundle(settings)
    if args.holdout and bundle is None:
        raise CliError(
            "--holdout leaves out the bundle's training rows, but router.tiers uses no bundle "
            "(no memory or embedding tier, and llm.labels is set): add such a tier or drop --holdout"
        )
    router = _offline_engine(settings, args, bundle)
    try:
        report = evaluate(args.data, router, bundle=bundle, holdout=args.holdout, progress=not args.no_progress)
    finally:
        router.close()
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
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
    result = build_report(args.input, args.output, args.png, _load_settings(args), options)
    written = [str(p) for p in ([result.html] if result.html else []) + result.pngs]
    print(f"{result.rows:,} records, {len(result.charts)} charts: wrote {', '.join(written)}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    server: dict[str, Any] = {}
    if args.listen is not None:
        server["listen"] = args.listen or None
    if args.unix_socket is not None:
        server["unix_socket"] = args.unix_socket or None
    if args.http_listen is not None:
        server["http_listen"] = args.http_listen or None

    def load() -> Settings:
        return _load_settings(args, server=server) if server else _load_settings(args)

    settings = load()
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_mod.redacted(settings), sort_keys=False), end="")
        return 0
    from logclass.serve import run

    # A hot reload re-runs the same loading (config file + env + flags).
    return run(settings, load_settings=load, config_path=config_mod.config_path(args.config))


def cmd_relay(args: argparse.Namespace) -> int:
    relay: dict[str, Any] = {}
    if args.listen:
        relay["listen"] = args.listen
    if args.upstream:
        relay["upstreams"] = [_upstream_arg(u) for u in args.upstream]
    if args.buffer_path:
        relay["buffer"] = {"path": str(args.buffer_path)}
    if args.no_classify:
        relay["classify"] = False

    def load() -> Settings:
        return _load_settings(args, relay=relay) if relay else _load_settings(args)

    settings = load()
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_mod.redacted(settings), sort_keys=False), end="")
        return 0
    from logclass.serve import run

    return run(settings, grpc=False, load_settings=load, config_path=config_mod.config_path(args.config))


def _upstream_arg(value: str) -> dict[str, Any]:
    from logclass.address import AddressError, split_host_port

    try:
        host, port = split_host_port(value, "--upstream", default_host="")
    except AddressError as exc:
        raise CliError(str(exc)) from exc
    if not host:
        raise CliError(f"--upstream {value!r}: the host is missing (HOST:PORT)")
    return {"host": host, "port": port}


def cmd_export_encoder(args: argparse.Namespace) -> int:
    """Make (or verify) the ONNX exports now, so no serve or classify pays for them on first use."""
    from logclass.encoders.export import ensure_export
    from logclass.encoders.model import model_folder

    embedding = _load_settings(args).embedding
    source = model_folder(embedding.model_path)
    for variant in dict.fromkeys(args.variant or ["int8"]):
        path = ensure_export(source, variant, embedding.cache_dir, log=lambda m: print(m, file=sys.stderr))
        print(path)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(config_mod.redacted(_load_settings(args)), sort_keys=False), end="")
    return 0


def _encoding(name: str) -> str:
    """An --encoding Python knows, checked before any file is opened."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {name!r}; e.g. utf-8, latin-1 or cp1252") from None
    return name


def _common(parser: argparse.ArgumentParser, model: bool = True) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (overrides the defaults; env LOGCLASS_CONFIG)")
    if model:
        parser.add_argument("--model", type=Path, help="model bundle directory (default: the shipped one)")
        g = parser.add_argument_group("LLM tier (override the llm config section)")
        g.add_argument("--llm-backend", choices=typing.get_args(LlmBackendName), help="llm.backend")
        g.add_argument("--llm-url", metavar="URL", help="OpenAI-compatible base URL, e.g. http://vllm:8000/v1")
        g.add_argument("--llm-model", help="model name on the server, or llama.cpp model name or .gguf path")
        g.add_argument(
            "--budget-ms",
            type=int,
            metavar="MS",
            help="how long to wait for model answers per batch before records get tier pending "
            "(offline jobs: every answer by default; serve/relay: server.inline_budget_ms)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logclass", description="Inline log classification.")
    parser.add_argument("--version", action="version", version=f"logclass {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="classify a CSV of logs (source, log_message)")
    p.add_argument("input", type=Path, help="input CSV with source and log_message columns")
    p.add_argument("-o", "--output", help="output CSV ('-' for stdout); without it a table is printed")
    p.add_argument("--chunk-rows", type=int, default=2048, help="rows per batch (memory stays constant)")
    p.add_argument("--encoding", type=_encoding, default="utf-8", help="input text encoding (default utf-8)")
    p.add_argument(
        "--server", metavar="ADDR", help="classify through a running sidecar (host:port) instead of in-process"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar on stderr")
    _common(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("train", help="train a model bundle from a labelled CSV")
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
        "--extra", type=Path, action="append", default=[], metavar="JSONL", help="LLM teacher file (llm.teacher_file)"
    )
    p.add_argument("--no-progress", action="store_true")
    _common(p, model=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
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
    _common(p, model=False)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="end-to-end and per-tier report on a labelled CSV")
    p.add_argument("data", type=Path, help="CSV with source, log_message, target_label")
    p.add_argument("--holdout", action="store_true", help="only rows the bundle was not trained on")
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="charts and tables of a classified CSV, as one HTML page and/or PNGs")
    p.add_argument("input", type=Path, help="output of `logclass classify IN.csv -o OUT.csv`")
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
    p.add_argument("--encoding", type=_encoding, default="utf-8", help="CSV text encoding (default utf-8)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars on stderr")
    _common(p, model=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="run the classification sidecar: gRPC, the HTTP API and the web console")
    p.add_argument("--listen", help="gRPC host:port (overrides server.listen; '' for none)")
    p.add_argument("--unix-socket", help="unix socket path (overrides server.unix_socket)")
    p.add_argument("--http-listen", help="HTTP API and console host:port (overrides server.http_listen; '' for none)")
    p.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    _common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("relay", help="run the Forward-protocol relay (Fluent Bit, Fluentd) without gRPC")
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
    _common(p)
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser(
        "export-encoder", help="export the embedding model to ONNX into the cache now (else done on first use)"
    )
    p.add_argument(
        "--variant",
        action="append",
        choices=["fp32", "int8", "fp16"],
        help="int8: embedding.backend onnx-int8 (the default); fp32: onnx on CPU; fp16: onnx on CUDA. Repeatable",
    )
    _common(p, model=False)
    p.set_defaults(func=cmd_export_encoder)

    p = sub.add_parser("config", help="print the effective configuration")
    _common(p)
    p.set_defaults(func=cmd_config)
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


if __name__ == "__main__":
    sys.exit(main())
