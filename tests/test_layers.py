"""The layout shows the layers: imports only point down, and no front end imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

SIDECAR = ROOT / "sidecar" / "logclass"
# Lower number = lower layer. A module may import lower layers only (and its own package).
# core < config < encoders/tiers < engine < batch jobs < front ends < serve < cli.
LAYERS = {
    "core": 0,
    "config": 1,
    # Tokens and TLS files named by the settings: read by tiers (the LLM server) and front ends.
    "secrets": 2,
    "encoders": 2,
    "tiers": 3,
    # Transport security the front ends share (gRPC credentials, the bearer-token interceptor,
    # uvicorn's TLS options, the constant-time token compare), made of secrets' settings readers.
    "security": 3,
    # The shared store (Valkey/Redis) the engine asks for decisions and claims.
    "store": 3,
    "engine": 4,
    # Below the front ends, made of the engine's runtime: batch jobs (CSV rules, the chunk
    # pipeline, the report), the transport-free calls gRPC and HTTP share, and hot reload.
    "jobs": 5,
    "service": 5,
    "reload": 5,
    # Training runs the engine over labelled rows (evaluate, distill) and writes bundles.
    "training": 6,
    # The transport-free durable buffer (chunk store, fsync, dead letters) the relay and otlp share.
    "delivery": 6,
    "server": 7,
    "http": 7,
    "relay": 7,
    # The OpenTelemetry logs front end (OTLP/gRPC and OTLP/HTTP).
    "otlp": 7,
    # The gRPC client (`logclass classify --server`) calls a front end; only the CLI uses it.
    "client": 7,
    "serve": 8,
    "cli": 9,
}
FRONT_ENDS = {"server", "http", "relay", "otlp"}
# Below every layer and importable from any: the contract's stubs and tables, the error base,
# the default bundle, and small helpers with no logic of the layers.
SHARED = {"__init__", "address", "api", "errors", "logs", "models"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("logclass."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("logclass."))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SIDECAR.rglob("*.py")):
        top = path.relative_to(SIDECAR).parts[0].removesuffix(".py")
        if top in LAYERS:
            out.append((top, path))
    return out


@pytest.mark.parametrize(("layer", "path"), _modules(), ids=lambda v: str(v) if isinstance(v, str) else v.name)
def test_imports_point_down(layer: str, path: Path) -> None:
    for target in _imports(path):
        if target not in LAYERS or target == layer:
            continue  # shared modules (errors, api, address, logs, models) and the package itself
        assert not (layer in FRONT_ENDS and target in FRONT_ENDS), f"{path}: front end {layer} imports {target}"
        assert LAYERS[target] < LAYERS[layer], f"{path}: {layer} imports {target}, a higher layer"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from logclass.server.app import GrpcFrontEnd\nimport logclass.relay.app\n", encoding="utf-8")
    assert _imports(bad) == {"server", "relay"}


def test_every_top_level_module_has_a_place() -> None:
    """A new top-level module or package is given a layer (or named shared), so the checks above
    cover it."""
    tops = {p.name.removesuffix(".py") for p in SIDECAR.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert tops - set(LAYERS) - SHARED == set()
    assert not set(LAYERS) & SHARED


def test_shared_modules_import_no_layer() -> None:
    for top in SHARED:
        paths = [SIDECAR / f"{top}.py"] if (SIDECAR / f"{top}.py").exists() else list((SIDECAR / top).rglob("*.py"))
        for path in paths:
            above = _imports(path) & (set(LAYERS) - {"core"})
            assert not above, f"{path}: shared module imports {above}"
