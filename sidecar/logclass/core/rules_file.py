"""A rules file (``rules.yaml``) as typed values: the regex tier's rules, written by hand (the
packaged ``config/rules.yaml``, ``regex.rules_file``) or by ``logclass train`` into a bundle.

``RulesFile.from_dict`` checks the shape against the schema generated from these types (committed
as ``core/schemas/rules.schema.json``); what the tier needs beyond the shape (patterns that
compile, unique names) is the tier's to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from logclass.core.files import read_yaml
from logclass.core.schema import Problem, problems, remainder
from logclass.core.typed import ABSENT, Json, MayOmit, doc, parse, to_plain
from logclass.errors import LogclassError

NonEmptyStr = Annotated[str, Json(minLength=1)]


class RuleError(LogclassError):
    """A rule file that cannot be used; the message names the rule and the fix."""


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: Annotated[str | None, ABSENT, doc("unique in the file; absent: rule-N, N its position")]
    pattern: Annotated[NonEmptyStr, doc("Python regular expression, searched anywhere in the message")]
    label: Annotated[NonEmptyStr, doc("the label of the messages it matches")]
    sources: Annotated[
        tuple[str, ...] | None, ABSENT, Json(minItems=1), doc("only records of these sources; absent: every source")
    ]
    ignore_case: Annotated[bool, MayOmit(True, omit_default=True), doc("match ignoring case (default true)")]


@dataclass(frozen=True, slots=True)
class RulesFile:
    rules: Annotated[
        tuple[RuleSpec, ...], doc("searched in one pass: the earliest match wins, then the rule listed first")
    ]

    @classmethod
    def from_dict(cls, data: object, origin: str) -> RulesFile:
        """``data`` read from ``origin`` (the file, for messages), checked."""
        if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list):
            raise RuleError(f"{origin}: expected a mapping with a 'rules' list")
        found = problems(cls, data)
        if found:
            raise RuleError(_located(found[0], data["rules"], origin) + remainder(found))
        return parse(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data as the file holds it: keys at their default left out."""
        out: dict[str, Any] = to_plain(self)
        return out


def _located(problem: Problem, rules: list[Any], origin: str) -> str:
    """A problem inside a rule is named by the rule's number (and name), as a person counts them."""
    path = problem.path
    if len(path) < 2 or path[0] != "rules" or not isinstance(path[1], int):
        return f"{origin}: {problem}"
    raw = rules[path[1]]
    name = raw.get("name") if isinstance(raw, Mapping) else None
    where = f"{origin}: rule #{path[1] + 1}" + (f" ({name!r})" if name is not None else "")
    return f"{where}: {Problem(path[2:], problem.text)}"


def load_rules_file(path: str | Path) -> RulesFile:
    return RulesFile.from_dict(read_yaml(path, "rules file", error=RuleError), str(path))
