"""Every tier the router can run, by name: how each is built from (settings, bundle), where it
stands in ``router.tiers``, its lane's settings and its fields of ModelInfo.

The engine builder, the config's tier checks, GetModelInfo and training read this table and no
tier name: a new tier (a store-backed one, a remote one) is its module plus one ``TierSpec`` here.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from logclass import config as config_mod
from logclass.config.settings import EmbeddingSettings, LaneQueueSettings, LanesSettings, Settings
from logclass.core.bundle import ModelBundle
from logclass.core.labelset import LabelExample, LabelSet, LabelSetError
from logclass.core.learnt import LearntStore
from logclass.core.masking import TemplateMasker
from logclass.encoders import Encoder, open_encoder
from logclass.errors import LogclassError
from logclass.tiers.base import Tier
from logclass.tiers.embedding import EmbeddingTier
from logclass.tiers.llm import LlmConfigError, build_llm_tier, label_set_from_settings
from logclass.tiers.llm.tier import LlmTier
from logclass.tiers.memory import MemoryTier
from logclass.tiers.regex import RegexTier, load_rules

log = logging.getLogger("logclass.engine")


class TierConfigError(LogclassError):
    """``router.tiers`` or ``router.source_routes`` name a tier wrongly; the message says how."""


class Stage(enum.IntEnum):
    """Where a tier runs, cheapest first; ``router.tiers`` keeps stages in this order."""

    # On every record, before the template cache (the regex rules).
    RULES = 0
    # A lookup on the request path, after the template cache (the template memory).
    LOOKUP = 1
    # A model behind its own lane, for new templates only.
    MODEL = 2


# What a bundle holds for a tier that training makes: its rules, its template memory, its head.
Trained = str


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a tier is built from: the settings, the bundle (None when no tier needs one), the
    encoder loaded for it (None: built here when needed) and the learnt memory (None: none)."""

    settings: Settings
    bundle: ModelBundle | None
    encoder: Encoder | None = None
    learnt: LearntStore | None = None


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    stage: Stage
    # Whether the tier reads the model bundle, under these settings.
    needs_bundle: Callable[[Settings], bool]
    # The tier, or None when it cannot run here (an LLM with no backend; memory without a bundle).
    build: Callable[[BuildContext], Tier | None]
    # The part of a bundle that `logclass train` makes for it ("" for none): "rules", "memory", "head".
    trained: Trained = ""
    # The lane's queue bounds (server.lanes.<name>); MODEL tiers only.
    lane: Callable[[LanesSettings], LaneQueueSettings] | None = None
    # Its fields of ModelInfo, from the built tier (None when it is not running).
    model_info: Callable[[Tier | None], Mapping[str, str]] = lambda _: {}
    # The confidence below which it escalates: the config's, else the bundle's (the loader, called
    # only when needed); None: it has no such threshold.
    min_confidence: Callable[[Settings, Callable[[], ModelBundle]], float | None] = lambda _s, _b: None


T = TypeVar("T")


def configured(value: T | None, default: T) -> T:
    """A profile setting: the config's when it gives one (not null), else the bundle's."""
    return default if value is None else value


# -- regex --------------------------------------------------------------------------------------


def rules_file(settings: Settings, bundle: ModelBundle | None) -> Path:
    """The config's rules file, else the rules the bundle was trained with, else the built-in."""
    configured_file = settings.regex.rules_file
    if configured_file:
        return Path(configured_file)
    if bundle is not None and bundle.rules_file is not None:
        return bundle.rules_file
    return config_mod.packaged_path("rules.yaml")


def build_regex_tier(settings: Settings, bundle: ModelBundle | None = None) -> RegexTier:
    return RegexTier(load_rules(rules_file(settings, bundle)))


# -- memory -------------------------------------------------------------------------------------


def build_memory_tier(settings: Settings, bundle: ModelBundle, learnt: LearntStore | None = None) -> MemoryTier:
    memory = settings.memory
    masks = [dataclasses.asdict(m) for m in settings.templates.masks]
    own_masks = None if bundle.masks == masks else TemplateMasker.from_config(bundle.masks)
    if own_masks is not None:
        log.warning("templates.masks differ from the bundle's: the memory tier masks with the bundle's own")
    return MemoryTier(
        bundle.memory(),
        min_rows=configured(memory.min_rows, bundle.profile.memory.min_rows),
        min_purity=configured(memory.min_purity, bundle.profile.memory.min_purity),
        masker=own_masks,
        learnt=learnt,
        label_set=bundle.label_set.labels,
    )


# -- embedding ----------------------------------------------------------------------------------


def build_encoder(embedding: EmbeddingSettings, bundle: ModelBundle | None = None) -> Encoder:
    """The encoder ``embedding`` asks for; with ``bundle``, ``auto`` picks from the family of
    embeddings the bundle was trained on."""
    return open_encoder(embedding, trained_with=bundle.encoder_backend if bundle is not None else None)


def needs_encoder(settings: Settings, bundle: ModelBundle | None) -> bool:
    return bundle is not None and EMBEDDING.name in settings.router.tiers and bundle.features.uses_embedding


def build_embedding_tier(
    embedding: EmbeddingSettings, bundle: ModelBundle, encoder: Encoder | None = None
) -> EmbeddingTier:
    if encoder is None and bundle.features.uses_embedding:
        encoder = build_encoder(embedding, bundle)
    return EmbeddingTier(
        bundle,
        encoder,
        min_confidence=configured(embedding.min_confidence, bundle.profile.min_confidence),
        label_min_confidence=configured(embedding.label_min_confidence, bundle.profile.label_min_confidence),
        out_of_distribution=embedding.out_of_distribution,
    )


