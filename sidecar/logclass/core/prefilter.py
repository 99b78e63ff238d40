"""Cheap, exact tests that a regular expression cannot match a message, read off its parse tree.

A search over a log line tries every alternative of a combined pattern at every position, yet
most lines hold none of what a rule or a mask needs (a rule's words, a URL's ``:``, a digit),
and a substring or character test says so in C at memchr speed. The tests are sound, not
complete: a pattern is ruled out only when a part that every match must contain is missing,
so skipping it changes no result. Case-insensitive literals and character classes are only
trusted on ASCII messages, where ``re``'s case folding and ``\\d``, ``\\w``, ``\\s`` are plain ASCII
(``(?i)k`` also matches the Kelvin sign); other messages take the full pattern.

Parsing uses the ``re`` module's own parser (``re._parser``, ``sre_parse`` before 3.11), so the
tree is exactly what ``re`` compiles. Any construct not understood adds no requirement.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any

# The regex parser moved into the re package in 3.11 (where the old module names warn), and
# typeshed does not describe either.
_parser: Any
_compiler: Any
if sys.version_info >= (3, 11):
    _parser, _compiler = vars(re)["_parser"], vars(re)["_compiler"]
else:  # pragma: no cover - Python 3.10
    import sre_compile as _compiler
    import sre_parse as _parser

_ASCII = [chr(i) for i in range(128)]
# A class matching most of ASCII (\S, .) rules out almost nothing and costs a set test.
_MAX_SET = 64
_ONE_CHAR = ("LITERAL", "NOT_LITERAL", "IN", "ANY")
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")


def _op(name: str) -> Any:
    return getattr(_parser, name, None)


def _ops(names: Iterable[str]) -> tuple[Any, ...]:
    return tuple(op for op in map(_op, names) if op is not None)


def _ascii_matched(item: Any, state: Any) -> frozenset[str] | None:
    """The ASCII characters one single-character item matches, with the pattern's flags."""
    try:
        regex = _compiler.compile(_parser.SubPattern(state, [item]), state.flags)
    except Exception:  # an internal API that moved: no requirement, never a wrong one
        return None
    matched = frozenset(c for c in _ASCII if regex.fullmatch(c))
    return matched if len(matched) <= _MAX_SET else None


def _char_sets(items: Any, state: Any) -> list[frozenset[str]]:
    """Sets of ASCII characters every match of ``items`` contains one of (each set, all sets)."""
    sets: list[frozenset[str]] = []
    for op, av in items:
        if op in _ops(_ONE_CHAR):
            found = _ascii_matched((op, av), state)
            if found is not None:
                sets.append(found)
        elif op in _ops(_REPEATS) and av[0] >= 1:
            sets += _char_sets(av[2], state)
        elif op == _op("SUBPATTERN") and not av[1] and not av[2]:
            sets += _char_sets(av[3], state)
        elif op == _op("ATOMIC_GROUP"):
            sets += _char_sets(av, state)
        elif op == _op("BRANCH"):
            # One set per branch, the narrowest; a branch without one makes the whole branch free.
            per_branch = [_char_sets(branch, state) for branch in av[1]]
            if all(per_branch):
                union = frozenset().union(*(min(s, key=len) for s in per_branch))
                if len(union) <= _MAX_SET:
                    sets.append(union)
        # Anything else (anchors, lookarounds, backreferences) consumes nothing or is not understood.
    return sets


def required_chars(pattern: str, flags: int = 0) -> list[frozenset[str]]:
    """For an ASCII message: the pattern can only match if the message has a character of every set."""
    parsed = _parser.parse(pattern, flags)
    return list(dict.fromkeys(_char_sets(parsed, parsed.state)))


def _literal_runs(items: Any, ignore_case: bool) -> list[str]:
    """Strings every match of ``items`` contains: runs of adjacent literal characters."""
    runs: list[str] = []
    run: list[str] = []

    def close() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    for op, av in items:
        if op == _op("LITERAL") and (av < 128 or not ignore_case):
            run.append(chr(av).lower() if ignore_case else chr(av))
        elif op == _op("SUBPATTERN") and not av[1] and not av[2]:
            # A group is plain concatenation: its literals may continue the run around it.
            inner = _literal_runs_inline(av[3], ignore_case)
            if inner is None:
                close()
                runs += _literal_runs(av[3], ignore_case)
            else:
                run.extend(inner)
        elif op in _ops(_REPEATS) and av[0] >= 1:
            close()
            runs += _literal_runs(av[2], ignore_case)
        else:
            close()
    close()
    return runs


