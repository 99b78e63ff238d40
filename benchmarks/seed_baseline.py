"""The seed project's algorithm, re-implemented as the benchmark's baseline.

Per record, as in the seed's ``classify_log``: LegacyCRM goes to the LLM; any other source has the
seed's eight regexes searched one after another (as written, unescaped dots included), then, if
none matched, one ``encode`` call for that single message and the logistic regression on top.
There is no LLM here, so LegacyCRM gets "Unclassified", which only makes the baseline faster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from logclass.core.decision import LogRecord
from logclass.core.head import LinearHead
from logclass.encoders.torch_backend import TorchEncoder

UNCLASSIFIED = "Unclassified"
SEED_PATTERNS = {
    r"User User\d+ logged (in|out).": "User Action",
    r"Backup (started|ended) at .*": "System Notification",
    r"Backup completed successfully.": "System Notification",
    r"System updated to version .*": "System Notification",
    r"File .* uploaded successfully by user .*": "System Notification",
    r"Disk cleanup completed successfully.": "System Notification",
    r"System reboot initiated by user .*": "System Notification",
    r"Account with ID .* created by .*": "User Action",
}


def classify_with_regex(message: str) -> str | None:
    # re.search with a pattern string, not a precompiled list: the seed paid re's cache lookup too.
    for pattern, label in SEED_PATTERNS.items():
        if re.search(pattern, message, re.IGNORECASE):
            return label
    return None


def classify_one(record: LogRecord, model: Any, head: LinearHead) -> str:
    """``model`` is the bare SentenceTransformer: the seed called its ``encode`` per message."""
    if record.source == "LegacyCRM":
        return UNCLASSIFIED
    label = classify_with_regex(record.message)
    if label is not None:
        return label
    proba = head.predict_proba(model.encode([record.message]))[0]
    return head.labels[int(proba.argmax())] if proba.max() >= 0.5 else UNCLASSIFIED


def seed_classify(records: Sequence[LogRecord], encoder: TorchEncoder, head: LinearHead) -> list[str]:
    # The torch encoder's own SentenceTransformer: the seed's model, called as the seed called it.
    return [classify_one(record, encoder.model, head) for record in records]
