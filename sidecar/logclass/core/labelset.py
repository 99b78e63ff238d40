"""A classifier's one label set: its labels, what each means, and a few worked examples.

A model bundle carries it (from the training data and an optional ``labels.yaml``), so every
tier answers within the same labels: the trained head, the template memory and the LLM's prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from logclass.core.typed import EMPTY, Json, MayOmit, doc
from logclass.errors import LogclassError


class LabelSetError(LogclassError):
    pass


@dataclass(frozen=True, slots=True)
class LabelExample:
    source: str
    message: str
    label: str


@dataclass(frozen=True)
class LabelSet:
    """Its fields are also its form in a bundle's manifest (``label_set``)."""

    labels: Annotated[tuple[str, ...], Json(minItems=1)]
    descriptions: Annotated[
        Mapping[str, str],
        MayOmit(EMPTY),
        doc("label -> one line telling a reader (and the LLM) what the label means; may be empty"),
    ] = field(default_factory=dict)
    examples: Annotated[tuple[LabelExample, ...], MayOmit(()), doc("worked examples for the LLM's prompt")] = ()

    def __post_init__(self) -> None:
        if not self.labels:
            raise LabelSetError("a label set needs at least one label")
        unknown = sorted({e.label for e in self.examples} - set(self.labels))
        if unknown:
            raise LabelSetError(f"examples use labels not in the label set: {unknown}")
        stray = sorted(set(self.descriptions) - set(self.labels))
        if stray:
            raise LabelSetError(f"descriptions name labels not in the label set: {stray}")

    def description(self, label: str) -> str:
        return self.descriptions.get(label, "")

    def with_label(self, label: str, description: str) -> LabelSet:
        """This set plus ``label`` (e.g. the fallback label), unless it already has it."""
        if label in self.labels:
            return self
        return LabelSet((*self.labels, label), {**self.descriptions, label: description}, self.examples)

    def stored(self) -> LabelSet:
        """As a manifest keeps it: empty descriptions left out (``description`` reads them as "")."""
        return LabelSet(self.labels, {k: v for k, v in self.descriptions.items() if v}, self.examples)

    def overridden(self, descriptions: Mapping[str, str] | None, examples: Sequence[LabelExample] | None) -> LabelSet:
        """Config overrides: descriptions replace or add per label (a new label joins the set),
        examples replace the bundle's when given."""
        labels = list(self.labels)
        merged = dict(self.descriptions)
        for label, text in (descriptions or {}).items():
            if label not in labels:
                labels.append(label)
            merged[label] = text
        chosen = tuple(examples) if examples is not None else self.examples
        return LabelSet(tuple(labels), merged, chosen)