def _literal_runs_inline(items: Any, ignore_case: bool) -> str | None:
    """``items`` as one literal string when they are nothing but literals, else None."""
    chars = []
    for op, av in items:
        if op != _op("LITERAL") or (ignore_case and av >= 128):
            return None
        chars.append(chr(av).lower() if ignore_case else chr(av))
    return "".join(chars)


def required_literals(pattern: str, ignore_case: bool) -> tuple[tuple[str, ...], bool]:
    """Strings every match contains, and whether they are lower-cased (the pattern ignores case:
    test them against the lower-cased message, and only when it is ASCII)."""
    parsed = _parser.parse(pattern, _parser.SRE_FLAG_IGNORECASE if ignore_case else 0)
    folded = bool(parsed.state.flags & _parser.SRE_FLAG_IGNORECASE)
    runs = sorted(set(_literal_runs(parsed, folded)), key=len, reverse=True)
    return tuple(runs), folded


class LiteralFilter:
    """Whether any of several patterns may match a message, from the literals each one needs."""

    def __init__(self, patterns: Iterable[tuple[str, bool]]) -> None:
        """``patterns``: (pattern, ignore_case) pairs."""
        needs = [required_literals(pattern, ignore_case) for pattern, ignore_case in patterns]
        # A pattern that needs no literal may match anything: no message can be ruled out.
        self._always = any(not literals for literals, _ in needs)
        # The longest literal first and alone: it rules out nearly every message, and a plain
        # ``in`` test per pattern costs less than a generator.
        self._needs = [(literals[0], literals[1:], folded) for literals, folded in needs if literals]
        self._folded = any(folded for _, folded in needs)

    def may_match(self, message: str) -> bool:
        if self._always:
            return True
        lowered = message
        if self._folded:
            if not message.isascii():
                return True
            lowered = message.lower()
        for first, rest, folded in self._needs:
            text = lowered if folded else message
            if first in text and all(literal in text for literal in rest):
                return True
        return False


# From here on CharFilter tests classes of characters with memchr instead of re (measured: the
# two cost alike near 1,000 characters).
LONG_MESSAGE_CHARS = 1024


def _class_regex(chars: frozenset[str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]")


class CharFilter:
    """Which of several patterns may match a message, as a bit mask (bit i: pattern i), from the
    characters each one needs."""

    def __init__(self, patterns: Iterable[str]) -> None:
        needs = [required_chars(pattern) for pattern in patterns]
        self.all = (1 << len(needs)) - 1
        sets = list(dict.fromkeys(s for need in needs for s in need))
        # One-character sets are a substring test, the others a search for a one-class pattern,
        # which re scans in C without building the message's set of characters (3x slower).
        self._singles = [(next(iter(s)), 1 << j) for j, s in enumerate(sets) if len(s) == 1]
        # On a long message re's class scan costs ~5 ns a character and class (a 64 KiB line with
        # no digit: ~1 ms in all, which held the event loop); a memchr per character of the class
        # on its ASCII bytes costs 10x less. Only ASCII characters: the message is ASCII here.
        self._classes = [
            (_class_regex(s), bytes(sorted(ord(c) for c in s if c.isascii())), 1 << j)
            for j, s in enumerate(sets)
            if len(s) > 1
        ]
        self._needs = [(sum(1 << sets.index(s) for s in need), 1 << i) for i, need in enumerate(needs)]

    def may_match(self, message: str) -> int:
        if not message.isascii():
            return self.all
        present = 0
        for char, bit in self._singles:
            if char in message:
                present |= bit
        if len(message) < LONG_MESSAGE_CHARS:
            for regex, _, bit in self._classes:
                if regex.search(message) is not None:
                    present |= bit
        else:
            data = message.encode("ascii")
            for _, chars, bit in self._classes:
                if any(char in data for char in chars):
                    present |= bit
        found = 0
        for need, bit in self._needs:
            if present & need == need:
                found |= bit
        return found
