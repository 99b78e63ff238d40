"""Reading a file someone gave logclass: a config, rules or labels file, a bundle's manifest, a
teacher file.

One ladder of what can go wrong (cannot open, too large, not UTF-8, not valid YAML or JSON), so
every such file fails the same way: one line naming the file, what it is for, what is wrong and
the fix. Reads are bounded (``max_bytes``): a path that names a huge file by mistake, or a
hostile one, fails fast instead of filling memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from logclass.errors import LogclassError

# Far above any config, rules, labels file or manifest written by hand or by `logclass train`.
DEFAULT_MAX_BYTES = 16 << 20
# Values a YAML document may expand to, aliases counted at their full size: anchors and aliases
# are kept (operators share blocks with them), but a few hundred bytes of nested aliases (the
# "billion laughs") would expand to billions of values when the document is walked. The seed's
# rules and labels files are a few thousand values.
MAX_YAML_VALUES = 200_000


class FileReadError(LogclassError):
    """A file that cannot be read as the text, YAML or JSON it should hold; the message names the
    file, what it is for and the fix."""


ErrorClass = type[LogclassError]


def read_bytes(
    path: str | Path,
    what: str,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    error: ErrorClass = FileReadError,
) -> bytes:
    """The file's bytes. ``what`` says what the file is for ("rules file"); ``error`` is the class
    raised, for loaders whose callers catch their own (a bundle's ``BundleError``); None for
    ``max_bytes`` reads files of any size (those checked against a hash first)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except IsADirectoryError as exc:
        raise error(f"cannot read {what} {path}: it is a directory; give the path of a file") from exc
    except OSError as exc:
        raise error(
            f"cannot read {what} {path}: {exc.strerror or exc}; check the path and that logclass may read it"
        ) from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise error(
            f"{what} {path} is larger than {max_bytes} bytes, far more than such a file holds; is it the right file?"
        )
    return data


def read_text(
    path: str | Path,
    what: str,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    error: ErrorClass = FileReadError,
) -> str:
    """The file as UTF-8 text."""
    return text_of(read_bytes(path, what, max_bytes=max_bytes, error=error), path, what, error=error)


def text_of(data: bytes, path: str | Path, what: str, *, error: ErrorClass = FileReadError) -> str:
    """Bytes read from ``path`` as UTF-8 text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc


def read_yaml(
    path: str | Path,
    what: str,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    error: ErrorClass = FileReadError,
) -> object:
    """The file's YAML document as plain data (safe loading: no Python objects); None when empty."""
    return yaml_of(read_text(path, what, max_bytes=max_bytes, error=error), path, what, error=error)


def yaml_of(text: str, path: str | Path, what: str, *, error: ErrorClass = FileReadError) -> object:
    """``text`` (read from ``path``) as one YAML document, safely loaded and bounded in size."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {_yaml_problem(exc)}; correct it there") from exc
    except RecursionError as exc:
        raise error(f"{what} {path} is nested too deeply to read; flatten it") from exc
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader counting what the document expands to (each node once, an alias at the full
    size of what it names), refusing it past MAX_YAML_VALUES before anything walks it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)  # sized when its anchor was composed
        node = super().compose_node(parent, index)
        if node is not None:
            size = 1 + sum(self._sizes.get(id(child), 1) for child in _children(node))
            if size > MAX_YAML_VALUES:
                problem = f"expands to more than {MAX_YAML_VALUES:,} values (aliases counted in full)"
                raise yaml.composer.ComposerError(None, None, problem, node.start_mark)
            self._sizes[id(node)] = size
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message is several lines quoting the text; the CLI prints errors as one line."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split())
    where = f"line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
    return ": ".join(part for part in (exc.context, exc.problem) if part) + f" at {where}"


def read_json(
    path: str | Path,
    what: str,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    error: ErrorClass = FileReadError,
) -> object:
    """The file's JSON value as plain data."""
    return json_of(read_bytes(path, what, max_bytes=max_bytes, error=error), path, what, error=error)


def json_of(data: bytes, path: str | Path, what: str, *, error: ErrorClass = FileReadError) -> object:
    """Bytes read from ``path`` as a JSON value (for callers that also hash the bytes they parse)."""
    text = text_of(data, path, what, error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}; correct it there") from exc
    except RecursionError as exc:
        raise error(f"{what} {path} is nested too deeply to read; flatten it") from exc
