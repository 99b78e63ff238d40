"""Records as Fluent Bit's kubernetes filter writes them, through the relay: the source comes from
the pod's labels (``relay.source_key``, in order, then ``relay.source``, then the tag), so
``router.source_routes`` works per app; the ``kubernetes`` maps leave the relay as they came, plus
the decision fields; pods and namespaces annotated ``logclass.io/classify: "false"`` pass through
untouched and unclassified (``relay.opt_out``).

The record shape is the filter's own test output (fluent-bit
tests/runtime/data/kubernetes/out/core/core_base-with-namespace-labels-and-annotations_fluent-bit.out):
``kubernetes`` with labels and annotations whose keys hold dots and slashes, and, with
``Namespace_Labels``/``Namespace_Annotations On``, ``kubernetes_namespace``."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml
from prometheus_client import Counter

from logclass import config
from logclass.config import ConfigError
from logclass.core.decision import Decision, LogRecord
from logclass.relay import RelayError
from logclass.relay.keypath import KeyPath
from logclass.relay.settings import resolve
from tests.conftest import NO_LLM, ROOT
from tests.relay.conftest import RelayProcess
from tests.relay.forward_peer import ForwardClient, Upstream
from tests.relay.test_relay_tagging import RelayThread

DECISION_KEYS = {"log_label", "log_label_tier", "log_label_confidence"}
TAG = "kube.var.log.containers.payments-7d9f_shop_payments-c989.log"


def pod(
    seq: int,
    *,
    labels: dict[str, str] | None = None,
    container: str | None = "payments",
    annotations: dict[str, str] | None = None,
    namespace_annotations: dict[str, str] | None = None,
    log: str = "User 7 logged in.",
) -> dict[str, Any]:
    """A record as tail (CRI parser) + the kubernetes filter write it."""
    kubernetes: dict[str, Any] = {
        "pod_name": f"pod-{seq}",
        "namespace_name": "shop",
        "pod_id": "e9f2963f-55f2-11e9-84c5-02e422b8a84a",
        "labels": {"pod-template-hash": "7d9f", **(labels or {})},
        "annotations": {"prometheus.io/path": "/api/v1/metrics/prometheus", **(annotations or {})},
        "host": "ip-10-49-18-80.eu-west-1.compute.internal",
        "docker_id": "c9898099f6d235126d564ed38a020007ea7a6fac6e25e718de683c9dd0076c16",
        "container_hash": "registry.example/payments@sha256:7ac0fd3569af866e9a6a22eb5927442",
        "container_image": "registry.example/payments:1.4.2",
    }
    if container is not None:
        kubernetes["container_name"] = container
    record: dict[str, Any] = {"log": log, "stream": "stdout", "logtag": "F", "seq": seq, "kubernetes": kubernetes}
    if namespace_annotations is not None:
        record["kubernetes_namespace"] = {
            "name": "shop",
            "labels": {"kubernetes.io/metadata.name": "shop"},
            "annotations": namespace_annotations,
        }
    return record


def without_log(record: dict[str, Any]) -> dict[str, Any]:
    del record["log"]
    return record


def counted(counter: Counter) -> float:
    return sum(s.value for s in counter.collect()[0].samples if s.name.endswith("_total"))


def recording_classifier(seen: list[LogRecord]) -> Any:
    async def classify(records: Sequence[LogRecord], budget_s: float | None, owner: object = None) -> list[Decision]:
        seen.extend(records)
        return [Decision(f"label-{r.source}", 0.5, "regex", "t", "v1") for r in records]

    return classify


@pytest.fixture
def upstream() -> Any:
    receiver = Upstream().start()
    yield receiver
    receiver.stop()


# -- settings --------------------------------------------------------------------------------


def test_the_defaults_read_the_kubernetes_filters_labels_then_the_container() -> None:
    settings = resolve(config.load(environ=NO_LLM))
    assert [k.keys for k in settings.source_keys] == [
        ("kubernetes", "labels", "app.kubernetes.io/name"),
        ("kubernetes", "labels", "app"),
        ("kubernetes", "container_name"),
    ]
    assert [(c.key.keys, c.equals) for c in settings.opt_out] == [
        (("kubernetes", "annotations", "logclass.io/classify"), "false"),
        (("kubernetes_namespace", "annotations", "logclass.io/classify"), "false"),
    ]


def test_one_source_key_string_is_a_list_of_one_and_null_or_empty_is_none() -> None:
    one = resolve(config.load(environ=NO_LLM, overrides={"relay": {"source_key": "service"}}))
    assert [k.keys for k in one.source_keys] == [("service",)]
    from_env = resolve(config.load(environ={**NO_LLM, "LOGCLASS_RELAY__SOURCE_KEY": "[a, $.b.c]"}))
    assert [k.keys for k in from_env.source_keys] == [("a",), ("b", "c")]
    for none in (None, []):
        assert resolve(config.load(environ=NO_LLM, overrides={"relay": {"source_key": none}})).source_keys == ()


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ("$.kubernetes.labels['app.kubernetes.io/name']", ("kubernetes", "labels", "app.kubernetes.io/name")),
        (
            '$["kubernetes"]["annotations"]["logclass.io/classify"]',
            ("kubernetes", "annotations", "logclass.io/classify"),
        ),
        ("$.kubernetes_namespace.annotations[ 'a/b.c' ]", ("kubernetes_namespace", "annotations", "a/b.c")),
        ("$['kubernetes'].labels.app", ("kubernetes", "labels", "app")),
        ("app.kubernetes.io/name", ("app.kubernetes.io/name",)),  # no $: one top-level key, dots and all
    ],
)
def test_key_paths_with_dots_and_slashes(spec: str, keys: tuple[str, ...]) -> None:
    path = KeyPath(spec, "relay.source_key")
    assert path.keys == keys
    record: dict[str, Any] = {}
    node = record
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = "found"
    assert path.get(record) == "found"
    assert path.get({}) is None
    if len(keys) > 1:
        assert path.get({keys[0]: "not a map"}) is None


@pytest.mark.parametrize(
    ("relay", "setting"),
    [
        ({"source_key": ["$.kubernetes.labels.app", "$.kubernetes.labels[app]"]}, "relay.source_key[1]"),
        ({"source_key": "$.kubernetes..app"}, "relay.source_key"),
        ({"opt_out": [{"key": "$.kubernetes.annotations['x", "equals": "false"}]}, "relay.opt_out[0].key"),
    ],
)
def test_a_bad_key_path_names_the_setting(relay: dict[str, Any], setting: str) -> None:
    with pytest.raises(RelayError, match="^" + re.escape(f"{setting}: cannot read")):
        resolve(config.load(environ=NO_LLM, overrides={"relay": relay}))


def test_an_opt_out_condition_needs_key_and_equals() -> None:
    with pytest.raises(ConfigError, match=re.escape("relay.opt_out.0: 'equals' is a required property")):
        config.load(environ=NO_LLM, overrides={"relay": {"opt_out": [{"key": "$.kubernetes.annotations.x"}]}})


def test_logclass_relay_refuses_a_bad_key_path_at_start(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    relay = {"upstreams": [{"host": "127.0.0.1", "port": 24224}], "source_key": ["$.kubernetes.labels[app]"]}
    path.write_text(yaml.safe_dump({"relay": relay}))
    done = subprocess.run(
        [sys.executable, "-m", "logclass.cli", "relay", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "logclass relay: error: relay.source_key[0]: cannot read '$.kubernetes.labels[app]'" in done.stderr


@pytest.mark.parametrize(
    ("value", "opted_out"),
    [("false", True), ("False", True), (" FALSE ", True), (False, True), (b"false", True), ("true", False),
     ("no", False), ("", False), (None, False), ({"nested": "false"}, False)],
)  # fmt: skip
def test_opt_out_compares_as_text_ignoring_case(value: object, opted_out: bool) -> None:
    (condition, _) = resolve(config.load(environ=NO_LLM)).opt_out
    annotations = {} if value is None else {"logclass.io/classify": value}
    assert condition.matches({"kubernetes": {"annotations": annotations}}) is opted_out


# -- through the relay -----------------------------------------------------------------------


def test_kubernetes_records_keep_their_metadata_and_get_a_source_per_app(tmp_path: Path, upstream: Upstream) -> None:
    seen: list[LogRecord] = []
    sent = [
        pod(0, labels={"app.kubernetes.io/name": "payments", "app": "pay-legacy"}),  # the recommended label wins
        pod(1, labels={"app": "checkout"}, container="checkout-main"),  # then `app`
        pod(2, container="cart"),  # then the container name
        pod(3, labels={"app.kubernetes.io/name": "", "app": "search"}),  # empty strings do not count
        {"log": "User 7 logged in.", "seq": 4, "source": "ignored: not a source key by default"},  # the tag
        pod(5, labels={"app.kubernetes.io/name": "payments"}, namespace_annotations={"other.io/x": "y"}),
    ]
    with RelayThread(tmp_path, upstream.port, recording_classifier(seen)) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.forward(TAG, copy.deepcopy(sent)))
        assert upstream.wait_for_all(range(len(sent)))
    assert [r.source for r in seen] == ["payments", "checkout", "cart", "search", TAG, "payments"]
    got = {e.record["seq"]: e.record for e in upstream.events}
    for record in sent:
        out = got[record["seq"]]
        assert set(out) - set(record) == DECISION_KEYS
        assert {k: out[k] for k in record} == record
        for meta in ("kubernetes", "kubernetes_namespace"):
            if meta in record:  # the same bytes on the wire as the filter produced
                assert msgpack.packb(out[meta]) == msgpack.packb(record[meta])
    assert got[1]["log_label"] == "label-checkout" and got[1]["log_label_tier"] == "regex"
    assert got[1]["log_label_confidence"] == 0.5


def test_the_fixed_source_comes_before_the_tag(tmp_path: Path, upstream: Upstream) -> None:
    seen: list[LogRecord] = []
    with RelayThread(tmp_path, upstream.port, recording_classifier(seen), {"source": "node-logs"}) as relay:
        with ForwardClient(relay.port) as client:
            records = [pod(0, labels={"app": "checkout"}), {"log": "User 7 logged in.", "seq": 1}]
            assert client.wait_ack(client.forward(TAG, records))
        assert upstream.wait_for_all([0, 1])
    assert [r.source for r in seen] == ["checkout", "node-logs"]


def test_opted_out_pods_and_namespaces_pass_untouched_and_unclassified(tmp_path: Path, upstream: Upstream) -> None:
    seen: list[LogRecord] = []
    skipped = [
        pod(0, annotations={"logclass.io/classify": "false"}),
        without_log(pod(1, annotations={"logclass.io/classify": "False"})),  # not a missing_message fallback
        pod(2, namespace_annotations={"logclass.io/classify": "false"}),
        pod(3, annotations={"logclass.io/classify": "true"}, namespace_annotations={"logclass.io/classify": "FALSE"}),
    ]
    classified = [
        pod(4, annotations={"logclass.io/classify": "true"}),
        pod(5, namespace_annotations={"logclass.io/classify": "true"}),
        pod(6, annotations={"logclass.io/classify-other": "false"}),
    ]
    sent = skipped + classified
    with RelayThread(tmp_path, upstream.port, recording_classifier(seen), {"tag_missing_message": True}) as relay:
        with ForwardClient(relay.port) as client:
            assert client.wait_ack(client.packed(TAG, copy.deepcopy(sent)))
        assert upstream.wait_for_all(range(len(sent)))
        assert relay.relay is not None
        assert counted(relay.relay.metrics.skipped_records) == len(skipped)
    assert len(seen) == len(classified)  # the pipeline was asked about the others only
    got = {e.record["seq"]: e.record for e in upstream.events}
    for record in skipped:
        assert got[record["seq"]] == record
        assert msgpack.packb(got[record["seq"]]) == msgpack.packb(record)
    for record in classified:
        assert set(got[record["seq"]]) - set(record) == DECISION_KEYS


def test_source_routes_route_each_app_through_logclass_relay(tmp_path: Path, upstream: Upstream) -> None:
    """The real `logclass relay`, its real engine: router.source_routes sends the payments app to
    the memory tier (which does not know this line: tier none), while the same line from the web
    app is decided by the regex tier; an opted-out pod is counted and left alone."""
    process = RelayProcess(tmp_path, [upstream.port])
    process.config["router"] = {"tiers": ["regex", "memory"], "source_routes": {"payments": "memory"}}
    process.config_path.write_text(yaml.safe_dump(process.config))
    process.start()
    try:
        sent = [
            pod(0, labels={"app.kubernetes.io/name": "payments"}),
            pod(1, labels={"app.kubernetes.io/name": "web"}, container="web"),
            pod(2, labels={"app.kubernetes.io/name": "payments"}, annotations={"logclass.io/classify": "false"}),
        ]
        with ForwardClient(process.port) as client:
            assert client.wait_ack(client.packed(TAG, copy.deepcopy(sent)), timeout=20)
        assert upstream.wait_for_all([0, 1, 2])
        metrics = process.metrics()
    finally:
        process.stop()
    got = {e.record["seq"]: e.record for e in upstream.events}
    assert (got[0]["log_label_tier"], got[0]["log_label"]) == ("none", "Unclassified")
    assert (got[1]["log_label_tier"], got[1]["log_label"]) == ("regex", "User Action")
    assert got[2] == sent[2]
    assert metrics["logclass_relay_skipped_records_total"] == 1
    assert metrics['logclass_relay_records_in_total{mode="packed_forward"}'] == 3
