"""Typed file formats (rules.yaml, labels.yaml; the manifest in test_manifest.py): each has a JSON
schema generated from its types and committed, which must be current and accept the files
logclass ships; a file that does not fit is refused naming the key, what it must be and what it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from logclass import config
from logclass.config import schema_gen
from logclass.core.labels_file import NO_LABELS_FILE, LabelsFile, LabelsFileError, load_labels_file
from logclass.core.manifest import FeatureSpec
from logclass.core.rules_file import RuleError, RulesFile, RuleSpec, load_rules_file
from logclass.core.schema import describe, problems, schema_of
from logclass.engine.pipeline import DEFAULT_BUNDLE
from tests.conftest import ROOT

SEED_LABELS = ROOT / "training" / "data" / "labels.yaml"


def test_every_committed_schema_is_generated_from_its_types() -> None:
    assert schema_gen.stale() == []
    assert {f.path.name for f in schema_gen.FILES} == {
        "schema.json",
        "manifest.schema.json",
        "rules.schema.json",
        "labels.schema.json",
    }
    assert schema_gen.main(["--check"]) == 0


@pytest.mark.parametrize("target", schema_gen.FILES[1:], ids=lambda f: f.path.name)
def test_a_stale_format_schema_is_reported_with_the_command(target: schema_gen.SchemaFile, tmp_path: Path) -> None:
    stale = tmp_path / target.path.name
    stale.write_text(target.render().replace('"additionalProperties": false', '"additionalProperties": true', 1))
    problem = target.check(stale)
    assert problem is not None and "make schema" in problem and target.cls.__module__ in problem
    assert target.check(tmp_path / "missing.json") is not None


def _committed(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schema_gen.schema.SCHEMAS_DIR / name).read_text(encoding="utf-8"))
    return schema


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("rules.schema.json", config.packaged_path("rules.yaml")),
        ("rules.schema.json", Path(DEFAULT_BUNDLE) / "rules.yaml"),
        ("labels.schema.json", SEED_LABELS),
        ("manifest.schema.json", Path(DEFAULT_BUNDLE) / "manifest.json"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_the_committed_schemas_accept_the_shipped_files(schema: str, path: Path) -> None:
    # What an editor or CI check using the schema file sees: JSON Schema alone, no logclass code.
    jsonschema.Draft202012Validator(_committed(schema)).validate(yaml.safe_load(path.read_text(encoding="utf-8")))


# --- rules.yaml ----------------------------------------------------------------------------------


def test_rules_read_and_write_back() -> None:
    rules = load_rules_file(config.packaged_path("rules.yaml"))
    assert rules.rules[0] == RuleSpec(
        "user-session", r"\bUser (?:User)?\d+ logged (?:in|out)\b", "User Action", None, True
    )
    written = RulesFile((RuleSpec("a", "x", "A", ("crm", "hr"), False), RuleSpec(None, "y", "B", None, True)))
    # Defaults and absent keys stay out of the file, as `logclass train` always wrote it.
    assert written.to_dict() == {
        "rules": [
            {"name": "a", "pattern": "x", "label": "A", "sources": ["crm", "hr"], "ignore_case": False},
            {"pattern": "y", "label": "B"},
        ]
    }
    assert RulesFile.from_dict(written.to_dict(), "r") == written


RULE_KEYS = "allowed: ['ignore_case', 'label', 'name', 'pattern', 'sources']"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"rules": [{"name": "n", "pattern": 3, "label": "X"}]},
            "r.yaml: rule #1 ('n'): 'pattern' must be a non-empty string, not an integer",
        ),
        (
            {"rules": [{"pattern": "x"}, {"pattern": "y"}]},
            "r.yaml: rule #1: 'label' must be a non-empty string; it is missing (and 1 more)",
        ),
        (
            {"rules": [{"pattern": "x", "label": "X", "colour": "red"}]},
            f"r.yaml: rule #1: has unknown keys ['colour']; {RULE_KEYS}",
        ),
        (
            {"rules": [{"pattern": "x", "label": "X", "sources": []}]},
            "r.yaml: rule #1: 'sources' must be a non-empty list of strings, not []",
        ),
        ({"rules": ["x"]}, "r.yaml: rule #1: must be a mapping, not a string"),
        ({"rules": [], "version": 2}, "r.yaml: has unknown keys ['version']; allowed: ['rules']"),
        ({"rules": {"a": 1}}, "r.yaml: expected a mapping with a 'rules' list"),
        (None, "r.yaml: expected a mapping with a 'rules' list"),
    ],
)
def test_a_bad_rules_file_names_the_rule_and_key(data: object, message: str) -> None:
    with pytest.raises(RuleError) as err:
        RulesFile.from_dict(data, "r.yaml")
    assert str(err.value) == message


def test_an_unreadable_rules_file(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(RuleError, match=r"rules file .* is not valid YAML"):
        load_rules_file(tmp_path / "r.yaml")


# --- labels.yaml ---------------------------------------------------------------------------------


def test_the_seed_labels_file() -> None:
    spec = load_labels_file(SEED_LABELS)
    assert list(spec.descriptions)[:2] == ["Workflow Error", "Deprecation Warning"]
    assert spec.examples is not None and spec.examples[0].source == "LegacyCRM"
    assert spec.source_routes == {"LegacyCRM": "llm"} and spec.min_confidence == 0.5
    assert load_labels_file(None) == NO_LABELS_FILE and NO_LABELS_FILE.descriptions == {}
    # Every key may be null: the training data decides.
    assert LabelsFile.from_dict({"labels": None, "examples": None}, "l") == NO_LABELS_FILE


LABELS_KEYS = "allowed: ['examples', 'label_min_confidence', 'labels', 'min_confidence', 'source_routes']"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"threshold": 0.5}, f"labels file l.yaml: has unknown keys ['threshold']; {LABELS_KEYS}"),
        ({"labels": ["a", "b"]}, "labels file l.yaml: 'labels' must be a mapping of strings or null, not a list"),
        (
            {"examples": [{"source": "s", "message": "m"}]},
            "labels file l.yaml: 'examples.0.label' must be a string; it is missing",
        ),
        ({"min_confidence": "high"}, "labels file l.yaml: 'min_confidence' must be a number or null, not a string"),
        (["labels"], "labels file l.yaml must hold a mapping with 'labels: {label: description}'"),
    ],
)
def test_a_bad_labels_file_names_the_key(data: object, message: str) -> None:
    with pytest.raises(LabelsFileError) as err:
        LabelsFile.from_dict(data, "labels file l.yaml")
    assert str(err.value) == message


def test_a_labels_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "l.yaml"
    path.write_bytes(b"labels:\n  Err\xe9ur: x\n")
    with pytest.raises(LabelsFileError, match=r"labels file .* is not UTF-8 text \(byte 13\)"):
        load_labels_file(path)


# --- the words of a problem ----------------------------------------------------------------------


def test_describe_says_what_a_value_must_be() -> None:
    assert describe({"type": "integer", "minimum": 1}) == "an integer of at least 1"
    assert describe({"type": "number", "minimum": 0, "maximum": 1}) == "a number from 0 to 1"
    assert describe({"type": "number", "exclusiveMinimum": 0}) == "a number above 0"
    assert describe({"type": ["string", "null"], "minLength": 1}) == "a non-empty string or null"
    assert describe({"enum": ["a", "b"]}) == 'one of "a", "b"'
    assert describe(schema_of(tuple[int, int])) == "a list of 2 integers"
    assert describe({"type": "object", "additionalProperties": {"type": "number"}}) == "a mapping of numbers"


def test_a_long_value_is_cut_in_the_message() -> None:
    (problem,) = problems(FeatureSpec, {"kind": "w" * 10_000})
    assert str(problem).startswith("""'kind' must be one of "embedding", "lexical", "both", not 'wwww""")
    assert len(str(problem)) < 200


def test_keys_of_another_type_are_named_not_crashed_on() -> None:
    # YAML keys may be numbers or booleans; they are unknown keys, not a TypeError when sorted.
    found = problems(RuleSpec, {"pattern": "x", "label": "X", 1: "a", 2.5: "b", None: "c"})
    assert [str(p) for p in found] == [
        "has unknown keys ['1', '2.5', 'None']; allowed: ['ignore_case', 'label', 'name', 'pattern', 'sources']"
    ]


def test_a_file_wrong_everywhere_is_not_walked_to_its_end() -> None:
    data = {"rules": [{"pattern": i, "label": "X"} for i in range(10_000)]}
    with pytest.raises(
        RuleError, match=r"^r\.yaml: rule #1: 'pattern' must be a non-empty string, not an integer \(and many more\)$"
    ):
        RulesFile.from_dict(data, "r.yaml")
    many = problems(RuleSpec, {"pattern": "x", "label": "X", **{f"k{i}": i for i in range(50)}})
    assert str(many[0]).startswith("has unknown keys ['k0', 'k1', 'k10', 'k11'") and ", …]; allowed:" in str(many[0])
