"""Template normaliser: masks the variable parts of a message so that repeats share one key.

All masks are compiled into a single alternation and applied in one ``re.sub`` pass, so the
cost per message does not grow with the number of masks (Drain3's masking is the model; it
applies its masks one after another).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from logclass.errors import LogclassError


class MaskError(LogclassError):
    pass


@dataclass(frozen=True, slots=True)
class Mask:
    name: str
    pattern: str
    replace: str


class TemplateMasker:
    def __init__(self, masks: Iterable[Mask]) -> None:
        self.masks = list(masks)
        names = [m.name for m in self.masks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise MaskError(f"templates.masks: duplicate mask names {sorted(dupes)}; names must be unique")
        for mask in self.masks:
            try:
                re.compile(mask.pattern)
            except re.error as exc:
                raise MaskError(f"templates.masks[{mask.name}]: invalid pattern {mask.pattern!r}: {exc}") from exc
        self._replacements = {f"m{i}": m.replace for i, m in enumerate(self.masks)}
        alternation = "|".join(f"(?P<m{i}>{m.pattern})" for i, m in enumerate(self.masks))
        try:
            self._regex = re.compile(alternation) if self.masks else None
        except re.error as exc:
            raise MaskError(
                f"templates.masks: masks compile alone but not together ({exc}); "
                "remove named groups or backreferences from mask patterns"
            ) from exc

    @classmethod
    def from_config(cls, masks: Iterable[Mapping[str, Any]]) -> TemplateMasker:
        return cls(Mask(str(m["name"]), str(m["pattern"]), str(m["replace"])) for m in masks)

    def _replace(self, match: re.Match[str]) -> str:
        return self._replacements[match.lastgroup or ""]

    def template(self, message: str) -> str:
        if self._regex is None:
            return message
        return self._regex.sub(self._replace, message)


def template_id(template: str) -> str:
    """Stable short id of a template: equal across processes, sources and restarts."""
    return hashlib.blake2b(template.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
