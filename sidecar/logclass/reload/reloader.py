"""One hot reload at a time: re-read, build and verify beside the running set, swap, retire.

What a reload looks at (``parts``; empty: all three):

- ``config``: the settings again (config file + env + flags, the same loader the CLI ran). Any
  changed field a running process cannot take (``logclass.config.live``) refuses the whole
  reload, ``outcome="restart_required"``; a file that does not validate, ``outcome="refused"``.
- ``bundle``: the model bundle's resolved path and manifest hash (a symlink flipped to a new
  bundle directory counts).
- ``rules``: the rules file's content hash.

Only the rules changed: the narrow swap, a new regex tier in the running engine (exact cache
emptied, template cache kept). Anything else: a new engine from ``build_swap_engine``, loaded
and warmed beside the old one, swapped into the runtime in one step on the event loop thread (a
call reads its engine once, so calls in progress finish on the old one), then the old engine is
closed once its calls are out. The reloader knows only the runtime: each front end is asked for
its part of new settings through the runtime (``FrontEnd.on_swap``), and may refuse them. A new engine starts with empty
caches. A set that does not build raises ``ReloadRefused``, logged at ERROR and counted in
``logclass_reloads_total{part,outcome}``; the running set is untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from logclass.config import live
from logclass.config.settings import Settings
from logclass.core.bundle import ModelBundle
from logclass.core.learnt import LearntStore
from logclass.engine.engine import Engine
from logclass.engine.metrics import Metrics
from logclass.engine.pipeline import bundle_path, freeze_heap, load_engine, needs_bundle
from logclass.engine.reload import RELOAD_PARTS, UnknownReloadParts, build_rules, check_parts, content_mark
from logclass.engine.runtime import Runtime, SwapStep
from logclass.errors import LogclassError
from logclass.store.base import SharedStore
from logclass.tiers import registry
from logclass.tiers.registry import rules_file

log = logging.getLogger("logclass.reload")
# The tier whose rules file the narrow swap replaces.
RULES_TIER = registry.trained_tier("rules")


class ReloadRefused(LogclassError):
    """A reload that was not applied: the message says why and what to fix; the old set keeps serving."""


@dataclass(frozen=True, slots=True)
class ReloadReport:
    changed: tuple[str, ...]  # parts actually swapped, of "rules", "config", "bundle"; () when nothing changed
    model_version: str
    rules_sha256: str


async def build_swap_engine(
    settings: Settings, metrics: Metrics, learnt: LearntStore | None, store: SharedStore | None = None
) -> tuple[Engine, ModelBundle | None]:
    """The one place a reload builds its new engine (loaded, verified, warmed; heap not frozen
    while the old engine still serves), on the process's learnt memory and shared store, which
    outlive it. A new bundle version keys its decisions apart in the store: none of the old
    bundle's are reused."""
    return await load_engine(settings, metrics, learnt, freeze=False, store=store)


def bundle_mark(settings: Settings) -> str:
    """What identifies the bundle on disk: its resolved path and manifest hash ("" when the
    configured tiers need no bundle)."""
    if not needs_bundle(settings):
        return ""
    resolved, digest = content_mark(bundle_path(settings))
    return f"{resolved}@{digest}"


def _rules_sha256(path: Path) -> str:
    return content_mark(path)[1]


