"""Hot reload's parts in process (issue 19): the live/restart-only split, the Reloader on a
rules-only engine, the file watch's change detection (driven by ``poll``/``step``, no timers),
and the metrics across an engine swap."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import weakref
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from logclass import config
from logclass.config import live
from logclass.config.settings import Settings
from logclass.core.decision import LogRecord
from logclass.engine.metrics import Metrics
from logclass.engine.pipeline import build_engine
from logclass.engine.runtime import Runtime
from logclass.errors import LogclassError
from logclass.reload.reloader import Reloader, ReloadRefused
from logclass.reload.watch import FileWatch
from logclass.service.classifier import ClassifierService, ClassifyCall
from logclass.tiers.llm.tier import LlmTier
from tests.llm.conftest import seed_prompts

RULES = "rules:\n  - {name: disk-full, pattern: 'no space left', label: disk}\n"
RULES_V2 = RULES + "  - {name: oom, pattern: 'out of memory', label: oom}\n"


def _settings(rules: Path, **overrides: dict[str, object]) -> Settings:
    return config.load(
        environ={}, overrides={"router": {"tiers": ["regex"]}, "regex": {"rules_file": str(rules)}, **overrides}
    )


# -- live / restart-only --------------------------------------------------------------------------


def test_changed_fields_split_into_live_and_restart_only(tmp_path: Path) -> None:
    old = _settings(tmp_path / "r.yaml")
    new = _settings(
        tmp_path / "r.yaml",
        router={"tiers": ["regex"], "fallback_label": "other"},
        server={"listen": "127.0.0.1:1", "reload": {"watch_interval_s": 5}},
        embedding={"min_confidence": 0.5, "device": "cpu"},
    )
    paths = live.changed(old, new)
    assert "router.fallback_label" in paths and "embedding.min_confidence" in paths
    blocked = live.restart_only(paths)
    assert {"server.listen", "server.reload.watch_interval_s"} <= set(blocked)
    assert "embedding.device" in blocked or old.embedding.device == "cpu"
    assert "router.fallback_label" not in blocked and "embedding.min_confidence" not in blocked
    assert live.changed(old, old) == []
    assert live.rules_only(live.changed(old, _settings(tmp_path / "other.yaml")))
    assert not live.rules_only(paths)


# -- the Reloader ---------------------------------------------------------------------------------


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.rules = tmp_path / "rules.yaml"
        self.rules.write_text(RULES)
        self.next = _settings(self.rules)
        self.metrics = Metrics()
        engine = build_engine(self.next)
        self.runtime = Runtime(self.next, self.metrics)
        self.runtime.attach(engine, None)
        self.service = ClassifierService(self.runtime)
        self.reloader = Reloader(self.runtime, load_settings=self.load)
        self.fail: LogclassError | None = None

    def load(self) -> Settings:
        if self.fail is not None:
            raise self.fail
        return self.next

    def count(self, part: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("logclass_reloads_total", {"part": part, "outcome": outcome})
        return value or 0.0

    async def label(self, message: str) -> str:
        call = dataclasses.replace(_CALL, records=[LogRecord("app", message)])
        (decision,) = await self.service.classify(call, method="t", owner=None)
        return decision.label


_CALL = ClassifyCall(records=[], ids=["0"])


def test_reloader_swaps_rules_narrowly_config_by_engine_and_refuses_restart_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = Setup(tmp_path)
        first = s.runtime.engine
        assert (await s.reloader.reload()).changed == ()
        assert await s.label("Out of memory") == "Unclassified"

        s.rules.write_text(RULES_V2)
        report = await s.reloader.reload(["rules"])
        assert report.changed == ("rules",) and report.model_version == "rules-only"
        assert s.runtime.engine is first  # the narrow swap: same engine, new regex tier
        assert await s.label("Out of memory") == "oom" and "oom" in s.service.model_info().labels
        assert s.count("rules", "ok") == 1

        s.next = _settings(s.rules, router={"tiers": ["regex"], "fallback_label": "other"})
        report = await s.reloader.reload()
        assert report.changed == ("config",)
        assert s.runtime.engine is not first and s.service.model_info().fallback_label == "other"
        assert await s.label("a line no rule knows") == "other"
        assert s.count("config", "ok") == 1

        # A restart-only field beside a live one: nothing of it applied.
        engine = s.runtime.engine
        s.next = _settings(
            s.rules, router={"tiers": ["regex"], "fallback_label": "third"}, server={"max_records_per_request": 3}
        )
        with pytest.raises(ReloadRefused, match=r"server\.max_records_per_request.*restart"):
            await s.reloader.reload()
        assert s.runtime.engine is engine and s.service.model_info().fallback_label == "other"
        assert s.count("config", "restart_required") == 1

        s.fail = config.ConfigError("router.tiers: bad")
        with pytest.raises(ReloadRefused, match="do not load"):
            await s.reloader.reload(["config"])
        assert s.count("config", "refused") == 1
        with pytest.raises(ReloadRefused, match="unknown reload parts"):
            await s.reloader.reload(["models"])

        s.fail = None
        s.next = _settings(s.rules, router={"tiers": ["regex"], "fallback_label": "other"})
        s.rules.write_text("rules:\n  - {name: broken, pattern: '(unclosed', label: x}\n")
        with pytest.raises(ReloadRefused, match="broken"):
            await s.reloader.reload(["rules"])
        assert await s.label("Out of memory") == "oom"  # the old rules serve on
        assert s.count("rules", "refused") == 1
        await s.reloader.engine.close()

    asyncio.run(scenario())


def test_cache_counters_go_on_and_the_old_engine_is_freed_across_a_swap(tmp_path: Path) -> None:
    """The new engine's router counts from zero: the Prometheus counters must not try to go back."""

    async def scenario() -> None:
        s = Setup(tmp_path)
        for _ in range(4):
            await s.label("no space left on /")
        retired = weakref.ref(s.reloader.engine)
        s.next = _settings(s.rules, router={"tiers": ["regex"], "fallback_label": "other"})
        await s.reloader.reload()
        gc.collect()
        assert retired() is None  # nothing (metrics, closures, the service) keeps the old models
        for _ in range(2):
            await s.label("no space left on /")
        hits = s.metrics.registry.get_sample_value("logclass_cache_hits_total", {"cache": "exact"})
        assert hits == 3 + 1
        await s.reloader.engine.close()

    asyncio.run(scenario())


