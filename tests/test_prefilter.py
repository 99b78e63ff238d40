"""The fast lane's prefilters change no result: masking and the regex tier, with them, give exactly
what one search over the full alternation gave, on every seed and Loghub line and on lines built to
trip them (case folding outside ASCII, rules without literals, masks with global flags)."""

from __future__ import annotations

import csv
import random
import re
import sys
from pathlib import Path

import pytest

from logclass import config
from logclass.core.decision import LogRecord
from logclass.core.masking import Mask, TemplateMasker
from logclass.core.prefilter import CharFilter, LiteralFilter, required_chars, required_literals
from logclass.engine.pipeline import DEFAULT_BUNDLE, masker_of
from logclass.tiers.regex import RegexTier, Rule, load_rules, parse_rules

ROOT = Path(__file__).resolve().parent.parent
SEED_CSV = ROOT / "training" / "data" / "synthetic_logs.csv"
LOGHUB = ROOT / "benchmarks" / "data" / "loghub"
# Non-ASCII characters that re's case folding or classes treat like ASCII ones.
TRICKY = ["Kelvin \u212a", "long \u017f", "dotless \u0131", "digit \u0663\u0664", "space\u2003x", "\ufffd"]


def real_records() -> list[LogRecord]:
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        records = [LogRecord(row["source"], row["log_message"]) for row in csv.DictReader(fh)]
    for path in sorted(LOGHUB.glob("*_2k.log_structured.csv")):
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            records += [LogRecord(path.name.split("_2k")[0], row["Content"]) for row in csv.DictReader(fh)]
    return list(dict.fromkeys(records))


@pytest.fixture(scope="module")
def records() -> list[LogRecord]:
    found = real_records()
    assert len(found) > 15_000
    # Digits shifted (new messages of known templates) and the tricky characters spliced in.
    rng = random.Random(16)
    shifted = [LogRecord(r.source, r.message.translate(str.maketrans("0123456789", "1234567890"))) for r in found]
    spliced = [LogRecord(r.source, r.message + " " + rng.choice(TRICKY)) for r in rng.sample(found, 2000)]
    return found + shifted + spliced


def full_alternation(masks: list[Mask]) -> tuple[re.Pattern[str], dict[str, str]]:
    """The masker before the prefilter: every mask in one alternation, for every message."""
    regex = re.compile("|".join(f"(?P<m{i}>{m.pattern})" for i, m in enumerate(masks)))
    return regex, {f"m{i}": m.replace for i, m in enumerate(masks)}


def test_masking_equals_the_full_alternation_on_every_line(records: list[LogRecord]) -> None:
    masker = masker_of(config.load(environ={}).templates)
    regex, replace = full_alternation(masker.masks)
    for record in records:
        expected = regex.sub(lambda m: replace[m.lastgroup or ""], record.message)
        assert masker.template(record.message) == expected, record


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="Python 3.11 refuses global flags inside the mask's group")
def test_masks_with_global_flags_are_never_left_out() -> None:
    # "(?i)" of the first mask applies to the whole alternation: without it "ABC" stays.
    masks = [Mask("x", "(?i)zz", "<Z>"), Mask("letters", "abc", "<A>")]
    assert TemplateMasker(masks).template("ABC and zz") == "<A> and <Z>"
    assert TemplateMasker(masks).template("ABC") == "<A>"


def rule_reference(rules: list[Rule], record: LogRecord) -> str | None:
    """The regex tier before the prefilter: the active rules' alternation searched on every message."""
    active = [r for r in rules if r.sources is None or record.source in r.sources]
    if not active:
        return None
    parts = [f"(?P<r{i}>{'(?i:' if r.ignore_case else '(?:'}{r.pattern}))" for i, r in enumerate(active)]
    found = re.search("|".join(parts), record.message)
    return None if found is None else active[int((found.lastgroup or "r0")[1:])].name


@pytest.mark.parametrize("rules_path", [config.packaged_path("rules.yaml"), DEFAULT_BUNDLE / "rules.yaml"])
def test_regex_tier_equals_the_full_alternation_on_every_line(rules_path: Path, records: list[LogRecord]) -> None:
    rules = load_rules(rules_path)
    tier = RegexTier(rules)
    matched = 0
    for record in records:
        rule = tier.match(record)
        assert (rule.name if rule else None) == rule_reference(rules, record), record
        matched += rule is not None
    assert matched > 300  # the seed's rule rows are among them


