"""Worked examples the LLM writes for labels that have none, before it is asked about any line.

A small model asked with the labels and their descriptions alone answers badly: measured with the
embedded Qwen2.5-Coder-1.5B on 42 seed lines (six per label), zero-shot it got 19 right, half of
all its answers being ``Error``; with one example line per label that it had written itself from
the description, 30. So when labels.yaml gives no example for a label, bootstrap asks the LLM
once per such label to write one (a few calls per run, not per template), keeps them in
``examples.yaml`` in the work folder and uses them as the prompt's worked examples. A second run
reuses the file; an operator may edit it (or copy its lines into labels.yaml) and run again.

The written line is the model's output, so it is bounded like any other: a few dozen tokens, the
first line only, cut to ``llm.max_message_chars``, and the file read back is checked as
labels.yaml's examples are.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from logclass.core.labels_file import LabelsFileError, load_labels_file
from logclass.core.labelset import LabelExample, LabelSet
from logclass.core.private_files import open_private
from logclass.tiers.llm.backend import LlmBackend, LlmOutputError, LlmUnavailable, LlmWriter
from logclass.training.bootstrap.errors import BootstrapError

EXAMPLES_FILE = "examples.yaml"
MAX_TOKENS = 64
# Shorter than this is no log line (an empty answer, a lone word).
MIN_CHARS = 8
_SYSTEM = "You write realistic single log lines exactly as a production software system emits them."
# Worded so the label's name is not in it (a small model then prefixes it to the line) and the
# model writes an event rather than the description: asked for "one log line of the kind X: ...",
# Qwen2.5-Coder-1.5B echoed two of the seed's nine descriptions as their "log lines".
_ASK = (
    "Kind of event: {description}.\nPick one single concrete event of that kind and write the log line a program "
    "prints for it, with concrete values (names, ids, numbers, paths). Reply with the log line only."
)
# A line this much made of the description's words is the description echoed, not an example.
ECHO_SHARE = 0.7
_WORD = re.compile(r"[a-z0-9]+")
# What small models put before the line although told not to: the label, "Log line:", a bullet.
_PREFIX = re.compile(r"^\s*(?:[-*>#]+\s*|(?:log(?:\s+line)?|example|line)\s*[:\-]\s*)", re.IGNORECASE)
_QUOTES = "\"'`"


def clean_line(text: str, label: str, max_chars: int) -> str | None:
    """The example line in ``text``: its first non-blank line, without fences, quotes and a
    leading label or "Log line:"; None when nothing line-like is left."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("```")]
    if not lines:
        return None
    line = lines[0]
    for _ in range(3):  # "- Log line: Security Alert: ..." takes three passes
        before = line
        line = _PREFIX.sub("", line)
        if line.lower().startswith(label.lower()):
            line = line[len(label) :].lstrip(" :-")
        line = line.strip().strip(_QUOTES).strip()
        if line == before:
            break
    line = line[:max_chars]
    return line if len(line) >= MIN_CHARS else None


def echoes(line: str, description: str) -> bool:
    words = _WORD.findall(line.lower())
    known = set(_WORD.findall(description.lower()))
    return bool(words) and sum(w in known for w in words) >= ECHO_SHARE * len(words)


def read_examples(path: Path, label_set: LabelSet) -> tuple[LabelExample, ...]:
    """A work folder's examples.yaml (labels.yaml's ``examples`` format), checked against the labels."""
    try:
        spec = load_labels_file(path)
    except LabelsFileError as exc:
        raise BootstrapError(f"{exc}; correct it, or delete it to have the examples written again") from exc
    examples = tuple(spec.examples or ())
    unknown = sorted({e.label for e in examples} - set(label_set.labels))
    if unknown:
        raise BootstrapError(
            f"{path}: example label(s) {unknown} are not in the labels file; correct them or delete {path.name} "
            "to have the examples written again"
        )
    return examples


def write_examples(path: Path, examples: Sequence[LabelExample], note: str) -> None:
    plain = [{"label": e.label, "message": e.message, "source": e.source} for e in examples]
    text = f"# {note}\n" + yaml.safe_dump({"examples": plain}, sort_keys=False, allow_unicode=True, width=10_000)
    with open_private(path, append=False) as fh:
        fh.write(text.encode("utf-8"))


async def _write_all(
    backend: LlmWriter, label_set: LabelSet, labels: Sequence[str], source: str, max_chars: int
) -> tuple[list[LabelExample], list[str]]:
    written, failed = [], []
    for label in labels:
        description = label_set.description(label).strip().rstrip(".")
        ask = _ASK.format(description=description)
        messages = ({"role": "system", "content": _SYSTEM}, {"role": "user", "content": ask})
        try:
            line = clean_line(await backend.write(messages, MAX_TOKENS), label, max_chars)
        except (LlmUnavailable, LlmOutputError) as exc:
            failed.append(f"{label} ({exc})")
            continue
        if line is None or echoes(line, description):
            failed.append(f"{label} (no usable line: {'its description echoed' if line else 'nothing line-like'})")
            continue
        written.append(LabelExample(source, line, label))
    return written, failed


async def with_examples(
    label_set: LabelSet, backend: LlmBackend, path: Path, *, source: str, max_chars: int, write: bool = True
) -> tuple[LabelSet, int]:
    """``label_set`` with a worked example for each label, from labels.yaml, from ``path`` (an
    earlier run's) or written now by ``backend`` (unless ``write`` is off); and how many calls
    writing took."""
    have = {e.label for e in label_set.examples}
    missing = [label for label in label_set.labels if label not in have]
    if not missing:
        return label_set, 0
    if path.exists():
        return _joined(label_set, read_examples(path, label_set)), 0
    if not write or not isinstance(backend, LlmWriter):
        return label_set, 0
    written, failed = await _write_all(backend, label_set, missing, source, max_chars)
    if failed:
        print(f"warning: no example written for {', '.join(failed)}", file=sys.stderr, flush=True)
    write_examples(path, written, "worked examples the LLM wrote for labels without one; edit or copy into labels.yaml")
    return _joined(label_set, tuple(written)), len(missing)


def _joined(label_set: LabelSet, extra: Sequence[LabelExample]) -> LabelSet:
    have = {e.label for e in label_set.examples}
    added = tuple(e for e in extra if e.label not in have)
    return LabelSet(label_set.labels, label_set.descriptions, (*label_set.examples, *added))
