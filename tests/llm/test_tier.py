"""The LLM tier around a real backend: budget and llm_pending, cache fill, coalescing, the queue
bound, the teacher file, a dead server, and the router's handling of stand-in answers.

The embedded SmolLM2-135M answers in a fraction of a second, so it drives the mechanics here;
answer quality is the business of test_llamacpp.py (Qwen) and test_vllm.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: pip install 'logclass[llm]'")

from sidecar import config
from sidecar.core.bundle import ModelBundle
from sidecar.core.decision import TIER_LLM_PENDING, TIER_NONE, LogRecord
from sidecar.core.masking import TemplateMasker
from sidecar.engine.pipeline import build_router
from sidecar.engine.router import Router
from sidecar.tiers.llm import build_llm_tier
from sidecar.tiers.llm.tier import LlmTier
from tests.conftest import MemoEncoder, free_port, wait_until

LEAD = "Lead conversion failed for prospect ID {} due to missing contact information."


def _cfg(**llm: Any) -> config.Config:
    base = {"backend": "llamacpp", "llamacpp": {"model": "smollm2-135m"}}
    return config.load(environ={}, overrides={"llm": {**base, **llm}})


def _tier(cfg: config.Config) -> LlmTier:
    masker = TemplateMasker.from_config(cfg["templates"]["masks"])
    tier = build_llm_tier(cfg, masker.template)
    assert isinstance(tier, LlmTier)
    return tier


@pytest.fixture
def router(tmp_path: Path, bundle: ModelBundle, encoder: MemoEncoder) -> Iterator[Router]:
    # A budget no real model meets: every first ask is late.
    cfg = _cfg(timeout_ms=1, teacher_file=str(tmp_path / "teacher.jsonl"))
    r = build_router(cfg, bundle=bundle, encoder=encoder)
    yield r
    r.close()


def test_late_answer_is_pending_uncached_then_fills_the_cache(router: Router, tmp_path: Path) -> None:
    llm = router.tier("llm")
    assert isinstance(llm, LlmTier)
    first = router.classify([LogRecord("LegacyCRM", LEAD.format(7842)), LogRecord("LegacyCRM", LEAD.format(1))])
    assert [d.tier for d in first] == [TIER_LLM_PENDING, TIER_LLM_PENDING]
    assert first[0].label == router.fallback_label
    # A stand-in is never cached: the next record of the template must reach the LLM tier again.
    assert len(router.template_cache) == 0 and len(router.exact_cache) == 0
    wait_until(lambda: llm.stats.answered == 1, 120.0, "timed out waiting for the LLM")
    later = router.classify([LogRecord("LegacyCRM", LEAD.format(5555))])[0]
    assert later.tier == "llm" and later.label in llm.labels() and later.detail.endswith(".gguf")
    assert later.template_id == first[0].template_id
    # Asked once for the template, though three records of it came by.
    assert (llm.stats.asked, llm.stats.cache_hits) == (1, 1)
    assert len(router.template_cache) == 1
    router.close()
    lines = (tmp_path / "teacher.jsonl").read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[0])
    assert len(lines) == 1
    assert entry["template"] == "Lead conversion failed for prospect ID <NUM> due to missing contact information."
    assert entry["example"] == LEAD.format(7842) and entry["label"] == later.label
    assert entry["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and entry["source"] == "LegacyCRM"


def test_concurrent_asks_for_one_template_are_coalesced() -> None:
    tier = _tier(_cfg(timeout_ms=None))
    try:
        results: list[Any] = []

        def ask(n: int) -> None:
            results.extend(tier.decide([LogRecord("LegacyCRM", LEAD.format(n))]))

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 4 and all(v is not None and v.final for v in results)
        assert len({v.label for v in results if v is not None}) == 1
        assert tier.stats.asked == 1
        assert tier.stats.coalesced + tier.stats.cache_hits == 3
    finally:
        tier.close()


def test_a_full_queue_sheds_new_templates_uncached() -> None:
    tier = _tier(_cfg(timeout_ms=1, max_queue=2))
    try:
        verdicts = tier.decide([LogRecord("LegacyCRM", f"Workflow step {word} failed") for word in "abcde"])
        assert tier.stats.asked == 2 and tier.stats.shed == 3
        assert [v.tier for v in verdicts if v is not None] == [TIER_LLM_PENDING] * 2 + [TIER_NONE] * 3
        assert all(v is not None and not v.final and v.label == "Unclassified" for v in verdicts)
    finally:
        tier.close()


def test_no_budget_waits_for_answers_in_offline_jobs(bundle: ModelBundle, encoder: MemoEncoder) -> None:
    cfg = _cfg(timeout_ms=1)
    r = build_router(cfg, bundle=bundle, encoder=encoder, llm_wait=True)
    try:
        decision = r.classify([LogRecord("LegacyCRM", LEAD.format(3))])[0]
        assert decision.tier == "llm" and decision.confidence > 0
    finally:
        r.close()


def test_unreachable_server_gives_uncached_fallback_and_asks_again(bundle: ModelBundle, encoder: MemoEncoder) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = config.load(
        environ={},
        overrides={"llm": {"backend": "vllm", "timeout_ms": 5000, "server": {"url": url, "model": "m", "retries": 0}}},
    )
    r = build_router(cfg, bundle=bundle, encoder=encoder)
    try:
        llm = r.tier("llm")
        assert isinstance(llm, LlmTier)
        decision = r.classify([LogRecord("LegacyCRM", LEAD.format(1))])[0]
        assert (decision.label, decision.tier, decision.detail) == ("Unclassified", TIER_NONE, "LLM unavailable")
        assert len(r.template_cache) == 0
        r.classify([LogRecord("LegacyCRM", LEAD.format(2))])
        assert (llm.stats.asked, llm.stats.failed) == (2, 2)
    finally:
        r.close()
