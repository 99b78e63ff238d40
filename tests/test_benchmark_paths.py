"""Every ``ROOT / "a" / "b"`` path a benchmark names exists: a moved folder (issue 29 moved the
package to sidecar/logclass) must break this test, not a benchmark run much later."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def _root_paths(tree: ast.AST) -> list[tuple[int, Path]]:
    """(line, path) of each ``ROOT / "literal" / ...`` chain made of string literals only."""
    found = []
    for node in ast.walk(tree):
        parts: list[str] = []
        current: ast.expr = node if isinstance(node, ast.BinOp) else ast.Constant(None)
        while isinstance(current, ast.BinOp) and isinstance(current.op, ast.Div):
            if not (isinstance(current.right, ast.Constant) and isinstance(current.right.value, str)):
                break
            parts.insert(0, current.right.value)
            current = current.left
        if parts and isinstance(current, ast.Name) and current.id == "ROOT":
            found.append((node.lineno, ROOT.joinpath(*parts)))  # type: ignore[attr-defined]
    # Only the whole chains: a chain's left part is a shorter chain of its own.
    return [(line, path) for line, path in found if not any(p != path and p.is_relative_to(path) for _, p in found)]


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_the_paths_a_benchmark_names_exist(script: Path) -> None:
    for line, path in _root_paths(ast.parse(script.read_text(encoding="utf-8"))):
        if path.is_relative_to(ROOT / "build") or path.is_relative_to(ROOT / "benchmarks" / "results"):
            continue  # written by the benchmark
        assert path.exists(), f"{script.name}:{line}: {path.relative_to(ROOT)} does not exist"


def test_the_check_finds_a_missing_path(tmp_path: Path) -> None:
    tree = ast.parse('X = ROOT / "models" / "default"\nY = ROOT / "training" / "data"\n')
    assert [p.relative_to(ROOT).as_posix() for _, p in _root_paths(tree)] == ["models/default", "training/data"]