def _embedding(context: BuildContext) -> Tier | None:
    if context.bundle is None:
        raise TierConfigError("the embedding tier needs a model bundle: set model.bundle, or leave embedding out")
    return build_embedding_tier(context.settings.embedding, context.bundle, context.encoder)


def _embedding_threshold(settings: Settings, bundle: Callable[[], ModelBundle]) -> float:
    given = settings.embedding.min_confidence
    return given if given is not None else bundle().profile.min_confidence


def _embedding_info(tier: Tier | None) -> Mapping[str, str]:
    if not isinstance(tier, EmbeddingTier):
        return {"embedding_model": "", "embedding_device": ""}
    return {"embedding_model": tier.features, "embedding_device": tier.device}


# -- llm ----------------------------------------------------------------------------------------


def label_set(settings: Settings, bundle: ModelBundle | None) -> LabelSet:
    """The bundle's labels with the config's overrides (``llm.labels``, ``llm.examples``), or the
    config's alone when no bundle is loaded."""
    llm = settings.llm
    if bundle is None:
        return label_set_from_settings(llm)
    examples = llm.examples
    try:
        given = None if examples is None else tuple(LabelExample(e.source, e.message, e.label) for e in examples)
        return bundle.label_set.overridden(llm.labels, given)
    except LabelSetError as exc:
        raise LlmConfigError(f"llm.labels / llm.examples against the bundle's label set: {exc}") from exc


def _llm_info(tier: Tier | None) -> Mapping[str, str]:
    backend = tier.backend if isinstance(tier, LlmTier) else None
    if backend is None:
        return {"llm_backend": "none", "llm_model": ""}
    return {"llm_backend": backend.name, "llm_model": backend.model}


# -- the table ----------------------------------------------------------------------------------

REGEX = TierSpec(
    "regex",
    Stage.RULES,
    needs_bundle=lambda _: False,
    build=lambda c: build_regex_tier(c.settings, c.bundle),
    trained="rules",
)
MEMORY = TierSpec(
    "memory",
    Stage.LOOKUP,
    needs_bundle=lambda _: True,
    build=lambda c: build_memory_tier(c.settings, c.bundle, c.learnt) if c.bundle is not None else None,
    trained="memory",
)
EMBEDDING = TierSpec(
    "embedding",
    Stage.MODEL,
    needs_bundle=lambda _: True,
    build=_embedding,
    trained="head",
    lane=lambda lanes: lanes.embedding,
    model_info=_embedding_info,
    min_confidence=lambda settings, bundle: _embedding_threshold(settings, bundle),
)
LLM = TierSpec(
    "llm",
    Stage.MODEL,
    # The LLM asks with the bundle's label set unless the config gives one.
    needs_bundle=lambda settings: not settings.llm.labels,
    build=lambda c: build_llm_tier(c.settings, label_set(c.settings, c.bundle)),
    lane=lambda lanes: lanes.llm,
    model_info=_llm_info,
    min_confidence=lambda settings, _: settings.llm.min_confidence,
)
TIERS: tuple[TierSpec, ...] = (REGEX, MEMORY, EMBEDDING, LLM)
_BY_NAME = {spec.name: spec for spec in TIERS}


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def spec(name: str) -> TierSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TierConfigError(f"unknown tier {name!r}: router.tiers takes {', '.join(_BY_NAME)}") from None


def trained_tier(part: Trained) -> str:
    """The name of the tier a bundle's ``part`` ("rules", "memory", "head") serves."""
    return next(s.name for s in TIERS if s.trained == part)


def bundle_tiers() -> tuple[str, ...]:
    """The tiers a trained bundle serves alone (no model server): what `distill` compares."""
    return tuple(s.name for s in TIERS if s.trained)


def needs_bundle(settings: Settings) -> bool:
    return any(spec(name).needs_bundle(settings) for name in settings.router.tiers)


def check_router(tiers: Sequence[str], source_routes: Mapping[str, str] | None) -> None:
    """``router.tiers`` in stage order (the rules first: they run before the template cache; the
    lookups before the model tiers: they are on the request path), and routes to its tiers."""
    stages = [spec(name).stage for name in tiers]
    for i, (name, stage) in enumerate(zip(tiers, stages, strict=True)):
        if stage == Stage.RULES and i != 0:
            raise TierConfigError(
                f"router.tiers: {name!r} must come first: it runs on every record before the template cache"
            )
        if stage == Stage.LOOKUP and any(s == Stage.MODEL for s in stages[:i]):
            raise TierConfigError(
                f"router.tiers: {name!r} must come before the model tiers: it is a lookup on the request path"
            )
    for source, tier in (source_routes or {}).items():
        if tier not in tiers:
            raise TierConfigError(
                f"router.source_routes.{source}: tier {tier!r} is not in router.tiers {list(tiers)}; "
                "add it there or remove the route"
            )


def lane_settings(settings: Settings, name: str) -> LaneQueueSettings:
    lane = spec(name).lane
    if lane is None:
        raise TierConfigError(f"tier {name!r} runs on the request path and has no lane")
    return lane(settings.server.lanes)


def model_info(tiers: Sequence[Tier]) -> dict[str, str]:
    """Every registered tier's ModelInfo fields, from the running ``tiers`` (absent ones too)."""
    running = {tier.name: tier for tier in tiers}
    fields: dict[str, str] = {}
    for s in TIERS:
        fields.update(s.model_info(running.get(s.name)))
    return fields
