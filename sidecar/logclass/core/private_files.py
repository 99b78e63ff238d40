"""Files that hold log lines (learnt lessons, teacher answers, relay chunks): created readable by
this process's user alone, in folders only it can list, and made durable the one way that works."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

FILE_MODE, FOLDER_MODE = 0o600, 0o700


def make_folder(path: Path) -> None:
    """``path`` and its missing parents, mode 0700 (an existing folder keeps its mode)."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)


def open_private(path: Path, *, append: bool) -> BinaryIO:
    """``path`` for binary writing, created 0600: appended to, or truncated."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, FILE_MODE), "ab" if append else "wb")


def fsync_folder(path: Path) -> None:
    """Makes the renames and creations in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
