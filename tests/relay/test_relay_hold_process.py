"""A real `logclass relay` SIGKILLed while it holds records (issue 31): records of new templates
go to an LLM that never answers, so the relay holds them (acked, in its buffer); the process is
killed; restarted with an LLM that answers, it asks about them again and forwards every one with
its real label. Known records never waited behind them."""

from __future__ import annotations

from typing import Any

import yaml

from tests.relay.conftest import report
from tests.relay.forward_peer import Upstream
from tests.relay.test_relay_faults import send_acked
from tests.store.llm_server import LlmServer

MARKER = "held-probe"
WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "granite", "harbor", "indigo", "jade"]


def _llm(url: str) -> dict[str, Any]:
    return {"backend": "vllm", "server": {"url": url, "model": "stub", "retries": 0}}


def test_held_records_survive_a_sigkill_and_leave_with_their_label(relays: Any) -> None:
    hanging, answering = LlmServer(hang_on=MARKER), LlmServer()
    upstream = Upstream().start()
    relay = relays([upstream.port], {"budget_ms": 50, "hold": {"max_s": 300}}, start=False)
    relay.config["router"] = {"tiers": ["regex", "llm"], "source_routes": {}}
    relay.config["llm"] = _llm(hanging.url)
    relay.config_path.write_text(yaml.safe_dump(relay.config))
    relay.env["LOGCLASS_LLM__BACKEND"] = "vllm"
    try:
        relay.start()
        new = [
            [{"log": f"{MARKER} {WORDS[c]} {word} drift detected", "seq": 10 * c + i} for i, word in enumerate(WORDS)]
            for c in range(3)
        ]
        known = [{"log": f"User User{i} logged in.", "seq": 1000 + i} for i in range(10)]
        send_acked(relay.port, [*new, known])
        # The known records go on; the new ones wait in the buffer for an LLM that never answers.
        assert upstream.wait_for_all([r["seq"] for r in known]), relay.log()
        held = sorted((relay.buffer / "held").glob("*.chunk"))
        assert held, relay.log()
        assert relay.metrics()["logclass_relay_held_records"] == 30
        assert all(e.record["seq"] >= 1000 for e in upstream.events)
        relay.kill()

        relay.config["llm"] = _llm(answering.url)
        relay.config_path.write_text(yaml.safe_dump(relay.config))
        relay.start()
        wanted = [r["seq"] for chunk in new for r in chunk]
        assert upstream.wait_for_all(wanted, timeout=60), relay.log()
        report("SIGKILL while holding", wanted, [e.record["seq"] for e in upstream.events if e.record["seq"] < 1000])
        released = [e for e in upstream.events if e.record["seq"] < 1000]
        assert {e.record["log_label_tier"] for e in released} == {"llm"}
        assert "Unclassified" not in {e.record["log_label"] for e in released}
        assert not list((relay.buffer / "held").glob("*.chunk"))
        assert relay.metrics()['logclass_relay_hold_records_total{outcome="labelled"}'] == 30
        assert relay.stop() == 0
    finally:
        upstream.stop()
        hanging.stop()
        answering.stop()
