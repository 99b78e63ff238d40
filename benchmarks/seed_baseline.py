"""The seed project's algorithm, re-implemented as the benchmark's baseline.

Per record: the seed's eight regexes searched one after another (as written in the seed, bugs
included), then, unless the source is LegacyCRM, one ``encode`` call for that single message and
the logistic regression on top. LegacyCRM went to an LLM in the seed; there is none here, so it
gets the fallback label (which only makes the baseline faster).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sidecar.bundle import LinearHead
from sidecar.decision import LogRecord
from sidecar.encoder import Encoder

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
    for pattern, label in SEED_PATTERNS.items():
        if re.search(pattern, message, re.IGNORECASE):
            return label
    return None


def seed_classify(records: Sequence[LogRecord], encoder: Encoder, head: LinearHead) -> list[str]:
    model = encoder._model  # the seed called SentenceTransformer.encode directly
    labels = []
    for record in records:
        label = classify_with_regex(record.message)
        if label is None and record.source != "LegacyCRM":
            vector = model.encode([record.message])
            proba = head.predict_proba(vector)[0]
            label = head.labels[int(proba.argmax())] if proba.max() >= 0.5 else "Unclassified"
        labels.append(label or "Unclassified")
    return labels
