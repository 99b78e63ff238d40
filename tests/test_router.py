from __future__ import annotations

from collections.abc import Sequence

import pytest

from logclass import config
from logclass.core.bundle import ModelBundle
from logclass.core.decision import Item, LogRecord, Outcome, Verdict
from logclass.core.labelset import LabelSet
from logclass.engine.blocking import BlockingEngine as Router
from logclass.engine.pipeline import build_engine
from logclass.tiers.base import Tier
from logclass.tiers.embedding import EmbeddingTier
from logclass.tiers.llm import LlmConfigError, build_backend, build_llm_tier, choose_backend
from logclass.tiers.regex import RegexTier, parse_rules
from tests.conftest import NO_LLM, MemoEncoder, offline_engine


def _records(*pairs: tuple[str, str]) -> list[LogRecord]:
    return [LogRecord(s, m) for s, m in pairs]


def test_seed_examples_end_to_end(router: Router) -> None:
    decisions = router.classify(
        _records(
            ("ModernCRM", "IP 192.168.133.114 blocked due to potential attack"),
            ("BillingSystem", "User 12345 logged in."),
            ("AnalyticsEngine", "Backup completed successfully."),
            ("ModernHR", "Admin access escalation detected for user 9429"),
            ("ModernCRM", "Email service experiencing issues with sending"),
            ("LegacyCRM", "Case escalation for ticket ID 7324 failed because the agent is no longer active."),
            ("ModernCRM", "Repeated sign-in failures recorded for account 5"),
            ("ModernCRM", "Something odd happened near the coffee machine"),
        )
    )
    got = [(d.label, d.tier) for d in decisions]
    assert got == [
        # Templates of the training data: the memory answers from their rows' labels.
        ("Security Alert", "memory"),
        ("User Action", "regex"),
        ("System Notification", "regex"),
        ("Security Alert", "memory"),
        ("Critical Error", "memory"),
        # LegacyCRM goes straight to the LLM tier, which is absent: fallback, tier none.
        ("Unclassified", "none"),
        # A new template near the training data: the head.
        ("Security Alert", "embedding"),
        # Unlike anything in training: out of distribution, and no LLM to ask.
        ("Unclassified", "none"),
    ]
    # One training row of that template: Laplace's (1 + 1) / (1 + 2).
    assert decisions[4].confidence == pytest.approx(0.6667) and decisions[4].detail == "1/1 training rows"
    for d in decisions:
        assert d.model_version == router.model_version and len(d.template_id) == 16
    assert decisions[1].detail == "user-session"


def test_duplicate_templates_in_a_batch_are_decided_once(router: Router) -> None:
    batch = [LogRecord("ModernCRM", f"Repeated sign-in failures recorded for account {n}") for n in range(50)]
    decisions = router.classify(batch)
    assert len({id(d) for d in decisions}) == 1 and decisions[0].label == "Security Alert"
    assert router.stats.tier_calls["embedding"] == 1  # one representative for 50 records
    # Next batch: same template, new numbers -> template cache; same messages -> exact cache.
    router.classify([LogRecord("ModernCRM", "Repeated sign-in failures recorded for account 999")])
    router.classify(batch[:10])
    assert router.stats.tier_calls["embedding"] == 1
    assert router.stats.template_hits == 49 + 1 and router.stats.exact_hits == 10
    assert router.stats.cache_hit_ratio == pytest.approx(60 / 61)


def test_template_cache_is_per_source(router: Router) -> None:
    router.classify(_records(("A", "Disk usage at 91 percent"), ("B", "Disk usage at 92 percent")))
    assert router.stats.tier_calls["embedding"] == 2


