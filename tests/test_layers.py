"""The layout shows the layers: imports only point down, and no front end imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

SIDECAR = ROOT / "sidecar" / "logclass"
# Lower number = lower layer. A module may import its own layer or lower ones only.
# jobs (CSV jobs, the report) and service (the LogClassifier contract) are what front ends
# are made of: the CLI runs the batch jobs, and HTTP offers the same CSV rules and report.
LAYERS = {
    "core": 0,
    "encoders": 1,
    "tiers": 2,
    "engine": 3,
    "jobs": 4,
    "service": 4,
    # Training runs the engine over labelled rows (evaluate, distill) and writes bundles.
    "training": 5,
    "server": 5,
    "http": 5,
    "relay": 5,
    # The gRPC client (`logclass classify --server`) calls a front end; only the CLI uses it.
    "client": 5,
    "reload": 6,
    "serve": 7,
    "cli": 8,
}
FRONT_ENDS = {"server", "http", "relay"}
# Below every layer and importable from any: the contract's stubs and tables, the settings,
# the error base, and small helpers with no logic of the layers.
SHARED = {"__init__", "address", "api", "config", "errors", "logs", "models", "secrets"}


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
            continue  # shared utilities (errors, config, api, address, secrets, logs) and the layer itself
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
