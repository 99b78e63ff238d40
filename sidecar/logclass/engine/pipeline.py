"""Builds the engine (fast lane, model lanes, tiers) from the typed settings."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from importlib import resources
from pathlib import Path

from logclass.config.settings import LaneQueueSettings, Settings, TemplatesSettings
from logclass.core.bundle import ModelBundle, load_bundle
from logclass.core.decision import TIER_NONE
from logclass.core.learnt import LearntStore
from logclass.core.masking import Mask, TemplateMasker
from logclass.encoders import Encoder
from logclass.engine.engine import Engine, PositionedLane
from logclass.engine.lanes import BatchHook, Lane, LaneSettings
from logclass.engine.metrics import Metrics
from logclass.engine.router import Router
from logclass.engine.shared import SharedDecisions
from logclass.store.base import Keys, SharedStore
from logclass.tiers import registry
from logclass.tiers.base import FastTier, Tier
from logclass.tiers.registry import BuildContext, Stage, TierConfigError

# Package data of the wheel (sidecar/logclass/models/ in a checkout); a wheel is installed unzipped, so it is a folder.
DEFAULT_BUNDLE = Path(str(resources.files("logclass.models").joinpath("default")))
log = logging.getLogger("logclass.engine")


def bundle_path(settings: Settings) -> Path:
    configured = settings.model.bundle
    return Path(configured) if configured else DEFAULT_BUNDLE


def needs_bundle(settings: Settings) -> bool:
    """Whether a configured tier reads the model bundle (the registry says which do)."""
    return registry.needs_bundle(settings)


def load_configured_bundle(settings: Settings) -> ModelBundle | None:
    return load_bundle(bundle_path(settings)) if needs_bundle(settings) else None


def open_learnt(settings: Settings) -> LearntStore:
    """The learnt memory (``memory.learnt_file``; null: in memory only). One per process: it
    outlives an engine swap, so its owner (serve) closes it, not the engine."""
    memory = settings.memory
    store = LearntStore(
        memory.learnt_file, max_lessons=memory.learnt_max_lessons, max_file_bytes=memory.learnt_file_max_bytes
    )
    if store.path is not None:
        log.info("learnt memory %s: %d templates", store.path, len(store))
    return store


def source_routes(settings: Settings, bundle: ModelBundle | None) -> dict[str, str]:
    configured = settings.router.source_routes
    if configured is not None:
        return dict(configured)
    routes = dict(bundle.profile.source_routes) if bundle is not None else {}
    tiers = settings.router.tiers
    for source, tier in list(routes.items()):
        if tier not in tiers:
            log.warning(
                "the bundle routes source %r to tier %r, which router.tiers leaves out: not routed", source, tier
            )
            del routes[source]
    return routes


def unbounded_lanes(settings: Settings) -> Settings:
    """``settings`` for an offline job: its lanes take every template it sends. A server's lane
    bounds protect other callers; an offline job's own lookahead bounds its queue, and a refusal
    would abort the job or, for templates escalated into a full LLM lane, write fallback labels."""
    unbounded = LaneQueueSettings(max_queue=2**62, max_caller_share=1.0)
    lanes = dataclasses.replace(
        settings.server.lanes, **{f.name: unbounded for f in dataclasses.fields(settings.server.lanes)}
    )
    return dataclasses.replace(settings, server=dataclasses.replace(settings.server, lanes=lanes))


def lane_settings(settings: Settings, tier: Tier) -> LaneSettings:
    server = settings.server
    lane = registry.lane_settings(settings, tier.name)
    if not tier.scheduling().batched:
        return LaneSettings(max_queue=lane.max_queue, caller_share=lane.max_caller_share)
    return LaneSettings(
        max_queue=lane.max_queue,
        caller_share=lane.max_caller_share,
        max_batch_items=server.batch.max_records,
        max_batch_ms=server.batch.max_batch_ms,
        max_wait_ms=server.batch.max_wait_ms,
    )


def masker_of(templates: TemplatesSettings) -> TemplateMasker:
    """The configured masks (``templates.masks``)."""
    return TemplateMasker(Mask(m.name, m.pattern, m.replace) for m in templates.masks)


def build_engine(
    settings: Settings,
    *,
    bundle: ModelBundle | None = None,
    encoder: Encoder | None = None,
    tiers: dict[str, Tier | None] | None = None,
    on_batch: BatchHook | None = None,
    learnt: LearntStore | None = None,
    store: SharedStore | None = None,
) -> Engine:
    """``tiers``: prebuilt model tiers by name, instead of building them from the config (a
    configured tier given as None is absent, as an LLM without a backend is). ``learnt``: the
    learnt memory the LLM's answers and corrections go to (``open_learnt``); None: no learning."""
    order = list(settings.router.tiers)
    registry.check_router(order, settings.router.source_routes)
    masker = masker_of(settings.templates)
    built: dict[str, Tier | None] = dict(tiers or {})
    if bundle is None and set(order) - set(built) and needs_bundle(settings):
        bundle = load_bundle(bundle_path(settings))
    context = BuildContext(settings, bundle, encoder, learnt)
    for name in order:
        if name not in built:
            built[name] = registry.spec(name).build(context)
    fast: list[FastTier] = []
    for name in order:
        tier = built[name]
        if registry.spec(name).stage != Stage.MODEL and tier is not None:
            if not isinstance(tier, FastTier):
                raise TierConfigError(f"tier {name!r} runs on the request path: it must be a FastTier")
            fast.append(tier)
    router = Router(
        masker=masker,
        tiers=order,
        fast_tiers=fast,
        source_routes=source_routes(settings, bundle),
        fallback_label=settings.router.fallback_label,
        model_version=bundle.version if bundle is not None else "rules-only",
        cache_size=settings.templates.cache_size,
        exact_cache_size=settings.templates.exact_cache_size,
        max_message_bytes=settings.limits.max_message_bytes,
        max_source_bytes=settings.limits.max_source_bytes,
    )
    lanes: list[PositionedLane] = []
    all_tiers: list[Tier] = list(fast)
    for position, name in enumerate(order):
        tier = built.get(name)
        if registry.spec(name).stage != Stage.MODEL or tier is None:
            continue
        all_tiers.append(tier)
        lanes.append(PositionedLane(position, Lane(tier, lane_settings(settings, tier), on_batch)))
    return Engine(router, lanes, all_tiers, learnt, _shared(settings, store, all_tiers, router.fallback_label))


