"""The one interface every tier implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sidecar.decision import LogRecord, Verdict


@runtime_checkable
class Tier(Protocol):
    """A classifier stage.

    ``decide`` takes a batch and returns one entry per record, in order: a ``Verdict`` when the
    tier is confident, ``None`` when the record must escalate to the next tier. Batches let
    model tiers amortise their per-call cost; a tier must not assume records are distinct.
    """

    name: str

    def decide(self, records: Sequence[LogRecord]) -> list[Verdict | None]: ...

    def labels(self) -> list[str]:
        """Labels this tier can produce (for model info and evaluation)."""
        ...
