"""Generates the committed JSON Schemas (Draft 2020-12) from the types that read each format.

``python -m logclass.config.schema_gen`` (``make schema``) rewrites them; ``--check`` and a test
fail when a file differs from what its types give, so no schema drifts from the code that reads
it. The generator is ``core.schema``'s: every field is required and no other key is allowed,
except the keys marked ``MayOmit``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logclass.config.settings import Settings
from logclass.core import schema
from logclass.core.labels_file import LabelsFile
from logclass.core.manifest import Manifest
from logclass.core.rules_file import RulesFile

COMMAND = "make schema (python -m logclass.config.schema_gen)"
SCHEMA_FILE = Path(__file__).resolve().with_name("schema.json")


@dataclass(frozen=True)
class SchemaFile:
    """One committed schema: where it is, the type it describes and its title."""

    path: Path
    cls: type[Any]
    title: str

    def render(self) -> str:
        return schema.render(self.cls, self.title)

    def check(self, path: Path | None = None) -> str | None:
        """None when ``path`` (default: the committed file) holds the generated schema, else what
        to do about it."""
        target = self.path if path is None else path
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current == self.render():
            return None
        return f"{target} is stale: it differs from the types in {self.cls.__module__}; run {COMMAND}"


SETTINGS = SchemaFile(SCHEMA_FILE, Settings, "logclass configuration")
FILES: tuple[SchemaFile, ...] = (
    SETTINGS,
    SchemaFile(schema.SCHEMAS_DIR / "manifest.schema.json", Manifest, "logclass model bundle manifest (manifest.json)"),
    SchemaFile(schema.SCHEMAS_DIR / "rules.schema.json", RulesFile, "logclass regex rules (rules.yaml)"),
    SchemaFile(schema.SCHEMAS_DIR / "labels.schema.json", LabelsFile, "logclass labels file (labels.yaml)"),
)


def generate() -> dict[str, Any]:
    """The configuration's schema."""
    return schema.generate(Settings, SETTINGS.title)


def render() -> str:
    return SETTINGS.render()


def check(path: Path = SCHEMA_FILE) -> str | None:
    """The configuration's schema at ``path``: None when current, else what to do."""
    return SETTINGS.check(path)


def stale() -> list[str]:
    """What to do about each committed schema that is stale; [] when all are current."""
    return [problem for problem in (f.check() for f in FILES) if problem]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for target in FILES:
        target.path.parent.mkdir(parents=True, exist_ok=True)
        target.path.write_text(target.render(), encoding="utf-8")
        print(f"wrote {target.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
