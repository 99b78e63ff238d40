"""The tier registry: every tier's name, stage, build, lane and model-info fields in one table,
which the engine builder, the tier checks, GetModelInfo and training read."""

from __future__ import annotations

import typing

import pytest

from logclass import config
from logclass.config.settings import TierName
from logclass.engine.pipeline import build_engine, unbounded_lanes
from logclass.tiers import registry
from logclass.tiers.registry import Stage, TierConfigError
from tests.conftest import NO_LLM


def test_the_config_names_exactly_the_registered_tiers() -> None:
    # The config's schema lists the names it accepts; a tier registered without one (or the
    # reverse) would be refused by one and taken by the other.
    assert set(typing.get_args(TierName)) == set(registry.names())


def test_stages_and_lanes_agree() -> None:
    for spec in registry.TIERS:
        assert (spec.lane is not None) == (spec.stage == Stage.MODEL), spec.name


@pytest.mark.parametrize(
    ("tiers", "routes", "fragment"),
    [
        (["embedding", "regex"], None, "'regex' must come first"),
        (["regex", "embedding", "memory"], None, "'memory' must come before the model tiers"),
        (["regex", "llm"], {"CRM": "embedding"}, "router.source_routes.CRM: tier 'embedding' is not in router.tiers"),
        (["regex", "vector"], None, "unknown tier 'vector': router.tiers takes regex, memory, embedding, llm"),
    ],
)
def test_a_wrong_router_names_what_to_change(tiers: list[str], routes: dict[str, str] | None, fragment: str) -> None:
    with pytest.raises(TierConfigError) as err:
        registry.check_router(tiers, routes)
    assert fragment in str(err.value)


def test_the_engine_builder_refuses_a_wrong_order() -> None:
    settings = config.load(environ={**NO_LLM, "LOGCLASS_ROUTER__TIERS": "[embedding, regex]"})
    with pytest.raises(TierConfigError, match="'regex' must come first"):
        build_engine(settings)


def test_the_usual_orders_pass() -> None:
    for tiers in (["regex", "memory", "embedding", "llm"], ["memory", "llm"], ["regex"], ["embedding"]):
        registry.check_router(tiers, None)


def test_model_info_fields_come_from_each_tier_running_or_not() -> None:
    engine = build_engine(config.load(environ={"LOGCLASS_ROUTER__TIERS": "[regex]"}))
    assert registry.model_info(engine.tiers) == {
        "embedding_model": "",
        "embedding_device": "",
        "llm_backend": "none",
        "llm_model": "",
    }


def test_offline_lanes_are_unbounded_for_every_model_tier() -> None:
    settings = unbounded_lanes(config.load(environ={}))
    for spec in registry.TIERS:
        if spec.lane is not None:
            assert registry.lane_settings(settings, spec.name).max_queue == 2**62


def test_training_parts_name_their_tiers() -> None:
    assert registry.trained_tier("head") == "embedding" and registry.trained_tier("rules") == "regex"
    assert registry.bundle_tiers() == ("regex", "memory", "embedding")


def test_each_tier_gives_its_own_threshold_for_the_report() -> None:
    from logclass.jobs.report import thresholds

    given = config.load(environ={}, overrides={"embedding": {"min_confidence": 0.0}, "llm": {"min_confidence": 0.3}})
    # 0.0 is a given threshold, not a missing one.
    assert thresholds(given) == {"embedding": 0.0, "llm": 0.3}
    missing = config.load(environ={}, overrides={"model": {"bundle": "/nonexistent/bundle"}})
    assert set(thresholds(missing)) == {"llm"}  # no bundle to read the embedding's from
