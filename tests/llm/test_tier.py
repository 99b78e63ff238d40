"""The LLM tier in the engine's LLM lane, around a real backend: budget end and ``pending``, the
answer filling the shared template cache, coalescing, the lane's queue bound, the teacher file,
a dead server, and offline jobs waiting for every answer.

The embedded SmolLM2-135M answers in a fraction of a second, so it drives the mechanics here;
answer quality is the business of test_llamacpp.py (Qwen) and test_vllm.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama.cpp is not installed: pip install 'logclass[llamacpp]'")

from logclass import config
from logclass.core.bundle import ModelBundle
from logclass.core.decision import TIER_NONE, TIER_PENDING, LogRecord
from logclass.engine.blocking import BlockingEngine
from logclass.engine.engine import Engine
from logclass.engine.lanes import LaneFullError
from logclass.engine.pipeline import build_engine
from logclass.tiers.llm.tier import LlmTier
from tests.conftest import MemoEncoder, free_port

LEAD = "Lead conversion failed for prospect ID {} due to missing contact information."


def _cfg(server: dict[str, Any] | None = None, **llm: Any) -> config.Settings:
    base = {"backend": "llamacpp", "llamacpp": {"model": "smollm2-135m"}}
    return config.load(environ={}, overrides={"llm": {**base, **llm}, **({"server": server} if server else {})})


def _llm(engine: Engine) -> LlmTier:
    tier = engine.tier("llm")
    assert isinstance(tier, LlmTier)
    return tier


def test_budget_end_is_pending_uncached_then_the_answer_fills_the_cache(
    tmp_path: Path, bundle: ModelBundle, encoder: MemoEncoder
) -> None:
    cfg = _cfg(teacher_file=str(tmp_path / "teacher.jsonl"))

    async def scenario() -> None:
        engine = build_engine(cfg, bundle=bundle, encoder=encoder)
        llm = _llm(engine)
        records = [LogRecord("LegacyCRM", LEAD.format(7842)), LogRecord("LegacyCRM", LEAD.format(1))]
        first = await engine.classify(records, budget_s=0.0)  # no model answers that fast
        assert [d.tier for d in first] == [TIER_PENDING, TIER_PENDING]
        assert first[0].label == engine.fallback_label
        # A stand-in is never cached: the exact cache has nothing; the template is on its way.
        assert len(engine.router.exact_cache) == 0 and engine.inflight == 1
        await engine.drain()
        (later,) = await engine.classify([LogRecord("LegacyCRM", LEAD.format(5555))], budget_s=0.0)
        assert later.tier == "llm" and later.label in llm.labels() and later.detail.endswith(".gguf")
        assert later.template_id == first[0].template_id
        # Asked once for the template, though three records of it came by.
        assert llm.stats.asked == 1 and len(engine.router.template_cache) == 1
        await engine.close()

    asyncio.run(scenario())
    lines = (tmp_path / "teacher.jsonl").read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[0])
    assert len(lines) == 1
    assert entry["template"] == "Lead conversion failed for prospect ID <NUM> due to missing contact information."
    assert entry["example"] == LEAD.format(7842)
    assert entry["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and entry["source"] == "LegacyCRM"


def test_concurrent_asks_for_one_template_are_coalesced(bundle: ModelBundle, encoder: MemoEncoder) -> None:
    async def scenario() -> None:
        engine = build_engine(_cfg(), bundle=bundle, encoder=encoder)
        calls = [engine.classify([LogRecord("LegacyCRM", LEAD.format(n))]) for n in range(4)]
        results = [r[0] for r in await asyncio.gather(*calls)]
        assert {d.tier for d in results} == {"llm"} and len({d.label for d in results}) == 1
        assert _llm(engine).stats.asked == 1
        await engine.close()

    asyncio.run(scenario())


def test_a_full_llm_lane_refuses_routed_requests(bundle: ModelBundle, encoder: MemoEncoder) -> None:
    cfg = _cfg(server={"lanes": {"llm": {"max_queue": 2}}})

    async def scenario() -> None:
        engine = build_engine(cfg, bundle=bundle, encoder=encoder)
        lines = [LogRecord("LegacyCRM", f"Workflow step {word} failed") for word in ("alpha", "bravo")]
        held = await engine.classify(lines, budget_s=0.0)
        assert [d.tier for d in held] == [TIER_PENDING] * 2
        with pytest.raises(LaneFullError, match="the llm lane is full"):
            await engine.classify([LogRecord("LegacyCRM", "Workflow step charlie failed")], budget_s=0.0)
        await engine.drain()
        assert _llm(engine).stats.asked == 2
        await engine.close()

    asyncio.run(scenario())


def test_offline_jobs_wait_for_every_answer(bundle: ModelBundle, encoder: MemoEncoder) -> None:
    with BlockingEngine(build_engine(_cfg(), bundle=bundle, encoder=encoder), budget_s=None) as engine:
        decision = engine.classify([LogRecord("LegacyCRM", LEAD.format(3))])[0]
        assert decision.tier == "llm" and decision.confidence > 0


def test_unreachable_server_gives_uncached_fallback_and_asks_again(bundle: ModelBundle, encoder: MemoEncoder) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = config.load(
        environ={}, overrides={"llm": {"backend": "vllm", "server": {"url": url, "model": "m", "retries": 0}}}
    )
    with BlockingEngine(build_engine(cfg, bundle=bundle, encoder=encoder), budget_s=None) as engine:
        llm = _llm(engine.engine)
        decision = engine.classify([LogRecord("LegacyCRM", LEAD.format(1))])[0]
        assert (decision.label, decision.tier, decision.detail) == ("Unclassified", TIER_NONE, "LLM unavailable")
        assert len(engine.engine.router.template_cache) == 0
        engine.classify([LogRecord("LegacyCRM", LEAD.format(2))])
        assert (llm.stats.asked, llm.stats.failed) == (2, 2)
