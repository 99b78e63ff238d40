"""The file watch (``server.reload.watch_interval_s``): a reload when a watched file changes.

Polled, by content: each file's symlinks are resolved and what it points at is hashed (a
bundle directory: its manifest, which holds every other file's hash). Kubelet updates a
ConfigMap volume by swapping a ``..data`` symlink, and ``logclass distill`` flips a bundle
symlink to a new directory; both keep or reset mtimes unpredictably, so mtimes are not trusted.
A change is reloaded once: a refused set is not retried until the files change again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from logclass.engine.reload import content_mark
from logclass.errors import LogclassError

log = logging.getLogger("logclass.reload")
Fingerprint = dict[str, tuple[str, str]]  # watched path -> (resolved path, content sha256)


def fingerprint(paths: Sequence[Path]) -> Fingerprint:
    out = {}
    for path in paths:
        resolved, digest = content_mark(path)
        out[str(path)] = (str(resolved), digest)
    return out


class FileWatch:
    """``poll`` compares the files with the last look; ``step`` reloads on a change; ``run``
    steps every ``interval_s`` until cancelled."""

    def __init__(
        self, files: Callable[[], Sequence[Path]], reload: Callable[[], Awaitable[object]], interval_s: float
    ) -> None:
        """``files``: asked on each poll (a reload may move the rules file or the bundle)."""
        self.files, self.reload, self.interval_s = files, reload, interval_s
        self._last = fingerprint(files())

    def poll(self) -> bool:
        """True when a watched file differs from the last poll. A file that joined the watched
        set (a reload moved the rules file) is only noted: the reload that moved it read it."""
        now = fingerprint(self.files())
        changed = any(path in self._last and self._last[path] != mark for path, mark in now.items())
        self._last = now
        return changed

    async def step(self) -> bool:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.poll):
            return False
        log.info("reload: a watched file changed")
        # Refused: logged and counted by the reloader; the old set keeps serving. The baseline stays
        # the poll's, so a file changed while this reload ran is seen by the next poll.
        with contextlib.suppress(LogclassError):
            await self.reload()
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except Exception:
                # The watch must outlive one bad poll or reload; serving is not affected.
                log.exception("reload watch: this poll failed; polling on")