def test_llm_tier_metrics_survive_a_second_tier_on_one_registry() -> None:
    registry = CollectorRegistry()
    prompts = seed_prompts(config.load(environ={}))

    class Backend:
        name, model, circuit = "none", "m", None

    for _ in range(2):  # a swapped-in engine's LLM tier registers again: no duplicate-name error
        LlmTier(Backend(), prompts, min_confidence=0.0, max_concurrency=1).register_metrics(registry)  # type: ignore[arg-type]
    assert registry.get_sample_value("logclass_llm_circuit_state") is None


# -- the file watch ------------------------------------------------------------------------------


def _keep_mtime(path: Path, text: str) -> None:
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_watch_sees_content_not_mtime(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    watch = FileWatch(lambda: [rules], _never, 1.0)
    assert not watch.poll()
    rules.write_text(RULES)  # touched, same content
    assert not watch.poll()
    _keep_mtime(rules, RULES_V2)  # new content, old mtime
    assert watch.poll()
    assert not watch.poll()  # seen once
    rules.unlink()
    assert watch.poll()


def test_watch_follows_a_configmap_data_swap(tmp_path: Path) -> None:
    """Kubelet's layout: conf/config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/."""
    for stamp, text in (("..2026_1", "a: 1\n"), ("..2026_2", "a: 2\n")):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "config.yaml").write_text(text)
    (tmp_path / "..data").symlink_to("..2026_1")
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    watch = FileWatch(lambda: [tmp_path / "config.yaml"], _never, 1.0)
    assert not watch.poll()
    (tmp_path / "..data_tmp").symlink_to("..2026_2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert watch.poll()


def test_watch_follows_a_flipped_bundle_link_by_manifest(tmp_path: Path) -> None:
    for name, manifest in (("b1", "{}"), ("b2", '{"v": 2}'), ("b3", '{"v": 2}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(manifest)
    link = tmp_path / "current"
    link.symlink_to("b1")
    watch = FileWatch(lambda: [link], _never, 1.0)
    assert not watch.poll()
    (tmp_path / "b1" / "other.bin").write_text("not in the fingerprint: the manifest hashes every file")
    assert not watch.poll()
    for target in ("b2", "b3"):  # b3: the same manifest in another directory is still a new bundle
        (tmp_path / "next").symlink_to(target)
        os.replace(tmp_path / "next", link)
        assert watch.poll()


async def _never() -> None:
    raise AssertionError("no reload expected")


def test_watch_step_reloads_once_per_change_and_survives_a_refusal(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    calls: list[int] = []

    async def reload() -> None:
        calls.append(1)
        raise ReloadRefused("bad rules")

    async def scenario() -> None:
        watch = FileWatch(lambda: [rules], reload, 1.0)
        assert not await watch.step()
        _keep_mtime(rules, RULES_V2)
        assert await watch.step()
        assert not await watch.step()  # refused once: not retried until the files change again
        assert calls == [1]

    asyncio.run(scenario())


# -- the relay's tagging ---------------------------------------------------------------------------


def _relay_settings(tmp_path: Path, label_key: str) -> Settings:
    return _settings(
        tmp_path / "rules.yaml",
        relay={
            "enabled": True,
            "upstreams": [{"host": "127.0.0.1", "port": 1}],
            "buffer": {"path": str(tmp_path / "buffer")},
            "output": {"label_key": label_key},
        },
    )


def test_relay_output_keys_reload_without_an_engine_and_not_within_a_request(tmp_path: Path) -> None:
    from logclass.relay.app import RelayFrontEnd
    from logclass.relay.protocol import EventBatch

    async def scenario() -> None:
        s = Setup(tmp_path)
        s.next = _relay_settings(tmp_path, "label")
        gate, entered = asyncio.Event(), asyncio.Event()
        counted = s.runtime.classify

        async def classify(records: object, budget_s: float | None, owner: object = None) -> object:
            entered.set()
            await gate.wait()
            return await counted(records, budget_s, owner)  # type: ignore[arg-type]

        front = RelayFrontEnd(s.next, classify, CollectorRegistry())  # type: ignore[arg-type]
        relay = front.relay
        s.runtime.add_front_end(front)
        s.runtime.settings = s.next  # started with this relay section
        engine = s.reloader.engine
        record: dict[str, object] = {"log": "no space left on /", "source": "app"}
        tagging = asyncio.ensure_future(relay.tagger.tag([EventBatch("t", "Message", [[0, record]], None)]))
        await entered.wait()  # the request is in the pipeline, tagged with the keys it began with
        s.next = _relay_settings(tmp_path, "class")
        report = await s.reloader.reload(["config"])
        assert report.changed == ("config",) and s.reloader.engine is engine  # no new engine for it
        gate.set()
        await tagging
        assert record.get("label") == "disk" and "class" not in record
        record2: dict[str, object] = {"log": "no space left on /", "source": "app"}
        await relay.tagger.tag([EventBatch("t", "Message", [[0, record2]], None)])
        assert record2.get("class") == "disk" and "label" not in record2
        await engine.close()

    asyncio.run(scenario())


def test_watch_sees_a_change_made_while_its_reload_ran(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    calls: list[int] = []

    async def reload() -> None:
        calls.append(1)
        if len(calls) == 1:
            _keep_mtime(rules, RULES)  # edited back while the first reload was building

    async def scenario() -> None:
        watch = FileWatch(lambda: [rules], reload, 1.0)
        _keep_mtime(rules, RULES_V2)
        assert await watch.step()
        assert await watch.step()  # the edit during the reload is a change of its own
        assert not await watch.step()
        assert calls == [1, 1]

    asyncio.run(scenario())
