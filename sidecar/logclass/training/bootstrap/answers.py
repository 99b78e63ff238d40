"""Bootstrap's answers file: the LLM tier's teacher-file format (``llm.teacher_file``), one JSON
object a line with ``source``, ``template``, ``example``, ``label``, ``confidence``, ``model`` and
``time``, so `logclass train --extra` and `distill --teacher` read it as they read the tier's.

Two differences, both additive: every answer is kept, the unsure ones too (the tier writes only
answers it acts on), since the file is also what a second run resumes from; and an answer to a
line the guard caught ordering a label carries ``"guarded": true``.

An answer is appended and flushed as soon as it arrives, so an interrupted run loses nothing.
Read back, answers are keyed by the template of their example under the current masks (a
changed mask set asks again for what it regroups), the last answer of a template winning.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from logclass.core.files import read_text
from logclass.core.learnt import json_line
from logclass.core.masking import TemplateMasker
from logclass.core.private_files import make_folder, open_private
from logclass.training.bootstrap.errors import BootstrapError


@dataclass(frozen=True, slots=True)
class Answer:
    source: str
    template: str
    example: str
    label: str
    confidence: float
    model: str
    guarded: bool = False


@dataclass
class LoadedAnswers:
    by_template: dict[str, Answer]
    # Answers naming a label no longer in the answer set: their templates are asked again.
    stale: int = 0


def load_answers(path: Path, masker: TemplateMasker, labels: Collection[str]) -> LoadedAnswers:
    """The answers in ``path`` (none when it does not exist yet) within ``labels``."""
    if not path.exists():
        return LoadedAnswers({})
    # Unbounded, as train reads teacher files: it grows with every answer.
    text = read_text(path, "answers file", max_bytes=None, error=BootstrapError)
    lines = text.splitlines()
    torn = bool(lines) and not text.endswith("\n")
    out = LoadedAnswers({})
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            answer = _answer(json.loads(line), masker)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            if torn and number == len(lines):
                break  # the last line of a run killed while writing it
            raise BootstrapError(
                f"{path}:{number}: not an answer ({exc}); each line needs JSON with source, example and label "
                "(the teacher-file format); fix or delete that line"
            ) from exc
        if answer.label in labels:
            out.by_template[answer.template] = answer
        else:
            out.stale += 1
    return out


def _answer(entry: object, masker: TemplateMasker) -> Answer:
    if not isinstance(entry, dict):
        raise TypeError(f"a JSON {type(entry).__name__}, not an object")
    example = str(entry["example"])
    confidence = entry.get("confidence", 1.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        raise ValueError(f"confidence {confidence!r} is not a number in [0, 1]")
    return Answer(
        source=str(entry["source"]),
        template=masker.template(example),
        example=example,
        label=str(entry["label"]).strip(),
        confidence=float(confidence),
        model=str(entry.get("model", "")),
        guarded=entry.get("guarded") is True,
    )


class AnswersLog:
    """Appends answers to the file, created readable by this user only (it holds log lines)."""

    def __init__(self, path: Path) -> None:
        make_folder(path.parent)
        self.path = path
        self._fh: BinaryIO = open_private(path, append=True)

    def write(self, answer: Answer) -> None:
        entry: dict[str, object] = {
            "source": answer.source,
            "template": answer.template,
            "example": answer.example,
            "label": answer.label,
            "confidence": round(answer.confidence, 4),
            "model": answer.model,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if answer.guarded:
            entry["guarded"] = True
        self._fh.write(json_line(entry))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