def _shared(settings: Settings, store: SharedStore | None, tiers: list[Tier], fallback: str) -> SharedDecisions | None:
    """The engine's side of the shared store: decisions it may take from it are those of its
    own labels and model tiers."""
    if store is None:
        return None
    labels = {fallback}.union(*(tier.labels() for tier in tiers))
    # The model tiers' decisions, and the fallback's when none of them was sure.
    models = {s.name for s in registry.TIERS if s.stage == Stage.MODEL} | {TIER_NONE}
    config = settings.store
    return SharedDecisions(
        store,
        Keys(config.key_prefix),
        frozenset(labels),
        frozenset(models),
        lease_ms=config.claim_lease_ms,
        ttl_s=config.decision_ttl_s,
    )


async def load_engine(
    settings: Settings,
    metrics: Metrics,
    learnt: LearntStore | None = None,
    *,
    freeze: bool = True,
    store: SharedStore | None = None,
) -> tuple[Engine, ModelBundle | None]:
    """For the servers: loads, verifies (bundle hashes, rules, label set) and warms the models.
    The caller points the metrics at it (``metrics.watch_engine``) once it serves. ``learnt``:
    the process's learnt memory (it outlives engine swaps). ``freeze`` False: a hot reload's
    second engine, while the first still serves (see ``freeze_heap``)."""
    loop = asyncio.get_running_loop()
    bundle = await loop.run_in_executor(None, load_configured_bundle, settings)
    encoder = None
    if registry.needs_encoder(settings, bundle):
        encoder = await loop.run_in_executor(None, registry.build_encoder, settings.embedding, bundle)
    engine = await loop.run_in_executor(
        None,
        lambda: build_engine(
            settings, bundle=bundle, encoder=encoder, on_batch=metrics.observe_lane, learnt=learnt, store=store
        ),
    )
    # The first encode and the LLM's prompt prefix pay one-off costs; no caller should.
    await engine.warm_up()
    if freeze:
        freeze_heap()
    return engine, bundle


def freeze_heap(*, thaw: bool = False) -> None:
    """What is loaded by now (the models, torch) is a large heap that never becomes garbage; left
    to the collector, every full collection walks it and pauses serving ~0.5 s on 2 cores
    (measured on the relay: p99 ack of a 1,000-record request 550 ms -> 110 ms, warm rec/s +70 %).
    ``thaw``: after a hot reload retired an engine, whose cycles the frozen heap would keep
    forever; one full collection (one such pause) frees them."""
    if thaw:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
