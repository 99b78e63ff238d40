from __future__ import annotations

import csv
from pathlib import Path

import pytest

from logclass import config
from logclass.core.decision import LogRecord
from logclass.core.rules_file import RuleError
from logclass.tiers.regex import RegexTier, load_rules, parse_rules

SEED_CSV = Path(__file__).resolve().parent.parent / "training" / "data" / "synthetic_logs.csv"


@pytest.fixture(scope="module")
def tier() -> RegexTier:
    return RegexTier(load_rules(config.packaged_path("rules.yaml")))


@pytest.mark.parametrize(
    ("message", "label"),
    [
        ("User 12345 logged in.", "User Action"),  # the seed's rule missed this one
        ("User User265 logged out.", "User Action"),
        ("Account with ID 6120 created by User644.", "User Action"),
        ("Backup started at 2025-05-14 07:06:55.", "System Notification"),
        ("backup completed successfully.", "System Notification"),
        ("File data_6957.csv uploaded successfully by user User265.", "System Notification"),
        ("System updated to version 3.6.1.", "System Notification"),
        ("Disk cleanup completed successfully.", "System Notification"),
        ("System reboot initiated by user User541.", "System Notification"),
    ],
)
def test_default_rules(tier: RegexTier, message: str, label: str) -> None:
    verdict = tier.decide_now(LogRecord("any", message))
    assert verdict is not None and verdict.label == label and verdict.confidence == 1.0


@pytest.mark.parametrize(
    "message",
    [
        "Backup completedXsuccessfully",  # the seed's unescaped dot matched this
        "User Userabc logged in.",
        "Unauthorized access to data was attempted",
        "",
    ],
)
def test_default_rules_do_not_overmatch(tier: RegexTier, message: str) -> None:
    assert tier.decide_now(LogRecord("any", message)) is None


def test_default_rules_decide_exactly_the_seed_regex_rows(tier: RegexTier) -> None:
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        verdict = tier.decide_now(LogRecord(row["source"], row["log_message"]))
        if row["complexity"] == "regex":
            assert verdict is not None and verdict.label == row["target_label"], row
        else:
            assert verdict is None, row


def test_one_compiled_pass_and_priority() -> None:
    rules = parse_rules(
        {
            "rules": [
                {"name": "specific", "pattern": r"disk \d+% full", "label": "Resource Usage"},
                {"name": "generic", "pattern": r"disk", "label": "System Notification"},
                {"name": "later", "pattern": r"alpha", "label": "A"},
                {"name": "earlier", "pattern": r"beta", "label": "B"},
            ]
        }
    )
    tier = RegexTier(rules)
    scope = tier._pattern_for("x")
    assert scope.pattern is not None and len(scope.rules) == 4  # one alternation for all rules
    # Same start position: the rule listed first wins.
    assert tier.match(LogRecord("x", "disk 93% full")).name == "specific"  # type: ignore[union-attr]
    # Earliest match in the message wins over list order.
    assert tier.match(LogRecord("x", "beta then alpha")).name == "earlier"  # type: ignore[union-attr]


def test_sources_scope_and_case() -> None:
    rules = parse_rules(
        {
            "rules": [
                {"pattern": "payment failed", "label": "Billing", "sources": ["BillingSystem"]},
                {"pattern": "PANIC", "label": "Critical Error", "ignore_case": False},
            ]
        }
    )
    tier = RegexTier(rules)
    assert tier.match(LogRecord("BillingSystem", "Payment failed for 3")) is not None
    assert tier.match(LogRecord("ModernHR", "Payment failed for 3")) is None
    assert tier.match(LogRecord("x", "kernel PANIC")) is not None
    assert tier.match(LogRecord("x", "kernel panic")) is None


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        (
            {"name": "bad", "pattern": "(unclosed", "label": "X"},
            "rule #1 ('bad'): invalid regular expression",
        ),
        ({"pattern": "x"}, "rule #1: 'label' must be a non-empty string"),
        ({"label": "X"}, "'pattern' must be a non-empty string"),
        ({"pattern": "x", "label": "X", "colour": "red"}, "unknown keys ['colour']"),
        ({"pattern": "(?P<n>x)", "label": "X"}, "named groups"),
        ({"pattern": r"(a)\1", "label": "X"}, "backreferences"),
        ({"pattern": "x*", "label": "X"}, "matches the empty string"),
        ({"pattern": "x", "label": "X", "sources": "crm"}, "'sources' must be a non-empty list"),
        ({"pattern": "x", "label": "X", "ignore_case": "yes"}, "'ignore_case' must be true or false"),
    ],
)
def test_bad_rules_are_named(rule: dict[str, object], fragment: str) -> None:
    with pytest.raises(RuleError) as err:
        parse_rules({"rules": [rule]}, "my-rules.yaml")
    assert fragment in str(err.value)
    assert "my-rules.yaml" in str(err.value)


def test_rule_files(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read rules file"):
        load_rules(tmp_path / "nope.yaml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("rules:\n  - {name: a, pattern: x, label: X}\n  - {name: a, pattern: y, label: Y}\n")
    with pytest.raises(RuleError, match="duplicate rule names"):
        load_rules(dup)
    flat = tmp_path / "flat.yaml"
    flat.write_text("- {pattern: x, label: X}\n")
    with pytest.raises(RuleError, match="'rules' list"):
        load_rules(flat)
