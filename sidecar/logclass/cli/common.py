"""What several commands share: the config and model options, settings loading, the offline engine."""

from __future__ import annotations

import argparse
import codecs
import json
import typing
from pathlib import Path
from typing import Any, TypeAlias

from logclass import config as config_mod
from logclass.config.settings import LlmBackendName, Settings
from logclass.errors import LogclassError

# A string: argparse's subparsers action is generic only to type checkers.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_USAGE = 2
# `logclass distill` trained a bundle that scored lower than the current one and wrote nothing.
EXIT_REFUSED = 1


class CliError(LogclassError):
    """Shown to the user as one line, exit code 2."""


def load_settings(args: argparse.Namespace, **sections: dict[str, Any]) -> Settings:
    """The config file and env, overridden by the flags of `add_common_options` and by `sections`
    (left out where empty)."""
    overrides: dict[str, Any] = {name: values for name, values in sections.items() if values}
    if getattr(args, "model", None):
        overrides["model"] = {"bundle": str(args.model)}
    llm = _llm_overrides(args)
    if llm:
        overrides["llm"] = llm
    if getattr(args, "budget_ms", None) is not None:
        overrides.setdefault("server", {})["inline_budget_ms"] = args.budget_ms
    return config_mod.load(args.config, overrides=overrides)


def _llm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    llm: dict[str, Any] = {}
    if getattr(args, "llm_backend", None):
        llm["backend"] = args.llm_backend
    if getattr(args, "llm_url", None):
        llm["server"] = {"url": args.llm_url}
    if getattr(args, "llm_model", None):
        remote = llm.get("backend") == "vllm" or bool(getattr(args, "llm_url", None))
        key = "server" if remote else "llamacpp"
        llm.setdefault(key, {})["model"] = args.llm_model
    return llm


def offline_engine(settings: Settings, args: argparse.Namespace, bundle: Any = None) -> Any:
    """The engine for an offline job: every answer is awaited unless --budget-ms says otherwise."""
    from logclass.engine.blocking import BlockingEngine
    from logclass.engine.pipeline import build_engine, unbounded_lanes

    budget = args.budget_ms / 1000.0 if args.budget_ms is not None else None
    offline = unbounded_lanes(settings)
    return BlockingEngine(build_engine(offline, bundle=bundle), budget, settings=offline)


def print_config(settings: Settings) -> int:
    """The effective settings as YAML, secrets redacted."""
    import yaml

    print(yaml.safe_dump(config_mod.redacted(settings), sort_keys=False), end="")
    return 0


def write_json(path: Path, data: Any) -> None:
    """A --json report file."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def encoding(name: str) -> str:
    """An --encoding Python knows, checked before any file is opened."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {name!r}; e.g. utf-8, latin-1 or cp1252") from None
    return name


def add_common_options(parser: argparse.ArgumentParser, model: bool = True) -> None:
    """--config; with `model`, also --model and the LLM tier's flags."""
    parser.add_argument("--config", type=Path, help="YAML config file (overrides the defaults; env LOGCLASS_CONFIG)")
    if not model:
        return
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


def run_sidecar(args: argparse.Namespace, *, grpc: bool, **sections: dict[str, Any]) -> int:
    """`serve` and `relay`: print the effective config (--print-config) or run until stopped."""

    def load() -> Settings:
        return load_settings(args, **sections)

    settings = load()
    if args.print_config:
        return print_config(settings)
    from logclass.serve import run

    # A hot reload re-runs the same loading (config file + env + flags).
    return run(settings, grpc=grpc, load_settings=load, config_path=config_mod.config_path(args.config))
