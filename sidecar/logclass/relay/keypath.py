"""Record key paths: which (possibly nested) record field holds the message or the source.

A plain name is a top-level key (``log``, even with dots in it: ``log.message`` is one key).
Nested keys use the record-accessor syntax Fluentd and Fluent Bit users know:
``$.kubernetes.labels.app`` or ``$['kubernetes']['labels']['app.kubernetes.io/name']``.
"""

from __future__ import annotations

import re
from typing import Any

from logclass.relay import RelayError

_STEP = re.compile(r"""\.([^.\[\]'"]+)|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]""")


class KeyPath:
    def __init__(self, spec: str, setting: str) -> None:
        self.spec = spec
        self.keys = _parse(spec, setting)

    def get(self, record: dict[Any, Any]) -> object:
        """The value at this path, or None when a step is missing or not a map."""
        value: object = record
        for key in self.keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def __repr__(self) -> str:
        return f"KeyPath({self.spec!r})"


def _parse(spec: str, setting: str) -> tuple[str, ...]:
    if not spec:
        raise RelayError(f"{setting} is empty: give a record key such as 'log' or '$.kubernetes.pod_name'")
    if not spec.startswith("$"):
        return (spec,)
    keys: list[str] = []
    pos = 1
    while pos < len(spec):
        match = _STEP.match(spec, pos)
        if match is None:
            raise RelayError(
                f"{setting}: cannot read {spec!r} at position {pos}; write nested keys as "
                "$.outer.inner or $['outer']['inner.with.dots']"
            )
        keys.append(next(group for group in match.groups() if group is not None))
        pos = match.end()
    if not keys:
        raise RelayError(f"{setting}: {spec!r} names no key; write $.outer.inner or $['outer']['inner']")
    return tuple(keys)
