"""Builds the router and its tiers from a validated config."""

from __future__ import annotations

from pathlib import Path

from sidecar import config as config_mod
from sidecar.bundle import ModelBundle, load_bundle
from sidecar.encoder import Encoder
from sidecar.masking import TemplateMasker
from sidecar.router import Router
from sidecar.tiers.base import Tier
from sidecar.tiers.embedding import EmbeddingTier
from sidecar.tiers.llm import build_llm_tier
from sidecar.tiers.regex import RegexTier, load_rules

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = PROJECT_ROOT / "models" / "default"


def bundle_path(cfg: config_mod.Config) -> Path:
    configured = cfg["model"].get("bundle")
    return Path(configured) if configured else DEFAULT_BUNDLE


def build_regex_tier(cfg: config_mod.Config) -> RegexTier:
    rules_file = cfg["regex"].get("rules_file") or config_mod.packaged_path("rules.yaml")
    return RegexTier(load_rules(rules_file))


def build_encoder(cfg: config_mod.Config) -> Encoder:
    emb = cfg["embedding"]
    return Encoder(
        model_path=emb.get("model_path"),
        device=emb["device"],
        batch_size=emb["batch_size"],
        max_seq_length=emb["max_seq_length"],
    )


def build_embedding_tier(cfg: config_mod.Config, bundle: ModelBundle, encoder: Encoder | None = None) -> EmbeddingTier:
    emb = cfg["embedding"]
    return EmbeddingTier(
        encoder or build_encoder(cfg),
        bundle.head,
        min_confidence=emb["min_confidence"],
        label_min_confidence=emb["label_min_confidence"],
    )


def build_router(
    cfg: config_mod.Config,
    *,
    bundle: ModelBundle | None = None,
    encoder: Encoder | None = None,
    llm_wait: bool = False,
) -> Router:
    """``llm_wait``: the LLM tier waits for every answer instead of its budget (offline jobs)."""
    tiers = cfg["router"]["tiers"]
    masker = TemplateMasker.from_config(cfg["templates"]["masks"])
    model_tiers: dict[str, Tier | None] = {}
    version = "rules-only"
    if "embedding" in tiers:
        bundle = bundle or load_bundle(bundle_path(cfg))
        model_tiers["embedding"] = build_embedding_tier(cfg, bundle, encoder)
    if bundle is not None:
        version = bundle.version
    if "llm" in tiers:
        model_tiers["llm"] = build_llm_tier(cfg, masker.template, wait=llm_wait)
    return Router(
        masker=masker,
        tiers=tiers,
        regex=build_regex_tier(cfg) if "regex" in tiers else None,
        model_tiers=model_tiers,
        source_routes=cfg["router"]["source_routes"],
        fallback_label=cfg["router"]["fallback_label"],
        model_version=version,
        cache_size=cfg["templates"]["cache_size"],
        exact_cache_size=cfg["templates"]["exact_cache_size"],
        max_message_bytes=cfg["limits"]["max_message_bytes"],
    )