def test_regex_runs_before_the_template_cache(cfg: config.Settings, bundle: ModelBundle, encoder: MemoEncoder) -> None:
    # "status 200" and "status 503" share a template; a rule must still tell them apart.
    rules = {"rules": [{"name": "5xx", "pattern": r"status 5\d\d", "label": "Server Error"}]}
    router = offline_engine(cfg, bundle=bundle, encoder=encoder)
    router.engine.router.fast_tiers = [(0, RegexTier(parse_rules(rules)))]
    first, second = router.classify(_records(("web", "GET /a status 200 in 3ms"), ("web", "GET /a status 503 in 3ms")))
    assert second.label == "Server Error" and second.tier == "regex"
    assert first.tier != "regex"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("", "empty_message"),
        ("   \t", "empty_message"),
        ("bad \udcff byte", "invalid_utf8"),
        ("x" * 70_000, "message_too_long"),
    ],
)
def test_bad_records_get_an_error_and_do_not_fail_the_batch(router: Router, message: str, error: str) -> None:
    decisions = router.classify(_records(("s", message), ("ModernCRM", "Backup completed successfully.")))
    assert decisions[0].error == error and decisions[0].label == "Unclassified" and decisions[0].tier == "none"
    assert decisions[1].label == "System Notification" and not decisions[1].error
    assert router.stats.errors[error] == 1


