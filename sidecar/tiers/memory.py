"""Memory tier: templates seen in the training data, decided by their labels' counts.

A template whose training rows agree (at least ``min_rows`` rows, the top label's share at least
``min_purity``) is answered from the counts, before any model: a label seen once on a template is
learnt from that one row, which no trained head guarantees. Lookup is one dict probe on the
template the router already computed, so it runs on the request path.
"""

from __future__ import annotations

from collections.abc import Mapping

from logclass.core.decision import LogRecord, Verdict
from logclass.core.masking import TemplateMasker
from logclass.tiers.base import FastTier


class MemoryTier(FastTier):
    name = "memory"

    def __init__(
        self,
        counts: Mapping[str, Mapping[str, int]],
        *,
        min_rows: int,
        min_purity: float,
        masker: TemplateMasker | None = None,
    ) -> None:
        """``masker``: the bundle's masks, when they differ from the runtime's (its templates
        were made with them, so they are the only way to find them)."""
        self.masker = masker
        self._verdicts: dict[str, Verdict] = {}
        labels: set[str] = set()
        for template, by_label in counts.items():
            total = sum(by_label.values())
            label, top = max(by_label.items(), key=lambda kv: (kv[1], kv[0]))
            if total >= min_rows and top / total >= min_purity:
                # Laplace's rule of succession: one agreeing row is 2/3 sure, a hundred 0.99.
                confidence = round((top + 1) / (total + 2), 4)
                self._verdicts[template] = Verdict(label, confidence, f"{top}/{total} training rows")
                labels.add(label)
        self._labels = sorted(labels)

    def __len__(self) -> int:
        return len(self._verdicts)

    def decide_now(self, record: LogRecord, template: str) -> Verdict | None:
        if self.masker is not None:
            template = self.masker.template(record.message)
        return self._verdicts.get(template)

    def labels(self) -> list[str]:
        return list(self._labels)
