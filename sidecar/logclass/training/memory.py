"""What the bundle remembers of its training rows: template label counts, and which regex rules
agree with the labels."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from logclass.core.decision import LogRecord
from logclass.core.rules_file import RuleSpec
from logclass.tiers.regex import RegexTier, Rule
from logclass.training.dataset import LabelledRow


def template_counts(rows: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """(template, label) pairs -> label counts per template."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for template, label in rows:
        counts[template][label] += 1
    return {template: dict(c) for template, c in counts.items()}


@dataclass
class RuleCheck:
    kept: list[Rule] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # rule name -> why


FOREIGN_RULE = "is not in the training labels"


def check_rules(
    rules: Sequence[Rule], rows: Sequence[LabelledRow], labels: set[str], min_precision: float
) -> RuleCheck:
    """Keeps the rules whose label is in the label set and that agree with the training labels
    on the rows they match: a rule written for another taxonomy must not label the user's logs."""
    tier = RegexTier(rules)
    hits: dict[str, Counter[bool]] = defaultdict(Counter)
    for row in rows:
        rule = tier.match(LogRecord(row.source, row.message))
        if rule is not None:
            hits[rule.name][rule.label == row.label] += 1
    out = RuleCheck()
    for rule in rules:
        agree, disagree = hits[rule.name][True], hits[rule.name][False]
        if rule.label not in labels:
            out.dropped[rule.name] = f"label {rule.label!r} {FOREIGN_RULE}"
        elif agree + disagree and agree / (agree + disagree) < min_precision:
            out.dropped[rule.name] = f"agrees with {agree} of the {agree + disagree} training rows it matches"
        else:
            out.kept.append(rule)
    return out


def rule_spec(rule: Rule) -> RuleSpec:
    """A kept rule as the bundle's rules file holds it."""
    sources = tuple(sorted(rule.sources)) if rule.sources is not None else None
    return RuleSpec(rule.name, rule.pattern, rule.label, sources, rule.ignore_case)