MAX_SOURCE = 1024  # limits.max_source_bytes's default


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("s" * MAX_SOURCE, ""),
        ("s" * (MAX_SOURCE + 1), "source_too_long"),
        ("é" * (MAX_SOURCE // 2), ""),  # 1024 bytes in 512 characters
        ("é" * (MAX_SOURCE // 2 + 1), "source_too_long"),  # 1026 bytes in 513 characters
        ("\udcff" * 400, "source_too_long"),  # undecodable bytes the relay kept: 3 bytes each
        ("s" * (4 << 20), "source_too_long"),
    ],
    ids=["at-limit", "one-over", "multibyte-at-limit", "multibyte-over", "surrogates", "4MiB"],
)
def test_a_source_over_its_limit_gets_an_error_and_stays_out_of_the_caches(
    router: Router, source: str, error: str
) -> None:
    """The source is a key of both caches and of learnt lessons: unbounded, a few records with a
    rule-matched message and a huge source would pin megabytes each in the caches for ever."""
    engine = router.engine.router
    message = "User User123 logged in."  # a regex rule: decided and cached on the fast lane
    before = len(engine.exact_cache), len(engine.template_cache)
    (decision,) = router.classify(_records((source, message)))
    assert decision.error == error
    if error:
        assert decision.label == "Unclassified" and decision.tier == "none"
        assert (len(engine.exact_cache), len(engine.template_cache)) == before
        assert engine.template_of(LogRecord(source, message)) is None, "nothing to learn from it either"
    else:
        assert decision.tier == "regex" and len(engine.exact_cache) == before[0] + 1


def test_low_confidence_escalates_to_fallback(cfg: config.Settings, bundle: ModelBundle, encoder: MemoEncoder) -> None:
    strict = config.load(
        environ={
            **NO_LLM,
            "LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "0.999999",
            "LOGCLASS_ROUTER__FALLBACK_LABEL": "review",
        }
    )
    router = offline_engine(strict, bundle=bundle, encoder=encoder)
    decision = router.classify(_records(("x", "Something odd happened near the coffee machine")))[0]
    assert (decision.label, decision.tier, decision.confidence) == ("review", "none", 0.0)


def test_per_label_thresholds_are_validated(bundle: ModelBundle, encoder: MemoEncoder) -> None:
    with pytest.raises(config.ConfigError, match="labels the model does not have"):
        EmbeddingTier(bundle, encoder, 0.5, {"No Such Label": 0.9}, out_of_distribution=True)


class _FixedTier(Tier):
    """A stand-in LLM: the tier contract is the extension point under test, not a model."""

    name = "llm"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def decide(self, items: Sequence[Item]) -> list[Outcome]:
        self.seen.extend(item.record.message for item in items)
        return [Verdict("Workflow Error", 0.9) for _ in items]

    def labels(self) -> list[str]:
        return ["Workflow Error"]


def test_llm_hook_receives_escalations_and_routed_sources(
    cfg: config.Settings, bundle: ModelBundle, encoder: MemoEncoder
) -> None:
    llm = _FixedTier()
    strict = config.load(environ={**NO_LLM, "LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "0.999999"})
    router = Router(build_engine(strict, bundle=bundle, encoder=encoder, tiers={"llm": llm}))
    out = router.classify(
        _records(
            ("LegacyCRM", "Lead conversion failed for prospect ID 7842"),
            ("LegacyCRM", "User 1 logged in."),  # routed past regex too
            ("App", "Something odd happened near the coffee machine"),  # escalates
        )
    )
    assert [d.tier for d in out] == ["llm", "llm", "llm"]
    assert len(llm.seen) == 3
    assert "Workflow Error" in router.engine.labels()
    router.close()


def test_llm_backend_none_is_absent_and_unknown_is_an_error(cfg: config.Settings) -> None:
    assert cfg.llm.backend == "none" and build_llm_tier(cfg, LabelSet(("a",))) is None
    with pytest.raises(
        config.ConfigError, match=r"llm.backend: 'gpt' is not one of \['auto', 'none', 'vllm', 'llamacpp'\]"
    ):
        config.load(environ={"LOGCLASS_LLM__BACKEND": "gpt"})
    served = config.load(environ={"LOGCLASS_LLM__BACKEND": "auto", "LOGCLASS_LLM__SERVER__URL": "http://vllm:8000/v1"})
    assert choose_backend(served.llm) == "vllm"
    with pytest.raises(LlmConfigError, match=r"llm.server.url is not set"):
        build_backend("vllm", cfg.llm)


def test_cache_eviction(cfg: config.Settings, bundle: ModelBundle, encoder: MemoEncoder) -> None:
    small = config.load(
        environ={**NO_LLM, "LOGCLASS_TEMPLATES__CACHE_SIZE": "2", "LOGCLASS_TEMPLATES__EXACT_CACHE_SIZE": "0"}
    )
    router = offline_engine(small, bundle=bundle, encoder=encoder)
    msgs = ["Disk usage at 1 percent", "CPU load high", "Memory pressure rising"]
    router.classify(_records(*[("s", m) for m in msgs]))
    cache = router.engine.router.template_cache
    assert len(cache) == 2 and cache.stats.evictions == 1
    router.classify(_records(("s", msgs[0])))  # evicted: decided again
    assert router.stats.tier_calls["embedding"] == 4


def test_out_of_distribution_lines_escalate_instead_of_a_confident_guess(
    bundle: ModelBundle, encoder: MemoEncoder
) -> None:
    odd = _records(("x", "Something odd happened near the coffee machine"))
    for ood, tier in (("true", "none"), ("false", "embedding")):
        env = {"LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "0", "LOGCLASS_EMBEDDING__OUT_OF_DISTRIBUTION": ood}
        lenient = config.load(environ={**NO_LLM, **env})
        router = offline_engine(lenient, bundle=bundle, encoder=encoder)
        try:
            assert router.classify(odd)[0].tier == tier
        finally:
            router.close()


def test_the_llm_answers_within_the_bundle_label_set_and_config_overrides_it(bundle: ModelBundle) -> None:
    from logclass.engine.pipeline import source_routes
    from logclass.tiers.registry import label_set

    cfg = config.load(environ=NO_LLM)
    labels = label_set(cfg, bundle)
    assert labels.labels == bundle.label_set.labels and "Workflow Error" in labels.labels
    assert labels.description("Workflow Error") == bundle.label_set.description("Workflow Error") != ""
    assert source_routes(cfg, bundle) == {"LegacyCRM": "llm"}
    custom = config.load(
        environ={
            **NO_LLM,
            "LOGCLASS_LLM__LABELS": '{"Billing": "invoices and payments", "Error": "any fault"}',
            "LOGCLASS_LLM__EXAMPLES": "[]",
            "LOGCLASS_ROUTER__SOURCE_ROUTES": "{}",
        }
    )
    overridden = label_set(custom, bundle)
    assert overridden.labels == (*bundle.label_set.labels, "Billing")
    assert overridden.description("Error") == "any fault" and overridden.examples == ()
    assert source_routes(custom, bundle) == {}
    # A bundle's route to a tier the config leaves out is dropped, not an error.
    no_llm_tier = config.load(environ={**NO_LLM, "LOGCLASS_ROUTER__TIERS": "[regex, memory, embedding]"})
    assert source_routes(no_llm_tier, bundle) == {}
