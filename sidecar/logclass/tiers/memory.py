"""Memory tier: templates seen in the training data, decided by their labels' counts.

A template whose training rows agree (at least ``min_rows`` rows, the top label's share at least
``min_purity``) is answered from the counts, before any model: a label seen once on a template is
learnt from that one row, which no trained head guarantees. Lookup is one dict probe on the
template the router already computed, so it runs on the request path.

With a learnt store (``core.learnt``: the LLM's answers and human corrections of this
deployment), the operator's corrections are asked first (a correction must beat what the training
data said), and the LLM's answers last, for the source they were given for only: any caller can
make the LLM decide a line, so its answer must not outrank the training data or reach another
source. Lessons are keyed by the router's template (the one the LLM saw), not the bundle's own
masks. A lesson whose label this engine cannot give (a bundle without it) is ignored and counted.

A source that ``router.source_routes`` sends past this tier still gets the corrections and the
LLM's answers for that same source: routing a source to the LLM means "ask the LLM about it", and
its answer, once learnt, is that answer. Trained templates are not used for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from logclass.core.decision import LogRecord, Verdict
from logclass.core.learnt import LearntStore
from logclass.core.masking import TemplateMasker
from logclass.tiers.base import FastTier

log = logging.getLogger("logclass.memory")


class MemoryTier(FastTier):
    name = "memory"

    def __init__(
        self,
        counts: Mapping[str, Mapping[str, int]],
        *,
        min_rows: int,
        min_purity: float,
        masker: TemplateMasker | None = None,
        learnt: LearntStore | None = None,
        label_set: Iterable[str] = (),
    ) -> None:
        """``masker``: the bundle's masks, when they differ from the runtime's (its templates
        were made with them, so they are the only way to find them). ``learnt``: lessons asked
        before the training data; none are used until ``accept_labels`` says which labels.
        ``label_set``: the bundle's labels, which a lesson may teach even where no training
        template is confident about them (corrections are validated against ``labels()``)."""
        self.masker = masker
        self.learnt = learnt
        self._accepted: frozenset[str] = frozenset()
        self.ignored = 0
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
        self._labels = sorted(labels | set(label_set))

    def __len__(self) -> int:
        return len(self._verdicts)

    def accept_labels(self, labels: Iterable[str]) -> None:
        """The labels the engine can give: lessons with others are ignored (counted, logged)."""
        self._accepted = frozenset(labels)
        if self.learnt is not None:
            self.ignored = sum(1 for lesson in self.learnt if lesson.label not in self._accepted)
            if self.ignored:
                log.warning("%d learnt templates have labels this model does not give: ignored", self.ignored)

    @property
    def accepted_labels(self) -> frozenset[str]:
        return self._accepted

    def _accept(self, verdict: Verdict | None) -> Verdict | None:
        return verdict if verdict is not None and verdict.label in self._accepted else None

    def decide_now(self, record: LogRecord, template: str) -> Verdict | None:
        """An operator's correction, then the training data, then the LLM's answer for this
        source: what any caller can make the LLM say never outranks what the operator trusts."""
        learnt = self.learnt
        if learnt is not None and (corrected := self._accept(learnt.correction(record.source, template))):
            return corrected
        trained_template = self.masker.template(record.message) if self.masker is not None else template
        trained = self._verdicts.get(trained_template)
        if trained is not None or learnt is None:
            return trained
        return self._accept(learnt.answer(record.source, template))

    def decide_routed(self, record: LogRecord, template: str) -> Verdict | None:
        """A source routed past the memory (to the LLM, which sees the source): corrections, and
        the LLM's answers for that same source."""
        learnt = self.learnt
        if learnt is None:
            return None
        corrected = self._accept(learnt.correction(record.source, template))
        return corrected if corrected is not None else self._accept(learnt.answer(record.source, template))

    def labels(self) -> list[str]:
        return list(self._labels)
