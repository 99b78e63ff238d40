"""SHA-256 of files, and the check of a directory's files against the hashes a listing records
(a bundle's manifest): nothing is read as data before its bytes are known to be the ones listed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

from logclass.errors import LogclassError

_BLOCK = 1 << 20


def sha256_file(path: Path, on_block: Callable[[int], object] | None = None) -> str:
    """``on_block`` gets each block's size, for a progress bar on large files."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
            if on_block is not None:
                on_block(len(block))
    return digest.hexdigest()


def verify_files(root: Path, files: Mapping[str, str], listing: Path, error: type[LogclassError]) -> None:
    """Each file named in ``files`` (relative to ``root``, as ``listing`` lists them) exists
    inside ``root`` and has its SHA-256; else ``error`` names the file and what to do."""
    inside = root.resolve()
    for name, expected in files.items():
        target = (root / name).resolve()
        if inside not in target.parents:
            raise error(f"{listing}: file entry {name!r} points outside the bundle")
        if not target.is_file():
            raise error(f"{root}: {name} is listed in the manifest but missing")
        actual = sha256_file(target)
        if actual != expected:
            raise error(
                f"{root}: {name} does not match its SHA-256 in the manifest (expected {expected[:12]}…, "
                f"found {actual[:12]}…); the bundle was modified or damaged: retrain or restore it"
            )