def test_rules_that_trip_a_naive_filter() -> None:
    rules = parse_rules(
        {
            "rules": [
                {"name": "kelvin", "pattern": r"\bkey \d+", "label": "A"},
                {"name": "exact-case", "pattern": r"PANIC in (?:kernel|driver)", "label": "B", "ignore_case": False},
                {"name": "no-literal", "pattern": r"\d{3}-\d{4}", "label": "C", "sources": ["phone"]},
                {"name": "group", "pattern": r"disk (?:full)+ on (?:sd[a-z])", "label": "D"},
            ]
        }
    )
    tier = RegexTier(rules)
    cases = [
        LogRecord("x", "\u212aey 12 rotated"),  # (?i)k matches the Kelvin sign; "key" is not in lower()
        LogRecord("x", "KEY 7"),
        LogRecord("x", "panic in kernel"),
        LogRecord("x", "PANIC in driver"),
        LogRecord("phone", "call 555-1234"),
        LogRecord("x", "call 555-1234"),
        LogRecord("x", "DISK FULLFULL on sdb"),
        LogRecord("x", "disk  full on sdb"),
    ]
    found = [(r.name if (r := tier.match(c)) else None) for c in cases]
    assert found == [rule_reference(rules, c) for c in cases]
    assert found == ["kelvin", "kelvin", None, "exact-case", "no-literal", None, "group", None]


def test_what_the_filters_read_off_a_pattern() -> None:
    assert required_literals(r"\bUser (?:User)?\d+ logged (?:in|out)\b", True) == ((" logged ", "user "), True)
    assert required_literals(r"PANIC \d", False) == (("PANIC ",), False)
    assert required_literals(r"\d+", True) == ((), True)
    assert required_chars(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+")[1:] == [frozenset(":"), frozenset("/")]
    assert required_chars(r"[-+]?\d+(?:\.\d+)?") == [frozenset("0123456789")]
    assert required_chars(r"(?<!\w)(?:a|\d)") == [frozenset("a0123456789")]
    assert required_chars(r"x?") == []


def test_filters_never_rule_out_a_match() -> None:
    # Random lines over an alphabet that exercises every pattern's pieces.
    patterns = [m.pattern for m in masker_of(config.load(environ={}).templates).masks]
    patterns += [r"(?i:ab+c)", r"[^a]x", r"a.b", r"(?:q|z){2,}", r"(x)\1", r"(?i)\bkey\b"]
    chars = CharFilter(patterns)
    literals = [LiteralFilter([(p, ic)]) for p in patterns for ic in (False, True)]
    rng = random.Random(4)
    alphabet = "abcqxzKEY09.:/-\"' \u212a_"
    for _ in range(20_000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        bits = chars.may_match(line)
        for i, pattern in enumerate(patterns):
            if re.search(pattern, line):
                assert bits >> i & 1, (pattern, line)
            for j, ignore_case in enumerate((False, True)):
                if re.search(pattern, line, re.IGNORECASE if ignore_case else 0):
                    assert literals[2 * i + j].may_match(line), (pattern, ignore_case, line)


def test_the_char_filter_answers_alike_below_and_above_the_long_message_length(
    records: list[LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long messages test character classes with memchr, short ones with re: the same bits on
    every real line, and on long lines built from them (each class present or absent)."""
    from logclass.core import prefilter

    chars = CharFilter(m.pattern for m in masker_of(config.load(environ={}).templates).masks)
    rng = random.Random(7)
    lines = [r.message for r in records[::7]]
    lines += ["m" * 65536, "m" * 65535 + "7", "'" + "x" * 4096, "-" * 2048 + "\u212a"]
    lines += [" ".join(rng.sample(lines, 40)) for _ in range(200)]
    monkeypatch.setattr(prefilter, "LONG_MESSAGE_CHARS", 1 << 30)
    by_re = [chars.may_match(line) for line in lines]
    monkeypatch.setattr(prefilter, "LONG_MESSAGE_CHARS", 0)
    assert [chars.may_match(line) for line in lines] == by_re
    assert by_re[-204] != by_re[-203]  # the digit in the last character is seen
