"""``labels.yaml`` for `logclass train --labels` as typed values: the label set's descriptions and
examples, and the router profile the bundle will carry.

``LabelsFile.from_dict`` checks the file against the schema generated from these types
(committed as ``core/schemas/labels.schema.json``). Every key may be left out or null: absent,
the training data decides (its labels, examples picked from its rows, the train options).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from logclass.core.files import read_yaml
from logclass.core.labelset import LabelExample
from logclass.core.schema import load
from logclass.core.typed import EMPTY, MayOmit, doc, to_plain
from logclass.errors import LogclassError


class LabelsFileError(LogclassError):
    """A labels file that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True, slots=True)
class LabelsFile:
    labels: Annotated[
        Mapping[str, str] | None,
        MayOmit(None),
        doc("label -> one line telling the LLM (and a reader) what it means; its order is the prompt's"),
    ]
    examples: Annotated[
        tuple[LabelExample, ...] | None,
        MayOmit(None),
        doc("worked examples for the LLM's prompt; null: one per label picked from the training rows"),
    ]
    source_routes: Annotated[Mapping[str, str] | None, MayOmit(None), doc("source -> first tier for its records")]
    min_confidence: Annotated[float | None, MayOmit(None), doc("below this probability a record escalates")]
    label_min_confidence: Annotated[Mapping[str, float] | None, MayOmit(None), doc("per-label min_confidence")]

    @property
    def descriptions(self) -> Mapping[str, str]:
        return self.labels if self.labels is not None else EMPTY

    @classmethod
    def from_dict(cls, data: object, origin: str) -> LabelsFile:
        """``data`` read from ``origin`` (the file, for messages), checked."""
        if not isinstance(data, Mapping):
            raise LabelsFileError(f"{origin} must hold a mapping with 'labels: {{label: description}}'")
        return load(cls, data, origin, LabelsFileError)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = to_plain(self)
        return out


NO_LABELS_FILE = LabelsFile(None, None, None, None, None)


def load_labels_file(path: Path | None) -> LabelsFile:
    if path is None:
        return NO_LABELS_FILE
    return LabelsFile.from_dict(read_yaml(path, "labels file", error=LabelsFileError), f"labels file {path}")
