"""``labels.yaml`` for `logclass train --labels`: descriptions, examples and the router profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logclass.core.files import read_yaml
from logclass.core.labelset import LabelExample
from logclass.errors import LogclassError

KEYS = {"labels", "examples", "source_routes", "min_confidence", "label_min_confidence"}


class LabelsFileError(LogclassError):
    pass


@dataclass(frozen=True)
class LabelsFile:
    descriptions: dict[str, str] = field(default_factory=dict)
    examples: tuple[LabelExample, ...] | None = None
    source_routes: dict[str, str] | None = None
    min_confidence: float | None = None
    label_min_confidence: dict[str, float] | None = None


def load_labels_file(path: Path | None) -> LabelsFile:
    if path is None:
        return LabelsFile()
    data: Any = read_yaml(path, "labels file", error=LabelsFileError)
    if not isinstance(data, dict):
        raise LabelsFileError(f"labels file {path} must hold a mapping with 'labels: {{label: description}}'")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise LabelsFileError(f"labels file {path}: unknown keys {unknown}; allowed: {sorted(KEYS)}")
    try:
        examples = data.get("examples")
        routes = data.get("source_routes")
        per_label = data.get("label_min_confidence")
        threshold = data.get("min_confidence")
        return LabelsFile(
            {str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            None
            if examples is None
            else tuple(LabelExample(str(e["source"]), str(e["message"]), str(e["label"])) for e in examples),
            None if routes is None else {str(k): str(v) for k, v in routes.items()},
            None if threshold is None else float(threshold),
            None if per_label is None else {str(k): float(v) for k, v in per_label.items()},
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise LabelsFileError(
            f"labels file {path}: {exc!r}; expected labels: {{label: text}}, examples: [{{source, message, label}}], "
            "source_routes: {source: tier}, min_confidence: number, label_min_confidence: {label: number}"
        ) from exc
