"""Lines counted per template: what bootstrap asks the LLM about and how much each answer weighs.

The LLM is asked once per template, whatever its sources (the memory the bundle learns is per
template too), with the first line of its most frequent source. Counts are kept per (source,
template), each with its first line, so the training rows keep their sources (source routes
apply to them) and their weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from logclass.core.decision import LogRecord
from logclass.core.masking import TemplateMasker


@dataclass
class TemplateLines:
    template: str
    # Order of first appearance: ties in count keep the input's order.
    first: int
    count: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # source -> its first line

    @property
    def source(self) -> str:
        """The most frequent source (the first seen among equals)."""
        return max(self.by_source, key=lambda s: self.by_source[s])

    @property
    def example(self) -> str:
        return self.examples[self.source]


class TemplateCounter:
    def __init__(self, masker: TemplateMasker) -> None:
        self.masker = masker
        self.lines = 0
        self._templates: dict[str, TemplateLines] = {}

    def add(self, record: LogRecord) -> None:
        template = self.masker.template(record.message)
        entry = self._templates.get(template)
        if entry is None:
            entry = self._templates[template] = TemplateLines(template, len(self._templates))
        entry.count += 1
        entry.by_source[record.source] = entry.by_source.get(record.source, 0) + 1
        entry.examples.setdefault(record.source, record.message)
        self.lines += 1

    def add_all(self, records: Iterable[LogRecord]) -> None:
        for record in records:
            self.add(record)

    def ranked(self) -> list[TemplateLines]:
        """Most frequent first: the order the LLM is asked in, so a budget spent early covers the
        most lines."""
        return sorted(self._templates.values(), key=lambda t: (-t.count, t.first))