class Reloader:
    """Swaps the runtime's set (settings, bundle, engine) after start-up: ``reload``."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        load_settings: Callable[[], Settings] | None = None,
        learnt: LearntStore | None = None,
        store: SharedStore | None = None,
    ) -> None:
        """``load_settings``: the settings as the process was started (file + env + flags), read
        again; None: the config part never changes (a process started without a loader).
        ``learnt``, ``store``: the process's learnt memory and shared store, which every new
        engine is built on."""
        self.runtime, self.metrics = runtime, runtime.metrics
        self.load_settings, self.learnt, self.store = load_settings, learnt, store
        self.rules_path = rules_file(runtime.settings, runtime.bundle)
        self.rules_sha256 = _rules_sha256(self.rules_path)
        self.bundle_mark = bundle_mark(runtime.settings)
        self._lock = asyncio.Lock()

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def engine(self) -> Engine:
        return self.runtime.current()

    def watched_files(self) -> list[Path]:
        """The files whose change a reload would take (for the file watch)."""
        return [self.rules_path, *([bundle_path(self.settings)] if self.bundle_mark else [])]

    async def reload(self, parts: Collection[str] = ()) -> ReloadReport:
        """() = all parts; one reload at a time (a second call waits its turn)."""
        try:
            check_parts(parts)
        except UnknownReloadParts as exc:
            raise ReloadRefused(str(exc)) from exc
        wanted = set(parts) or set(RELOAD_PARTS)
        async with self._lock:
            return await self._reload(wanted)

    def _report(self, changed: Sequence[str]) -> ReloadReport:
        return ReloadReport(
            tuple(p for p in RELOAD_PARTS if p in changed), self.engine.model_version, self.rules_sha256
        )

    async def _reload(self, wanted: set[str]) -> ReloadReport:
        settings = await self._settings() if "config" in wanted else self.settings
        paths = live.changed(self.settings, settings)
        blocked = live.restart_only(paths)
        if blocked:
            raise self._refused(
                "config",
                "restart_required",
                f"{', '.join(blocked)} changed, which only a restart applies: restart the process, or put "
                "the running values back to reload the rest; nothing of this reload was applied",
            )
        steps = self._prepare(settings) if paths else []
        built_from = live.engine_paths(paths)
        config_changed = bool(built_from) and not live.rules_only(built_from)
        moved = "model.bundle" in paths
        bundle_changed = ("bundle" in wanted or moved) and bundle_mark(settings) != self.bundle_mark
        if config_changed or bundle_changed:
            changed = ["config"] * bool(paths) + ["bundle"] * bundle_changed
            await self._swap_engine(settings, changed, steps)
            return self._report(changed)
        path = rules_file(settings, self.runtime.bundle)
        rules_changed = path != self.rules_path or _rules_sha256(path) != self.rules_sha256
        # Without a regex tier the rules file is not read: nothing to swap.
        swap_rules = (
            ("rules" in wanted or bool(built_from)) and rules_changed and self.engine.tier(RULES_TIER) is not None
        )
        if swap_rules:
            await self._swap_rules(settings, path, steps)
        else:
            self.runtime.swap(settings, steps)
        changed = ["rules"] * swap_rules + ["config"] * bool(paths)
        if paths and not built_from:
            self.metrics.reloads.labels("config", "ok").inc()
            log.info("reloaded the front ends' settings: %s", ", ".join(paths))
        if not changed:
            log.info("reload: nothing changed (model %s, rules sha256 %s)", self.engine.model_version, self._short)
        return self._report(changed)

    def _prepare(self, settings: Settings) -> list[SwapStep]:
        try:
            return self.runtime.prepare(settings)
        except LogclassError as exc:
            raise self._refused("config", "refused", str(exc)) from exc

    @property
    def _short(self) -> str:
        return self.rules_sha256[:12]

    async def _settings(self) -> Settings:
        if self.load_settings is None:
            return self.settings
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.load_settings)
        except (LogclassError, OSError) as exc:
            raise self._refused("config", "refused", f"the settings do not load: {exc}") from exc

    async def _swap_rules(self, settings: Settings, path: Path, steps: list[SwapStep]) -> None:
        try:
            built = await asyncio.get_running_loop().run_in_executor(None, build_rules, path)
        except (LogclassError, OSError) as exc:
            raise self._refused("rules", "refused", str(exc)) from exc
        # Back on the event loop thread: between two fast-lane slices of any request.
        self.engine.swap_fast_tier(built.tier)
        self.runtime.swap(settings, steps)
        self.rules_path, self.rules_sha256 = path, built.sha256
        self.metrics.reloads.labels("rules", "ok").inc()
        log.info("reloaded %s regex rules from %s (sha256 %s); exact cache emptied", built.count, path, self._short)

    async def _swap_engine(self, settings: Settings, changed: list[str], steps: list[SwapStep]) -> None:
        part = "bundle" if "bundle" in changed else "config"
        try:
            engine, bundle = await build_swap_engine(settings, self.metrics, self.learnt, self.store)
        except Exception as exc:
            # Whatever stops the new set from building (a hash mismatch, a rule, a label set, a
            # file gone) must leave the running set serving; the message is the builder's own.
            raise self._refused(part, "refused", f"the new {part} does not load: {exc}") from exc
        old_version = self.engine.model_version
        # One synchronous step on the event loop thread: every caller sees the old set or the new.
        old = self.runtime.swap(settings, steps, engine, bundle)
        self.rules_path = rules_file(settings, bundle)
        self.rules_sha256 = _rules_sha256(self.rules_path)
        self.bundle_mark = bundle_mark(settings)
        for name in changed:
            self.metrics.reloads.labels(name, "ok").inc()
        log.info(
            "reloaded %s: model %s -> %s, rules sha256 %s; exact and template caches emptied (new engine)",
            " and ".join(changed),
            old_version,
            engine.model_version,
            self._short,
        )
        if old is not None:
            await old.close()
        freeze_heap(thaw=True)
        log.info("retired the engine of model %s", old_version)

    def _refused(self, part: str, outcome: str, reason: str) -> ReloadRefused:
        self.metrics.reloads.labels(part, outcome).inc()
        message = f"reload refused, the running set keeps serving: {reason}"
        log.error("%s", message)
        return ReloadRefused(message)
