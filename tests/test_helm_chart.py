"""The Helm chart deploy/helm/logclass, rendered offline with helm-python-sdk (Helm's Go SDK, no
cluster, no helm binary): lint, every mode with default and non-default values, the objects it
renders checked against the sidecar's own config loader (under the image's environment), proto and
the repo's Fluent Bit config."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python  # helm-python-sdk, in the dev extra: a missing SDK fails, it does not skip
import kubernetes_validate  # in the dev extra, with the Kubernetes OpenAPI schemas inside: offline
import pytest
import yaml

from logclass import config as config_mod
from logclass.config.settings import UpstreamSettings, parse
from logclass.tiers.regex import load_rules
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "logclass"
# The node side of deploy/fluent-bit/ (tail -> relay): what the daemonset runs.
FLUENT_BIT_DIR = ROOT / "deploy" / "fluent-bit" / "agent"
RELEASE, NAMESPACE = "rel", "obs"
FULLNAME = f"{RELEASE}-logclass"
# Cluster-scoped objects carry the namespace in their name.
CLUSTER_NAME = f"{NAMESPACE}-{FULLNAME}"
UPSTREAMS = [{"host": "aggregator.logging.svc", "port": 24224}]
DAEMONSET = {"mode": "daemonset", "daemonset": {"relay": {"upstreams": UPSTREAMS}}}
VLLM = {"vllm": {"enabled": True, "model": {"pvc": {"claimName": "llm-weights"}}}}
DASHBOARD = ROOT / "deploy" / "grafana" / "logclass.json"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
GRAFANA = {"grafanaDashboard": {"enabled": True}}
TLS = {"tls": {"enabled": True, "existingSecret": "logclass-tls"}}
MTLS = {"tls": {"enabled": True, "existingSecret": "logclass-tls", "clientAuth": True}}
# Helm drops a key set to null, so the chart sees no ports.http at all.
HTTP_OFF = {"ports": {"http": None}}
# The chart's own Valkey (store.enabled): one StatefulSet, its Services, Secret and NetworkPolicy.
STORE = {"store": {"enabled": True}}
STORE_NAME = f"{FULLNAME}-store"
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
# The OTLP front end (otlp.enabled) with its one required value.
OTLP = {"otlp": {"enabled": True, "upstream": {"endpoint": "http://otel-collector.observability.svc:4317"}}}
OTLP_BUFFER = "/var/lib/logclass/otlp"

Obj = dict[str, Any]


def _proto_service() -> str:
    text = (ROOT / "proto" / "logclass" / "v1" / "classifier.proto").read_text(encoding="utf-8")
    package = re.search(r"^package\s+([\w.]+);", text, re.M)
    service = re.search(r"^service\s+(\w+)", text, re.M)
    assert package and service
    return f"{package.group(1)}.{service.group(1)}"


GRPC_SERVICE = _proto_service()


def _image_env() -> dict[str, str]:
    """The LOGCLASS_* environment of the image's runtime stage: what the pod's env goes on top of."""
    runtime = DOCKERFILE.read_text(encoding="utf-8").partition(" AS runtime")[2]
    code = "\n".join(line for line in runtime.splitlines() if not line.lstrip().startswith("#"))
    return dict(re.findall(r"\b(LOGCLASS_\w+)=(\S+)", code))


IMAGE_ENV = _image_env()


def _merge(base: Obj, override: Obj) -> Obj:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def chart() -> Any:
    return helm_python.Chart.load(str(CHART))


class Rendered:
    """A release's objects, parsed."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[Obj] = [
            doc
            for path, text in manifests.items()
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    def kinds(self) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in self.objects)

    def get(self, kind: str, name: str = FULLNAME) -> Obj:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name} not rendered once; got {self.kinds()}"
        return found[0]

    def has(self, kind: str, name: str = FULLNAME) -> bool:
        return any(o["kind"] == kind and o["metadata"]["name"] == name for o in self.objects)

    def workloads(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in WORKLOADS]

    def sidecar_workload(self) -> Obj:
        (found,) = [w for w in self.workloads() if w["metadata"]["name"] == FULLNAME]
        return found

    def container(self, name: str = "logclass", workload: Obj | None = None) -> Obj:
        pod = (workload or self.sidecar_workload())["spec"]["template"]["spec"]
        (found,) = [c for c in pod["containers"] if c["name"] == name]
        return dict(found)

    def config_map(self) -> dict[str, str]:
        data: dict[str, str] = self.get("ConfigMap")["data"]
        return data


def render(chart: Any, values: Obj | None = None) -> Rendered:
    return Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE))


def env_of(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def mounts_of(container: Obj) -> dict[str, Obj]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volumes_of(workload: Obj) -> dict[str, Obj]:
    return {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}


def configmap_file(release: Rendered, path: str) -> str:
    """The text the logclass container reads at ``path``: the key of the ConfigMap's directory
    mount that ``path`` names. A subPath mount fails here: kubelet never refreshes one."""
    container = release.container()
    folder, _, key = path.rpartition("/")
    mount = mounts_of(container)[folder]
    assert mount["name"] == "config" and "subPath" not in mount, mount
    assert volumes_of(release.sidecar_workload())["config"]["configMap"]["name"] == FULLNAME
    return release.config_map()[key]


def effective_config(release: Rendered, tmp_path: Path) -> config_mod.Settings:
    """What the sidecar in the pod would run on: the ConfigMap's config.yaml at LOGCLASS_CONFIG,
    the image's LOGCLASS_* env on top and the container's over that (Kubernetes replaces an image
    variable of the same name), loaded and validated by the sidecar's own loader."""
    env = env_of(release.container())
    path = tmp_path / "config.yaml"
    path.write_text(configmap_file(release, env["LOGCLASS_CONFIG"]), encoding="utf-8")
    pod_env = IMAGE_ENV | {k: v for k, v in env.items() if k.startswith("LOGCLASS_")}
    return config_mod.load(path, environ=pod_env)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# --- lint -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        DAEMONSET,
        VLLM,
        GRAFANA,
        HTTP_OFF,
        TLS,
        _merge(DAEMONSET, MTLS),
        {"adminAuth": {"enabled": True, "token": "adm1n-token-0123456789"}},
        STORE,
        _merge(DAEMONSET, STORE),
        {"store": {"url": "rediss://cache.example.com:6380/0", "existingSecret": "cache-auth"}},
    ],
    ids=[
        "service",
        "daemonset",
        "vllm",
        "grafana",
        "http off",
        "tls",
        "daemonset, mtls",
        "admin auth",
        "store",
        "daemonset, store",
        "external store",
    ],
)
def test_lint_is_clean(values: Obj) -> None:
    report = helm_python.lint(str(CHART), values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# --- kinds per mode -------------------------------------------------------------------------------

SA = {"ServiceAccount"}
RBAC = {"ClusterRole", "ClusterRoleBinding"}
RBAC_OFF = {"rbac": {"create": False}}
EXISTING_SA = {"serviceAccount": {"create": False, "name": "logging-agent"}, "rbac": {"create": False}}
NP = {"NetworkPolicy"}
MODES: dict[str, tuple[Obj, set[str]]] = {
    # The NetworkPolicy is on by default (issue 28: safe defaults).
    "service": ({}, {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} | SA | NP),
    "daemonset": (DAEMONSET, {"ConfigMap", "DaemonSet"} | SA | RBAC | NP),
    "service+vllm": (
        VLLM,
        {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} | SA | NP,
    ),
    "daemonset+vllm": (_merge(DAEMONSET, VLLM), {"ConfigMap", "DaemonSet"} | SA | RBAC | NP),
    "service, all options": (
        {
            "service": {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}, "replicas": 3},
            "networkPolicy": {"enabled": True},
            "metrics": {"serviceMonitor": {"enabled": True}},
            "auth": {"enabled": True, "token": "0123456789abcdef0123"},
        },
        {"ConfigMap", "Deployment", "Service", "NetworkPolicy", "ServiceMonitor", "Secret"} | SA,
    ),
    "daemonset, all options": (
        _merge(DAEMONSET, {"networkPolicy": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}}),
        {"ConfigMap", "DaemonSet", "NetworkPolicy", "PodMonitor"} | SA | RBAC,
    ),
    "daemonset, rbac off": (_merge(DAEMONSET, RBAC_OFF), {"ConfigMap", "DaemonSet"} | SA | NP),
    "daemonset, existing service account": (_merge(DAEMONSET, EXISTING_SA), {"ConfigMap", "DaemonSet"} | NP),
    # The store's own objects are named RELEASE-logclass-store*: checked in the shared store tests.
    "service+store, 3 replicas": (
        _merge(STORE, {"service": {"autoscaling": {"enabled": False}, "replicas": 3}}),
        {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} | SA | NP,
    ),
    "daemonset+store": (_merge(DAEMONSET, STORE), {"ConfigMap", "DaemonSet"} | SA | RBAC | NP),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_renders_its_kinds(chart: Any, mode: str) -> None:
    values, expected = MODES[mode]
    release = render(chart, values)
    own = {kind for kind, name in release.kinds() if name in (FULLNAME, f"{FULLNAME}-auth", CLUSTER_NAME)}
    assert own == expected
    vllm = {kind for kind, name in release.kinds() if name == f"{FULLNAME}-vllm"}
    if values.get("vllm", {}).get("enabled"):
        assert {"Deployment", "Service"} <= vllm
    else:
        assert vllm == set()
    for obj in release.objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_replicas_belong_to_the_hpa_unless_autoscaling_is_off(chart: Any) -> None:
    release = render(chart)
    hpa = release.get("HorizontalPodAutoscaler")
    assert "replicas" not in release.get("Deployment")["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    fixed = render(chart, {"service": {"autoscaling": {"enabled": False}, "replicas": 4}})
    assert fixed.get("Deployment")["spec"]["replicas"] == 4


def test_selectors_match_pod_labels(chart: Any) -> None:
    for values in (_merge({}, VLLM), _merge(DAEMONSET, VLLM)):
        release = render(chart, values)
        for workload in release.workloads():
            pod_labels = workload["spec"]["template"]["metadata"]["labels"]
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_labels.items()
        for svc in (o for o in release.objects if o["kind"] == "Service"):
            targets = [w for w in release.workloads() if w["metadata"]["name"] == svc["metadata"]["name"]]
            assert len(targets) == 1
            assert svc["spec"]["selector"].items() <= targets[0]["spec"]["template"]["metadata"]["labels"].items()
        if release.has("PodDisruptionBudget"):
            pdb_selector = release.get("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
            assert pdb_selector == release.get("Deployment")["spec"]["selector"]["matchLabels"]


# --- the sidecar's config, ports and probes -------------------------------------------------------


@pytest.mark.parametrize("mode", ["service", "daemonset", "service+vllm"])
def test_configmap_is_a_valid_logclass_config_and_ports_match(chart: Any, tmp_path: Path, mode: str) -> None:
    values, _ = MODES[mode]
    release = render(chart, values)
    cfg = effective_config(release, tmp_path)
    container = release.container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_of(cfg.server.metrics_listen) == ports["metrics"] == 9464
    assert cfg.server.metrics_listen.startswith("0.0.0.0:"), "Prometheus scrapes the pod IP"
    if mode == "daemonset":
        # Only the pod itself calls the API (Fluent Bit -> relay on loopback): probes run inside.
        assert cfg.server.listen == "127.0.0.1:50051" and cfg.server.http_listen == "127.0.0.1:8000"
        assert "grpc" not in ports and "http" not in ports, "no container port for a loopback listener"
    else:
        assert port_of(cfg.server.listen) == ports["grpc"] == 50051
        assert cfg.server.listen.startswith("0.0.0.0:"), "kubelet probes reach the pod IP, not loopback"
        assert port_of(cfg.server.http_listen) == ports["http"] == 8000
        assert cfg.server.http_listen.startswith("0.0.0.0:"), "kubelet probes reach the pod IP, not loopback"
    annotations = release.sidecar_workload()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert cfg.model.bundle == "/opt/logclass/models/default"
    assert cfg.llm.backend == ("vllm" if "vllm" in mode else "none")
    if mode == "service":
        svc = release.get("Service")
        by_name = {p["name"]: p for p in svc["spec"]["ports"]}
        assert by_name["grpc"]["port"] == 50051 and by_name["grpc"]["targetPort"] == "grpc"
        assert by_name["metrics"]["targetPort"] == "metrics"
        assert (by_name["http"]["port"], by_name["http"]["targetPort"]) == (8000, "http")
        assert by_name["http"]["appProtocol"] == "http"
        assert cfg.relay.enabled is False
    if mode == "daemonset":
        assert cfg.relay.enabled is True
        assert cfg.relay.listen == "127.0.0.1:24224"
        assert cfg.relay.upstreams == tuple(parse(UpstreamSettings, u) for u in UPSTREAMS)
        buffer = mounts_of(container)[cfg.relay.buffer.path]
        host_path = volumes_of(release.sidecar_workload())[buffer["name"]]["hostPath"]
        assert host_path["path"] == f"/var/lib/logclass/relay/{RELEASE}", "one buffer per relay, outliving the pod"


def test_non_default_ports_and_values_reach_the_config(chart: Any, tmp_path: Path) -> None:
    values = {
        "ports": {"grpc": 7000, "metrics": 7001, "forward": 7002, "http": 7003},
        "service": {"port": 443},
        "config": {
            "embedding": {"min_confidence": 0.7, "label_min_confidence": {"Security Alert": 0.9}},
            "router": {"fallback_label": "unknown", "source_routes": {}},
            "llm": {"labels": {"Billing": "invoices and payments"}},
        },
    }
    release = render(chart, values)
    cfg = effective_config(release, tmp_path)
    assert port_of(cfg.server.listen) == 7000
    assert port_of(cfg.server.metrics_listen) == 7001
    assert port_of(cfg.server.http_listen) == 7003
    assert cfg.embedding.min_confidence == 0.7
    assert cfg.embedding.label_min_confidence == {"Security Alert": 0.9}
    assert cfg.router.fallback_label == "unknown"
    assert cfg.router.source_routes == {}
    # The label descriptions default to the bundle's (null); given, they override it per label.
    assert cfg.llm.labels == {"Billing": "invoices and payments"}
    container_ports = {p["name"]: p["containerPort"] for p in release.container()["ports"]}
    assert container_ports[release.container()["readinessProbe"]["httpGet"]["port"]] == 7003
    assert (
        render(chart, _merge(values, {"probes": {"kind": "grpc"}})).container()["readinessProbe"]["grpc"]["port"]
        == 7000
    )
    service_ports = {p["name"]: p for p in release.get("Service")["spec"]["ports"]}
    assert (service_ports["grpc"]["port"], service_ports["grpc"]["targetPort"]) == (443, "grpc")
    assert (service_ports["http"]["port"], service_ports["http"]["targetPort"]) == (7003, "http")
    daemon = render(chart, _merge(DAEMONSET, {"ports": {"forward": 7002}}))
    assert effective_config(daemon, tmp_path).relay.listen == "127.0.0.1:7002"
    assert fluent_bit_sections(daemon.config_map()["fluent-bit.conf"])[("OUTPUT", "forward")]["port"] == "7002"


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_http_off_renders_nothing_http_and_turns_the_image_listener_off(chart: Any, tmp_path: Path, base: Obj) -> None:
    assert port_of(IMAGE_ENV["LOGCLASS_SERVER__HTTP_LISTEN"]) == 8000, "the image listens on HTTP"
    values = _merge(base, _merge(HTTP_OFF, {"networkPolicy": {"enabled": True}}))
    release = render(chart, values)
    assert effective_config(release, tmp_path).server.http_listen is None
    container = release.container()
    assert "http" not in {p["name"] for p in container["ports"]}
    assert not any("httpGet" in container[probe] for probe in PROBES)
    if release.has("Service"):
        assert "http" not in {p["name"] for p in release.get("Service")["spec"]["ports"]}
    rules = release.get("NetworkPolicy")["spec"]["ingress"]
    expected = {9464} | ({50051} if release.has("Service") else set())
    assert {port["port"] for rule in rules for port in rule["ports"]} == expected
    assert "console" not in release.notes
    on = render(chart, _merge(base, {"networkPolicy": {"enabled": True}, "daemonset": {"apiListen": "all"}}))
    assert "http" in {p["name"] for p in on.container()["ports"]} and "console" in on.notes


def test_rules_from_values_are_a_loadable_rules_file(chart: Any, tmp_path: Path) -> None:
    rules = [
        {"name": "billing", "pattern": r"invoice \d+ paid", "label": "Billing", "ignore_case": True},
        {"pattern": r"^GET \S+ HTTP", "label": "HTTP Status", "sources": ["nginx"]},
    ]
    release = render(chart, {"rules": rules})
    cfg = effective_config(release, tmp_path)
    assert cfg.regex.rules_file is not None
    text = configmap_file(release, cfg.regex.rules_file)
    assert yaml.safe_load(text) == {"rules": rules}
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(text, encoding="utf-8")
    loaded = load_rules(rules_file)
    assert [r.label for r in loaded] == ["Billing", "HTTP Status"]
    assert "rules.yaml" not in render(chart).config_map()


# --- applying ConfigMap changes: the sidecar's file watch, or a rolling restart ---------------------

RESTART = {"reload": {"mode": "restart"}}
RULES = [{"name": "billing", "pattern": r"invoice \d+ paid", "label": "Billing"}]


def pod_template(release: Rendered) -> Obj:
    template: Obj = release.sidecar_workload()["spec"]["template"]
    return template


def annotations_of(release: Rendered) -> dict[str, str]:
    annotations: dict[str, str] = pod_template(release)["metadata"]["annotations"]
    return annotations


@pytest.mark.parametrize("reload_mode", [{}, RESTART], ids=["watch", "restart"])
@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_config_and_rules_are_a_directory_mount_kubelet_refreshes(
    chart: Any, tmp_path: Path, base: Obj, reload_mode: Obj
) -> None:
    release = render(chart, _merge(_merge(base, reload_mode), {"rules": RULES}))
    cfg = effective_config(release, tmp_path)
    assert cfg.regex.rules_file is not None
    config_mounts = [m for m in release.container()["volumeMounts"] if m["name"] == "config"]
    assert config_mounts == [{"name": "config", "mountPath": "/etc/logclass/conf", "readOnly": True}]
    for path in (env_of(release.container())["LOGCLASS_CONFIG"], cfg.regex.rules_file):
        assert path.rpartition("/")[0] == config_mounts[0]["mountPath"], path
    assert yaml.safe_load(configmap_file(release, cfg.regex.rules_file)) == {"rules": RULES}


def test_configmap_file_refuses_a_subpath_mount(chart: Any) -> None:
    release = render(chart)
    (workload,) = release.workloads()
    container = workload["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"] = [
        {"name": "config", "mountPath": "/etc/logclass/conf/config.yaml", "subPath": "config.yaml", "readOnly": True}
    ]
    with pytest.raises(KeyError, match="/etc/logclass/conf"):
        configmap_file(release, "/etc/logclass/conf/config.yaml")
    container["volumeMounts"] = [{"name": "config", "mountPath": "/etc/logclass/conf", "subPath": "conf"}]
    with pytest.raises(AssertionError):
        configmap_file(release, "/etc/logclass/conf/config.yaml")


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_watch_interval_in_the_rendered_config(chart: Any, tmp_path: Path, base: Obj) -> None:
    assert effective_config(render(chart, base), tmp_path).server.reload.watch_interval_s == 10
    slow = render(chart, _merge(base, {"reload": {"intervalSeconds": 45}}))
    assert effective_config(slow, tmp_path).server.reload.watch_interval_s == 45
    # The chart owns the setting: a value under config cannot turn the watch off behind its back.
    overridden = render(chart, _merge(base, {"config": {"server": {"reload": {"watch_interval_s": 0}}}}))
    assert effective_config(overridden, tmp_path).server.reload.watch_interval_s == 10
    assert effective_config(render(chart, _merge(base, RESTART)), tmp_path).server.reload.watch_interval_s == 0


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_checksum_of_the_whole_configmap_only_in_restart_mode(chart: Any, base: Obj) -> None:
    def checksum(values: Obj) -> str:
        return annotations_of(render(chart, _merge(_merge(base, RESTART), values)))["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"embedding": {"min_confidence": 0.8}}})
    assert checksum({}) != checksum({"rules": RULES})
    restart = annotations_of(render(chart, _merge(base, RESTART)))
    watch = annotations_of(render(chart, base))
    assert "checksum/restart-only" not in restart
    assert "checksum/config" not in watch and "checksum/restart-only" in watch


def test_notes_say_how_config_changes_apply(chart: Any) -> None:
    assert "rereads it every 45s" in render(chart, {"reload": {"intervalSeconds": 45}}).notes
    assert "roll the pods (reload.mode restart)" in render(chart, RESTART).notes


# Changes a live reload applies: in watch mode they must leave the pod template (so the pods) alone.
LIVE_CHANGES = {
    "rules": {"rules": RULES},
    "threshold": {"config": {"embedding": {"min_confidence": 0.8, "label_min_confidence": {"Security Alert": 0.9}}}},
    "out of distribution": {"config": {"embedding": {"out_of_distribution": False}}},
    "memory thresholds": {"config": {"memory": {"min_rows": 3, "min_purity": 0.9}}},
    "routes": {"config": {"router": {"source_routes": {"LegacyCRM": "embedding"}, "fallback_label": "unknown"}}},
    "llm prompt": {
        "config": {
            "llm": {
                "instructions": "Label the line.",
                "labels": {"Billing": "invoices"},
                "examples": [{"source": "s", "message": "m", "label": "Billing"}],
                "min_confidence": 0.5,
            }
        }
    },
    "relay outputs": {"config": {"relay": {"output": {"label_key": "severity_class"}}}},
    "upstreams": {"daemonset": {"relay": {"upstreams": [{"host": "other.logging.svc", "port": 24224}]}}},
}
# Changes a live reload refuses (restart_required): in watch mode they must roll the pods.
RESTART_CHANGES = {
    "lanes": {"config": {"server": {"lanes": {"llm": {"max_queue": 10}}}}},
    "batch": {"config": {"server": {"batch": {"max_records": 64}}}},
    "encoder": {"config": {"embedding": {"backend": "torch"}}},
    "limits": {"config": {"limits": {"max_message_bytes": 1024}}},
    "relay buffer": {"config": {"relay": {"buffer": {"max_bytes": 1048576}}}},
    "watch interval": {"reload": {"intervalSeconds": 30}},
    # server.admin_auth: the sidecar reads its token once, at start.
    "admin token": {"adminAuth": {"enabled": True, "token": "adm1n-token-0123456789"}},
    # The sidecar opens the store once, at start (it outlives engine swaps).
    "store": STORE,
    "store timeout": {"config": {"store": {"timeout_ms": 100}}},
}


@pytest.mark.parametrize("change", list(LIVE_CHANGES))
def test_watch_mode_live_changes_do_not_roll_the_pods(chart: Any, tmp_path: Path, change: str) -> None:
    before, after = render(chart, DAEMONSET), render(chart, _merge(DAEMONSET, LIVE_CHANGES[change]))
    assert before.config_map()["config.yaml"] != after.config_map()["config.yaml"] or (
        before.config_map().get("rules.yaml") != after.config_map().get("rules.yaml")
    ), "the change does not reach the ConfigMap"
    effective_config(after, tmp_path)  # a config the sidecar accepts
    assert pod_template(before) == pod_template(after)
    # Restart mode rolls for the very same change.
    assert annotations_of(render(chart, _merge(DAEMONSET, RESTART))) != annotations_of(
        render(chart, _merge(_merge(DAEMONSET, RESTART), LIVE_CHANGES[change]))
    )


@pytest.mark.parametrize("change", list(RESTART_CHANGES))
def test_watch_mode_restart_only_changes_roll_the_pods(chart: Any, tmp_path: Path, change: str) -> None:
    before, after = render(chart, DAEMONSET), render(chart, _merge(DAEMONSET, RESTART_CHANGES[change]))
    effective_config(after, tmp_path)
    assert annotations_of(before)["checksum/restart-only"] != annotations_of(after)["checksum/restart-only"]


def test_watch_mode_fluent_bit_changes_roll_the_pods(chart: Any) -> None:
    """Fluent Bit reads its config once: the pods roll for it whatever the sidecar watches."""
    changed = _merge(DAEMONSET, {"daemonset": {"fluentBit": {"logLevel": "debug"}}})
    before, after = render(chart, DAEMONSET), render(chart, changed)
    assert before.config_map()["fluent-bit.conf"] != after.config_map()["fluent-bit.conf"]
    assert annotations_of(before)["checksum/restart-only"] != annotations_of(after)["checksum/restart-only"]


# --- learnt templates -----------------------------------------------------------------------------

LEARNT_DIR = "/var/lib/logclass/learnt"
LEARNING_PVC = {"learning": {"volume": {"persistentVolumeClaim": {"claimName": "learnt"}}}}


def learnt_volume(release: Rendered, tmp_path: Path) -> Obj:
    """The volume holding memory.learnt_file, checked writable for the sidecar."""
    cfg = effective_config(release, tmp_path)
    assert cfg.memory.learnt_file is not None
    folder = cfg.memory.learnt_file.rpartition("/")[0]
    mount = mounts_of(release.container())[folder]
    assert not mount.get("readOnly") and "subPath" not in mount, mount
    return volumes_of(release.sidecar_workload())[mount["name"]]


def test_learnt_file_survives_the_pod_on_a_node_folder_in_daemonset_mode(chart: Any, tmp_path: Path) -> None:
    release = render(chart, DAEMONSET)
    volume = learnt_volume(release, tmp_path)
    assert volume["hostPath"] == {"path": f"{LEARNT_DIR}/{RELEASE}", "type": "DirectoryOrCreate"}
    # hostPath folders are created root-owned: the init container hands it to the sidecar's user.
    pod = pod_template(release)["spec"]
    (owner,) = pod["initContainers"]
    assert mounts_of(owner)[LEARNT_DIR]["name"] == mounts_of(release.container())[LEARNT_DIR]["name"]
    assert f"'{LEARNT_DIR}'" in owner["command"][-1] and "os.chown(path, 10001, 10001)" in owner["command"][-1]
    compile(owner["command"][-1], "init", "exec")
    moved = render(chart, _merge(DAEMONSET, {"learning": {"hostPath": "/data/logclass"}}))
    assert learnt_volume(moved, tmp_path)["hostPath"]["path"] == f"/data/logclass/{RELEASE}"


def test_learnt_file_is_on_an_empty_dir_in_service_mode(chart: Any, tmp_path: Path) -> None:
    release = render(chart)
    assert learnt_volume(release, tmp_path) == {"name": "learnt", "emptyDir": {"sizeLimit": "256Mi"}}
    assert "initContainers" not in pod_template(release)["spec"], "fsGroup owns an emptyDir"


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_tmp_where_uploads_spool_is_bounded_to_hold_the_uploads_allowed(chart: Any, tmp_path: Path, base: Obj) -> None:
    release = render(chart, base)
    tmp = mounts_of(release.container())["/tmp"]
    volume = volumes_of(release.sidecar_workload())[tmp["name"]]
    assert volume == {"name": tmp["name"], "emptyDir": {"sizeLimit": "1Gi"}}
    server = effective_config(release, tmp_path).server
    assert server.max_concurrent_uploads * server.max_upload_bytes <= 1 << 30
    assert volumes_of(render(chart, _merge(base, {"tmpSizeLimit": "4Gi"})).sidecar_workload())[tmp["name"]] == {
        "name": tmp["name"],
        "emptyDir": {"sizeLimit": "4Gi"},
    }


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_learnt_file_on_a_volume_of_ones_own(chart: Any, tmp_path: Path, base: Obj) -> None:
    release = render(chart, _merge(base, LEARNING_PVC))
    assert learnt_volume(release, tmp_path) == {"name": "learnt", "persistentVolumeClaim": {"claimName": "learnt"}}
    for init in pod_template(release)["spec"].get("initContainers", []):
        assert LEARNT_DIR not in mounts_of(init) and LEARNT_DIR not in init["command"][-1]


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_learning_off_has_no_learnt_file_and_no_volume(chart: Any, tmp_path: Path, base: Obj) -> None:
    release = render(chart, _merge(base, {"learning": {"enabled": False}}))
    assert effective_config(release, tmp_path).memory.learnt_file is None
    assert "learnt" not in volumes_of(release.sidecar_workload())
    assert LEARNT_DIR not in mounts_of(release.container())


PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def probe_handlers(container: Obj) -> dict[str, Obj]:
    """Probe -> its one handler ({"httpGet": ...}, {"grpc": ...}, {"tcpSocket": ...})."""
    handlers = {}
    for probe in PROBES:
        (handler,) = [k for k in ("httpGet", "grpc", "tcpSocket") if k in container[probe]]
        handlers[probe] = {handler: container[probe][handler]}
    return handlers


def http_probes(scheme: str) -> dict[str, Obj]:
    ready = {"httpGet": {"path": "/readyz", "port": "http", "scheme": scheme}}
    return {
        "startupProbe": ready,
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": scheme}},
        "readinessProbe": ready,
    }


def same_probe(handler: Obj) -> dict[str, Obj]:
    return dict.fromkeys(PROBES, handler)


GRPC_PROBE = {"grpc": {"port": 50051, "service": GRPC_SERVICE}}
TCP_PROBE = {"tcpSocket": {"port": "grpc"}}
# values -> the probes kubelet gets. Readiness and startup wait for the models (/readyz, gRPC
# health); HTTP liveness is only "process up", so a draining pod is not restarted.
PROBE_CASES: dict[str, tuple[Obj, dict[str, Obj]]] = {
    "default": ({}, http_probes("HTTP")),
    "tls": (TLS, http_probes("HTTPS")),
    # Kubelet has no client certificate, and its gRPC probes speak no TLS: only the port is left.
    "mtls": (MTLS, same_probe(TCP_PROBE)),
    "http off": (HTTP_OFF, same_probe(GRPC_PROBE)),
    "http off, tls": (_merge(HTTP_OFF, TLS), same_probe(TCP_PROBE)),
    "kind grpc": ({"probes": {"kind": "grpc"}}, same_probe(GRPC_PROBE)),
    "kind tcp": ({"probes": {"kind": "tcp"}}, same_probe(TCP_PROBE)),
    "kind tcp, mtls": (_merge(MTLS, {"probes": {"kind": "tcp"}}), same_probe(TCP_PROBE)),
    "kind http, tls": (_merge(TLS, {"probes": {"kind": "http"}}), http_probes("HTTPS")),
}


@pytest.mark.parametrize(
    "base", [{}, _merge(DAEMONSET, {"daemonset": {"apiListen": "all"}})], ids=["service", "daemonset"]
)
@pytest.mark.parametrize("case", list(PROBE_CASES))
def test_probes_follow_the_http_port_and_tls(chart: Any, tmp_path: Path, base: Obj, case: str) -> None:
    values, expected = PROBE_CASES[case]
    release = render(chart, _merge(base, values))
    container = release.container()
    assert probe_handlers(container) == expected
    # A named probe port is one the sidecar listens on.
    cfg = effective_config(release, tmp_path)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen = {"http": cfg.server.http_listen, "grpc": cfg.server.listen}
    for probe in PROBES:
        handler = next(iter(probe_handlers(container)[probe].values()))
        if isinstance(handler["port"], str):
            assert port_of(listen[handler["port"]]) == ports[handler["port"]], probe
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 120
    timings = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["probes"]
    for probe in PROBES:
        assert timings[probe.removesuffix("Probe")].items() <= container[probe].items(), probe


def test_tls_and_token_come_from_secrets(chart: Any, tmp_path: Path) -> None:
    token = "s3cr3t-token-0123456789"
    values = {
        "auth": {"enabled": True, "token": token},
        "tls": {"enabled": True, "existingSecret": "logclass-tls", "clientAuth": True},
    }
    release = render(chart, values)
    cfg = effective_config(release, tmp_path)
    container, workload = release.container(), release.sidecar_workload()
    volumes = volumes_of(workload)

    secret = release.get("Secret", f"{FULLNAME}-auth")
    token_file = Path(cfg.server.auth.token_file)
    auth_mount = mounts_of(container)[str(token_file.parent)]
    auth_volume = volumes[auth_mount["name"]]["secret"]
    assert auth_volume["secretName"] == secret["metadata"]["name"]
    (item,) = auth_volume["items"]
    assert item["path"] == token_file.name
    assert base64.b64decode(secret["data"][item["key"]]).decode() == token
    assert cfg.server.auth.token is None, "the token itself never lands in the ConfigMap"
    assert token not in release.config_map()["config.yaml"]

    tls = cfg.server.tls
    assert [Path(str(f)).name for f in (tls.cert_file, tls.key_file, tls.client_ca_file)] == [
        "tls.crt",
        "tls.key",
        "ca.crt",
    ]
    tls_mount = mounts_of(container)[str(Path(str(tls.cert_file)).parent)]
    assert volumes[tls_mount["name"]]["secret"]["secretName"] == "logclass-tls"
    # Mutual TLS: kubelet can neither present a client certificate nor speak TLS over gRPC.
    assert container["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert "grpc" not in container["readinessProbe"] and "httpGet" not in container["readinessProbe"]

    # Without client certificates the HTTP port serves the same certificate: HTTPS probes and Service.
    tls_only = render(chart, TLS)
    assert effective_config(tls_only, tmp_path).server.tls.client_ca_file is None
    assert tls_only.container()["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    http_port = {p["name"]: p for p in tls_only.get("Service")["spec"]["ports"]}["http"]
    assert http_port["appProtocol"] == "https"

    existing = render(chart, {"auth": {"enabled": True, "existingSecret": "my-token"}})
    assert not existing.has("Secret", f"{FULLNAME}-auth")
    assert volumes_of(existing.sidecar_workload())["auth"]["secret"]["secretName"] == "my-token"


ADMIN_TOKEN = "adm1n-token-0123456789"
ADMIN_AUTH = {"adminAuth": {"enabled": True, "token": ADMIN_TOKEN}}
AUTH = {"auth": {"enabled": True, "token": "callers-token-0123456789"}}
ADMIN_SECRET = f"{FULLNAME}-admin-auth"


def pod_containers(workload: Obj) -> list[Obj]:
    pod = workload["spec"]["template"]["spec"]
    containers: list[Obj] = pod.get("initContainers", []) + pod["containers"]
    return containers


@pytest.mark.parametrize(
    "values",
    [_merge(ADMIN_AUTH, AUTH), _merge(_merge(_merge(DAEMONSET, VLLM), ADMIN_AUTH), AUTH)],
    ids=["service", "daemonset+vllm"],
)
def test_admin_token_comes_from_its_own_secret_into_the_sidecar_alone(chart: Any, tmp_path: Path, values: Obj) -> None:
    release = render(chart, values)
    cfg = effective_config(release, tmp_path)
    token_file = Path(str(cfg.server.admin_auth.token_file))
    assert token_file.parent != Path(str(cfg.server.auth.token_file)).parent, "a mount of its own"
    mount = mounts_of(release.container())[str(token_file.parent)]
    assert mount["readOnly"] is True
    volume = volumes_of(release.sidecar_workload())[mount["name"]]["secret"]
    secret = release.get("Secret", ADMIN_SECRET)
    assert volume["secretName"] == secret["metadata"]["name"]
    (item,) = volume["items"]
    assert item["path"] == token_file.name
    assert base64.b64decode(secret["data"][item["key"]]).decode() == ADMIN_TOKEN
    assert cfg.server.admin_auth.token is None and ADMIN_TOKEN not in release.config_map()["config.yaml"]
    # Fluent Bit, the init container, vLLM: none of them may reload the server or teach it labels.
    holders = [
        (workload["metadata"]["name"], c["name"])
        for workload in release.workloads()
        for c in pod_containers(workload)
        if any(
            m["name"] == mount["name"] or m["mountPath"].startswith(str(token_file.parent))
            for m in c.get("volumeMounts", [])
        )
    ]
    assert holders == [(FULLNAME, "logclass")]
    others = {c["name"] for w in release.workloads() for c in pod_containers(w)} - {"logclass"}
    assert others == ({"fluent-bit", "host-dirs-owner", "vllm"} if "vllm" in values else set())


def test_admin_token_from_an_existing_secret_creates_no_secret(chart: Any, tmp_path: Path) -> None:
    release = render(chart, {"adminAuth": {"enabled": True, "existingSecret": "ops-token", "key": "admin"}})
    assert not release.has("Secret", ADMIN_SECRET)
    token_file = Path(str(effective_config(release, tmp_path).server.admin_auth.token_file))
    volume = volumes_of(release.sidecar_workload())[mounts_of(release.container())[str(token_file.parent)]["name"]]
    assert volume["secret"] == {"secretName": "ops-token", "items": [{"key": "admin", "path": token_file.name}]}


def test_no_admin_token_no_admin_service(chart: Any, tmp_path: Path) -> None:
    release = render(chart, AUTH)
    assert effective_config(release, tmp_path).server.admin_auth.token_file is None
    assert not release.has("Secret", ADMIN_SECRET)
    assert "admin-auth" not in volumes_of(release.sidecar_workload())
    assert not any("admin" in path for path in mounts_of(release.container()))


def test_notes_say_how_to_call_the_admin_service_only_when_it_is_served(chart: Any) -> None:
    notes = render(chart, _merge(ADMIN_AUTH, {"adminAuth": {"key": "admin"}})).notes
    assert f"get secret {ADMIN_SECRET} -o jsonpath='{{.data.admin}}'" in notes
    assert "logclass.v1.Admin/Reload" in notes
    assert "logclass.v1.Admin" not in render(chart, AUTH).notes


def schemaless_chart(tmp_path: Path) -> Any:
    """The chart as `helm install --skip-schema-validation` sees it: the templates' own guards."""
    copy = tmp_path / "logclass"
    shutil.copytree(CHART, copy)  # symlinks followed: the dashboard link is relative to the repo
    (copy / "values.schema.json").unlink()
    return helm_python.Chart.load(str(copy))


def test_admin_token_missing_fails_naming_the_fix(chart: Any, tmp_path: Path) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="/adminAuth/token"):
        chart.render({"adminAuth": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(
        helm_python.HelmRenderError, match=r"adminAuth\.token \(or adminAuth\.existingSecret\) is required"
    ):
        schemaless_chart(tmp_path).render({"adminAuth": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(
    "values",
    [
        _merge(AUTH, {"adminAuth": {"enabled": True, "token": AUTH["auth"]["token"]}}),
        {
            "auth": {"enabled": True, "existingSecret": "tokens"},
            "adminAuth": {"enabled": True, "existingSecret": "tokens"},
        },
    ],
    ids=["same token", "same secret and key"],
)
def test_admin_token_must_not_be_the_callers_token(chart: Any, values: Obj) -> None:
    with pytest.raises(helm_python.HelmRenderError, match="adminAuth must be a token of its own"):
        render(chart, values)


def test_admin_token_in_another_key_of_the_callers_secret_is_accepted(chart: Any) -> None:
    values = {
        "auth": {"enabled": True, "existingSecret": "tokens"},
        "adminAuth": {"enabled": True, "existingSecret": "tokens", "key": "admin"},
    }
    assert volumes_of(render(chart, values).sidecar_workload())["admin-auth"]["secret"]["items"][0]["key"] == "admin"


def test_model_bundle_from_a_volume(chart: Any, tmp_path: Path) -> None:
    volume = {"persistentVolumeClaim": {"claimName": "bundles"}}
    release = render(chart, {"model": {"source": "volume", "volume": volume, "subPath": "v2"}})
    cfg = effective_config(release, tmp_path)
    assert cfg.model.bundle == "/models/v2"
    mount = mounts_of(release.container())["/models"]
    assert mount["readOnly"] is True
    assert volumes_of(release.sidecar_workload())[mount["name"]]["persistentVolumeClaim"] == {"claimName": "bundles"}


# --- vLLM -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_sidecar_llm_url_points_at_the_vllm_service(chart: Any, tmp_path: Path, base: Obj) -> None:
    release = render(chart, _merge(base, VLLM))
    cfg = effective_config(release, tmp_path)
    name = f"{FULLNAME}-vllm"
    svc, deploy = release.get("Service", name), release.get("Deployment", name)
    url = urlsplit(cfg.llm.server.url)
    assert url.scheme == "http" and url.path == "/v1"
    assert url.hostname == f"{name}.{NAMESPACE}.svc"
    (svc_port,) = svc["spec"]["ports"]
    assert url.port == svc_port["port"]
    vllm = release.container("vllm", deploy)
    container_ports = {p["name"]: p["containerPort"] for p in vllm["ports"]}
    assert container_ports[svc_port["targetPort"]] == svc_port["port"]
    assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    # The vLLM pods are not the sidecar's: neither the sidecar's Service nor its selector picks them.
    sidecar_selector = release.sidecar_workload()["spec"]["selector"]["matchLabels"]
    assert not sidecar_selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()

    args = vllm["args"]
    assert vllm["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert f"--served-model-name={cfg.llm.server.model}" in args
    assert f"--port={container_ports['http']}" in args
    assert "--host=0.0.0.0" in args
    model_arg = next(a for a in args if a.startswith("--model="))
    pod = deploy["spec"]["template"]["spec"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    models = {v["name"]: v for v in pod["volumes"]}["models"]
    assert models["persistentVolumeClaim"] == {"claimName": "llm-weights", "readOnly": True}
    models_mount = next(m for m in vllm["volumeMounts"] if m["name"] == "models")
    assert model_arg.removeprefix("--model=").startswith(models_mount["mountPath"] + "/")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}


def test_vllm_model_from_the_image_and_api_key(chart: Any, tmp_path: Path) -> None:
    values = {
        "vllm": {
            "enabled": True,
            "servedModelName": "llama-3.1-8b",
            "model": {"source": "image", "path": "/weights/llama"},
            "image": {"repository": "registry.example/vllm-llama", "tag": "v0.11.0-llama31"},
            "apiKeySecret": {"name": "vllm-key", "key": "key"},
        }
    }
    release = render(chart, values)
    cfg = effective_config(release, tmp_path)
    deploy = release.get("Deployment", f"{FULLNAME}-vllm")
    vllm = release.container("vllm", deploy)
    assert "--model=/weights/llama" in vllm["args"]
    assert cfg.llm.server.model == "llama-3.1-8b"
    assert "models" not in {v["name"] for v in deploy["spec"]["template"]["spec"]["volumes"]}
    key_env = next(e for e in vllm["env"] if e["name"] == "VLLM_API_KEY")
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": "vllm-key", "key": "key"}
    key_file = Path(cfg.llm.server.api_key_file)
    mount = mounts_of(release.container())[str(key_file.parent)]
    secret = volumes_of(release.sidecar_workload())[mount["name"]]["secret"]
    assert secret == {"secretName": "vllm-key", "items": [{"key": "key", "path": key_file.name}]}


def test_external_llm_url_without_vllm(chart: Any, tmp_path: Path) -> None:
    release = render(chart, {"llm": {"url": "https://llm.example/v1", "model": "m"}})
    cfg = effective_config(release, tmp_path)
    assert (cfg.llm.backend, cfg.llm.server.url, cfg.llm.server.model) == (
        "vllm",
        "https://llm.example/v1",
        "m",
    )
    assert not release.has("Deployment", f"{FULLNAME}-vllm")


# --- the shared store (issue 30) ------------------------------------------------------------------

STORE_MODES = {
    "service, 3 replicas": _merge(STORE, {"service": {"autoscaling": {"enabled": False}, "replicas": 3}}),
    "daemonset": _merge(DAEMONSET, STORE),
}
EXTERNAL_URL = "rediss://cache.example.com:6380/0"
EXTERNAL_STORE = {"store": {"url": EXTERNAL_URL, "existingSecret": "cache-auth", "passwordKey": "auth"}}


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector picks a pod with ``labels``."""
    return match_labels.items() <= labels.items()


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def store_objects(release: Rendered) -> set[tuple[str, str]]:
    return {(kind, name) for kind, name in release.kinds() if name.startswith(STORE_NAME)}


def store_password_volume(release: Rendered, password_file: str) -> Obj:
    """The Secret volume behind the sidecar's store.password_file, checked to be mounted read-only
    at the file's folder, in the logclass container alone."""
    folder = str(Path(password_file).parent)
    mount = mounts_of(release.container())[folder]
    assert mount["readOnly"] is True
    holders = [
        c["name"]
        for w in release.workloads()
        for c in pod_containers(w)
        if any(m["name"] == mount["name"] or m["mountPath"] == folder for m in c.get("volumeMounts", []))
    ]
    assert holders == ["logclass"], "Fluent Bit, the init container and Valkey never see the sidecar's copy"
    secret: Obj = volumes_of(release.sidecar_workload())[mount["name"]]["secret"]
    return secret


@pytest.mark.parametrize("mode", list(STORE_MODES))
def test_store_enabled_renders_valkey_and_points_every_sidecar_at_it(chart: Any, tmp_path: Path, mode: str) -> None:
    release = render(chart, STORE_MODES[mode])
    headless = f"{STORE_NAME}-headless"
    assert store_objects(release) == {
        ("NetworkPolicy", STORE_NAME),
        ("Secret", STORE_NAME),
        ("Service", STORE_NAME),
        ("Service", headless),
        ("StatefulSet", STORE_NAME),
    }
    sts = release.get("StatefulSet", STORE_NAME)
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == headless
    assert selects(spec["selector"]["matchLabels"], pod_labels(sts))
    assert pod["automountServiceAccountToken"] is False
    (valkey,) = pod["containers"]
    repo, _, tag = valkey["image"].rpartition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert (repo, tag) == ("valkey/valkey", values["store"]["image"]["tag"]) and tag not in ("", "latest")

    # The password: random, in the Secret, given to Valkey and the probes through env only.
    secret = release.get("Secret", STORE_NAME)
    encoded = secret["data"]["password"]
    password = base64.b64decode(encoded).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password), password
    others = json.dumps([o for o in release.objects if o is not secret])
    assert password not in others and encoded not in others, "the password outside its Secret"
    env = {e["name"]: e for e in valkey["env"]}
    reference = {"secretKeyRef": {"name": STORE_NAME, "key": "password"}}
    assert env["VALKEY_PASSWORD"]["valueFrom"] == env["REDISCLI_AUTH"]["valueFrom"] == reference
    args = valkey["args"]
    assert args[0] == "valkey-server"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(VALKEY_PASSWORD)", "kubelet expands it from the env"
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-lru", "lessons have no TTL: keep them"
    for probe in PROBES:
        command = valkey[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"] and "valkey-cli" in command[2] and "ping" in command[2], command
        assert "PONG" in command[2], "a loading or refusing Valkey is not ready"
        assert not re.search(r"\s(-a|--pass|--user|--askpass)\b", command[2]), "REDISCLI_AUTH carries the password"

    # Locked down like the chart's other containers, with resources, and its data on a claim.
    ctx = valkey["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["fsGroup"] > 0, "the volume must be writable by Valkey's user"
    assert valkey["resources"]["requests"]["memory"] and valkey["resources"]["limits"]["memory"]
    (claim,) = spec["volumeClaimTemplates"]
    data = mounts_of(valkey)[args[args.index("--dir") + 1]]
    assert claim["metadata"]["name"] == data["name"] and not data.get("readOnly")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "storageClassName" not in claim["spec"], "empty storageClass: the cluster's default"
    assert data["name"] not in {v["name"] for v in pod.get("volumes", [])}

    # Two Services on 6379 that pick Valkey and nothing else.
    ports = {p["name"]: p["containerPort"] for p in valkey["ports"]}
    for name in (STORE_NAME, headless):
        svc = release.get("Service", name)
        (port,) = svc["spec"]["ports"]
        assert (port["port"], ports[port["targetPort"]]) == (6379, 6379)
        assert selects(svc["spec"]["selector"], pod_labels(sts))
        assert not selects(svc["spec"]["selector"], pod_labels(release.sidecar_workload()))
    assert release.get("Service", headless)["spec"]["clusterIP"] == "None"
    assert release.get("Service", STORE_NAME)["spec"]["type"] == "ClusterIP"
    if release.has("Service"):
        assert not selects(release.get("Service")["spec"]["selector"], pod_labels(sts)), "clients never reach Valkey"

    # Every sidecar: store.url at that Service, the password file from the same Secret.
    cfg = effective_config(release, tmp_path)
    url = urlsplit(cfg.store.url)
    assert (url.scheme, url.hostname, url.port, url.path) == ("redis", f"{STORE_NAME}.{NAMESPACE}.svc", 6379, "/0")
    assert cfg.store.key_prefix == RELEASE
    assert cfg.store.password_file is not None
    volume = store_password_volume(release, cfg.store.password_file)
    assert volume["secretName"] == STORE_NAME
    assert volume["items"] == [{"key": "password", "path": Path(cfg.store.password_file).name}]
    # Owner and group: kubelet hands the file to fsGroup, the group of the sidecar's user.
    assert volume["defaultMode"] == 0o440
    assert release.sidecar_workload()["spec"]["template"]["spec"]["securityContext"]["fsGroup"]
    assert password not in release.config_map()["config.yaml"]


@pytest.mark.parametrize("mode", list(STORE_MODES))
def test_store_network_policy_admits_only_this_releases_logclass_pods(chart: Any, mode: str) -> None:
    release = render(chart, STORE_MODES[mode])
    sts = release.get("StatefulSet", STORE_NAME)
    policy = release.get("NetworkPolicy", STORE_NAME)["spec"]
    assert policy["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    (peer,) = rule["from"]
    # A bare podSelector: pods of the policy's own namespace, no namespaceSelector or ipBlock.
    assert list(peer) == ["podSelector"] and list(peer["podSelector"]) == ["matchLabels"]
    admitted = peer["podSelector"]["matchLabels"]
    assert selects(admitted, pod_labels(release.sidecar_workload()))
    # Not Valkey itself, not vLLM, not another release's logclass pods, not any other pod.
    other = Rendered(chart.render(_merge(STORE_MODES[mode], VLLM), name="other", namespace=NAMESPACE))
    assert not selects(admitted, pod_labels(sts))
    assert not selects(admitted, pod_labels(other.get("Deployment", "other-logclass-vllm")))
    (other_sidecar,) = [w for w in other.workloads() if w["metadata"]["name"] == "other-logclass"]
    assert not selects(admitted, pod_labels(other_sidecar))
    assert not selects(admitted, {"app": "shop", "app.kubernetes.io/name": "logclass"})
    # The sidecars' own policy still covers only them.
    sidecar_policy = release.get("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert not selects(sidecar_policy, pod_labels(sts))
    off = render(chart, _merge(STORE_MODES[mode], {"networkPolicy": {"enabled": False}}))
    assert not off.has("NetworkPolicy", STORE_NAME) and off.has("StatefulSet", STORE_NAME)


def test_store_from_an_existing_secret_and_without_persistence(chart: Any, tmp_path: Path) -> None:
    values = {
        "store": {
            "enabled": True,
            "existingSecret": "valkey-auth",
            "passwordKey": "pw",
            "keyPrefix": "shop:logs",
            "persistence": {"enabled": False},
        }
    }
    release = render(chart, values)
    assert not release.has("Secret", STORE_NAME), "the chart makes no Secret when given one"
    sts = release.get("StatefulSet", STORE_NAME)
    (valkey,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["valueFrom"] for e in valkey["env"]}
    assert env["VALKEY_PASSWORD"] == env["REDISCLI_AUTH"] == {"secretKeyRef": {"name": "valkey-auth", "key": "pw"}}
    assert "volumeClaimTemplates" not in sts["spec"]
    data = volumes_of(sts)[mounts_of(valkey)["/data"]["name"]]
    assert data == {"name": "data", "emptyDir": {}}
    cfg = effective_config(release, tmp_path)
    assert cfg.store.key_prefix == "shop:logs"
    assert cfg.store.password_file is not None
    volume = store_password_volume(release, cfg.store.password_file)
    assert (volume["secretName"], volume["items"]) == ("valkey-auth", [{"key": "pw", "path": "password"}])
    # No fsGroup: the file stays root's, so it keeps the default mode the sidecar's user can read.
    no_group = render(chart, _merge(values, {"podSecurityContext": {"fsGroup": None}}))
    assert "fsGroup" not in no_group.sidecar_workload()["spec"]["template"]["spec"]["securityContext"]
    assert "defaultMode" not in volumes_of(no_group.sidecar_workload())["store-password"]["secret"]


@pytest.mark.parametrize(("storage_class", "expected"), [("fast-ssd", "fast-ssd"), ("-", "")])
def test_store_claim_storage_class(chart: Any, storage_class: str, expected: str) -> None:
    values = _merge(STORE, {"store": {"persistence": {"storageClass": storage_class, "size": "10Gi"}}})
    (claim,) = render(chart, values).get("StatefulSet", STORE_NAME)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == expected
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_store_password_is_kept_across_upgrades(chart: Any, tmp_path: Path) -> None:
    """Offline, `lookup` finds nothing, so each render makes a new password; on a cluster it
    returns the Secret already there, whose password must be reused (Valkey's running config and
    every sidecar hold it). The helper that chooses is run here on a Secret handed to it."""
    first, second = (render(chart, STORE).get("Secret", STORE_NAME)["data"]["password"] for _ in range(2))
    assert first != second, "no fixed password in the chart"
    template = (CHART / "templates" / "store.yaml").read_text(encoding="utf-8")
    assert re.search(
        r'include "logclass\.storePassword" \(dict "existing" \(lookup "v1" "Secret" \.Release\.Namespace \$name\)',
        template,
    ), "the Secret's password must come from looking up that very Secret"
    assert re.search(r"kind: Secret\nmetadata:\n  name: \{\{ \$name \}\}", template)
    copy = tmp_path / "logclass"
    shutil.copytree(CHART, copy)
    cases = {
        "kept": '(dict "data" (dict "pw" "b2xkLXNlY3JldA=="))',
        "otherKey": '(dict "data" (dict "x" "eA=="))',
        "none": "(dict)",  # what lookup returns for a Secret that is not there
    }
    lines = [
        f'  {key}: {{{{ include "logclass.storePassword" (dict "existing" {found} "key" "pw") }}}}'
        for key, found in cases.items()
    ]
    (copy / "templates" / "zz-password.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: password-probe}\ndata:\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    probe = render(helm_python.Chart.load(str(copy)), STORE).get("ConfigMap", "password-probe")["data"]
    assert probe["kept"] == "b2xkLXNlY3JldA=="
    for fresh in (probe["otherKey"], probe["none"]):
        assert re.fullmatch(r"[A-Za-z0-9]{32}", base64.b64decode(fresh).decode())


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_external_store_gets_its_url_and_password_file_and_no_valkey(chart: Any, tmp_path: Path, base: Obj) -> None:
    release = render(chart, _merge(base, EXTERNAL_STORE))
    assert store_objects(release) == set()
    assert "StatefulSet" not in {kind for kind, _ in release.kinds()}
    cfg = effective_config(release, tmp_path)
    assert (cfg.store.url, cfg.store.key_prefix) == (EXTERNAL_URL, RELEASE)
    assert cfg.store.password_file is not None
    volume = store_password_volume(release, cfg.store.password_file)
    assert (volume["secretName"], volume["items"]) == ("cache-auth", [{"key": "auth", "path": "password"}])
    # No Secret: a store without a password (or a username in the URL and none), no mount.
    plain = render(chart, _merge(base, {"store": {"url": "redis://cache.shop.svc:6379/1"}}))
    plain_cfg = effective_config(plain, tmp_path)
    assert (plain_cfg.store.url, plain_cfg.store.password_file) == ("redis://cache.shop.svc:6379/1", None)
    assert "store-password" not in volumes_of(plain.sidecar_workload())
    assert not any(path.startswith("/etc/logclass/store") for path in mounts_of(plain.container()))


def test_no_store_by_default(chart: Any, tmp_path: Path) -> None:
    for values in ({}, DAEMONSET):
        release = render(chart, values)
        assert store_objects(release) == set()
        store = effective_config(release, tmp_path).store
        assert (store.url, store.password_file) == (None, None)
        assert "store-password" not in volumes_of(release.sidecar_workload())
    # An existing Secret alone connects nothing and mounts nothing.
    lone = render(chart, {"store": {"existingSecret": "cache-auth"}})
    assert effective_config(lone, tmp_path).store.url is None
    assert "store-password" not in volumes_of(lone.sidecar_workload())


def test_store_enabled_and_url_together_fail_naming_the_fix(chart: Any, tmp_path: Path) -> None:
    both = _merge(STORE, {"store": {"url": EXTERNAL_URL}})
    message = r"set one of them, not both \(store\.enabled=false to keep store\.url, or store\.url=null"
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(chart, both)
    # The guard is the template's own: it holds with --skip-schema-validation too.
    with pytest.raises(helm_python.HelmRenderError, match=message):
        schemaless_chart(tmp_path).render(both, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(
    "url",
    [
        "redis://cache:6379/0",
        "rediss://cache.example.com:6380/15",
        "rediss://logclass@cache.example.com:6380/0?ssl_cert_reqs=required",
        "redis://10.0.0.7:6379",
        "redis://[fd00::7]:6379/0",
    ],
)
def test_schema_accepts_store_urls(chart: Any, url: str) -> None:
    chart.validate_schema({"store": {"url": url}})


@pytest.mark.parametrize("mode", ["service", "daemonset"])
def test_notes_say_one_feedback_call_reaches_every_pod_with_a_store(chart: Any, mode: str) -> None:
    base = _merge(MODES[mode][0], ADMIN_AUTH)
    shared = render(chart, _merge(base, STORE)).notes
    assert "sent ONCE, to any one pod, reaches every pod" in shared
    assert "logclass.v1.Admin/Feedback" in shared and '"corrections":[' in shared
    assert f"port-forward {'deploy' if mode == 'service' else 'daemonset'}/{FULLNAME} 50051" in shared
    assert "send it to every" not in shared
    assert f"Shared store: Valkey {STORE_NAME} (redis://{STORE_NAME}.{NAMESPACE}.svc:6379/0)" in shared
    assert "Feedback) sent ONCE" in render(chart, _merge(base, EXTERNAL_STORE)).notes
    alone = render(chart, base).notes
    assert "Each call reaches the one pod its connection lands on" in alone
    assert "teaches only the pod that got it: send it to every" in alone and "store.enabled=true" in alone
    assert "sent ONCE" not in alone and "Shared store" not in alone


# --- security and images --------------------------------------------------------------------------

ALL_ON = _merge(
    _merge(_merge(DAEMONSET, VLLM), STORE),
    {"auth": {"enabled": True, "token": "0123456789abcdef"}, "networkPolicy": {"enabled": True}},
)


@pytest.mark.parametrize("values", [{}, VLLM, ALL_ON], ids=["service", "service+vllm", "daemonset, all on"])
def test_every_container_is_locked_down(chart: Any, values: Obj) -> None:
    release = render(chart, values)
    seen = set()
    for workload in release.workloads():
        pod = workload["spec"]["template"]["spec"]
        assert not pod.get("hostNetwork") and not pod.get("hostPID")
        for container in pod.get("initContainers", []) + pod["containers"]:
            ctx = container["securityContext"]
            seen.add(container["name"])
            assert ctx["allowPrivilegeEscalation"] is False, container["name"]
            assert ctx["readOnlyRootFilesystem"] is True, container["name"]
            assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
            assert not ctx.get("privileged"), container["name"]
            if container["name"] in ("logclass", "vllm", "valkey"):
                assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0
            if container["name"] == "host-dirs-owner":
                assert ctx["capabilities"]["add"] == ["CHOWN"]
    assert "logclass" in seen
    if values is ALL_ON:
        assert seen == {"logclass", "fluent-bit", "host-dirs-owner", "vllm", "valkey"}


def test_images_are_pinned(chart: Any) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["appVersion"]
    release = render(chart, ALL_ON)
    images = {
        c["name"]: c["image"]
        for w in release.workloads()
        for c in w["spec"]["template"]["spec"].get("initContainers", []) + w["spec"]["template"]["spec"]["containers"]
    }
    assert images["logclass"] == f"ghcr.io/logclass/logclass:{app_version}"
    for name, image in images.items():
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag not in ("", "latest"), f"{name}: {image}"
    assert render(chart, {"image": {"tag": "0.1.0-cuda"}}).container()["image"].endswith(":0.1.0-cuda")


def test_network_policy_limits_grpc_and_vllm(chart: Any) -> None:
    release = render(chart, _merge(VLLM, {"networkPolicy": {"enabled": True}}))
    policy = release.get("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == release.get("Deployment")["spec"]["selector"]["matchLabels"]
    ports = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert all(len(rule["ports"]) == 1 for rule in policy["spec"]["ingress"])
    assert ports[50051]["from"] == [{"podSelector": {}}]
    assert ports[8000]["from"] == [{"podSelector": {}}]
    assert "from" not in ports[9464]
    vllm_policy = release.get("NetworkPolicy", f"{FULLNAME}-vllm")
    (rule,) = vllm_policy["spec"]["ingress"]
    sidecar_labels = release.get("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= sidecar_labels.items()


def test_network_policy_http_peers_default_to_grpc_peers(chart: Any) -> None:
    clients = [{"namespaceSelector": {"matchLabels": {"team": "payments"}}}]
    ingress = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]

    def peers(policy: Obj) -> dict[int, Any]:
        return {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}

    shared = peers(render(chart, {"networkPolicy": {"enabled": True, "grpcFrom": clients}}).get("NetworkPolicy"))
    assert shared[50051] == shared[8000] == clients
    own = {"networkPolicy": {"enabled": True, "grpcFrom": clients, "httpFrom": ingress}}
    separate = peers(render(chart, own).get("NetworkPolicy"))
    assert (separate[50051], separate[8000]) == (clients, ingress)
    # Daemonset mode: neither gRPC nor HTTP is a network service (probes and port-forward reach it).
    daemon = peers(render(chart, _merge(DAEMONSET, own)).get("NetworkPolicy"))
    assert set(daemon) == {9464}


def test_service_monitor_scrapes_the_metrics_port(chart: Any) -> None:
    release = render(chart, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = release.get("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"], "not the HTTP API port"
    assert "metrics" in {p["name"] for p in release.get("Service")["spec"]["ports"]}


def test_notes_say_how_to_call_and_where_metrics_are(chart: Any) -> None:
    notes = render(chart, VLLM).notes
    assert f"{FULLNAME}.{NAMESPACE}.svc:50051" in notes
    assert GRPC_SERVICE in notes
    assert "9464" in notes and "/metrics" in notes
    assert f"http://{FULLNAME}-vllm.{NAMESPACE}.svc:8000/v1" in notes
    daemon_notes = render(chart, DAEMONSET).notes
    assert "aggregator.logging.svc:24224" in daemon_notes


def test_notes_say_where_the_console_is(chart: Any) -> None:
    notes = render(chart).notes
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:8000/" in notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME} 8000:8000" in notes
    assert "open http://127.0.0.1:8000/" in notes and "/docs" in notes
    moved = render(chart, _merge(TLS, {"ports": {"http": 8443}})).notes
    assert f"port-forward svc/{FULLNAME} 8443:8443" in moved and "open https://127.0.0.1:8443/" in moved
    daemon = render(chart, DAEMONSET).notes
    assert f"port-forward daemonset/{FULLNAME} 8000:8000" in daemon and f"{FULLNAME}.{NAMESPACE}.svc:8000" not in daemon


# --- schema -----------------------------------------------------------------------------------------

BAD_VALUES = {
    "unknown mode": ({"mode": "sidecar"}, "/mode"),
    "latest tag": ({"image": {"tag": "latest"}}, "/image/tag"),
    "latest vLLM tag": ({"vllm": {"image": {"tag": "latest"}}}, "/vllm/image/tag"),
    "daemonset without upstreams": ({"mode": "daemonset"}, "/daemonset/relay/upstreams"),
    "upstream without port": (
        {"mode": "daemonset", "daemonset": {"relay": {"upstreams": [{"host": "a"}]}}},
        "/daemonset/relay/upstreams/0",
    ),
    "tls without secret": ({"tls": {"enabled": True}}, "/tls/existingSecret"),
    "auth without token": ({"auth": {"enabled": True}}, "/auth/token"),
    "admin auth without token": ({"adminAuth": {"enabled": True}}, "/adminAuth/token"),
    "short admin token": ({"adminAuth": {"enabled": True, "token": "short"}}, "/adminAuth/token"),
    "admin auth enabled as a string": ({"adminAuth": {"enabled": "yes"}}, "/adminAuth/enabled"),
    "empty admin auth key": ({"adminAuth": {"key": ""}}, "/adminAuth/key"),
    "misspelt admin auth key": ({"adminAuth": {"existingSecrets": "x"}}, "existingSecrets"),
    "vllm without claim": ({"vllm": {"enabled": True}}, "/vllm/model/pvc/claimName"),
    "volume bundle without volume": ({"model": {"source": "volume"}}, "/model"),
    "root container": ({"securityContext": {"runAsNonRoot": False}}, "/securityContext/runAsNonRoot"),
    "port out of range": ({"ports": {"grpc": 70000}}, "/ports/grpc"),
    "http port 0 (off is null)": ({"ports": {"http": 0}}, "/ports/http"),
    "unknown probe kind": ({"probes": {"kind": "https"}}, "/probes/kind"),
    "http probes without the http port": (
        _merge(HTTP_OFF, {"probes": {"kind": "http"}}),
        "'/ports': missing property 'http'",
    ),
    "http probes with mtls": (_merge(MTLS, {"probes": {"kind": "http"}}), "/probes/kind"),
    "grpc probes with tls": (_merge(TLS, {"probes": {"kind": "grpc"}}), "/probes/kind"),
    "llm url scheme": ({"llm": {"url": "grpc://x"}}, "/llm/url"),
    "unknown config section": ({"config": {"embeddings": {}}}, "'embeddings'"),
    "rule without label": ({"rules": [{"pattern": "x"}]}, "/rules/0"),
    "misspelt key": ({"servce": {}}, "servce"),
    "numeric dashboard label": (
        {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}},
        "/grafanaDashboard/labels/grafana_dashboard",
    ),
    "dashboard namespace": ({"grafanaDashboard": {"namespace": "Monitoring_NS"}}, "/grafanaDashboard/namespace"),
    "misspelt dashboard key": ({"grafanaDashboard": {"enable": True}}, "enable"),
    # The kubernetes filter needs a fixed folder to strip from the tag (Kube_Tag_Prefix).
    "log path glob in a folder": (
        {"daemonset": {"fluentBit": {"logPath": "/var/log/pods/*/*/*.log"}}},
        "/daemonset/fluentBit/logPath",
    ),
    "merged JSON over the relay's message": (
        {"daemonset": {"fluentBit": {"kubernetes": {"mergeLogKey": "log"}}}},
        "/daemonset/fluentBit/kubernetes/mergeLogKey",
    ),
    "service account name": ({"serviceAccount": {"name": "Fluent_Bit"}}, "/serviceAccount/name"),
    "misspelt rbac key": ({"rbac": {"enabled": False}}, "enabled"),
    "unknown reload mode": ({"reload": {"mode": "inotify"}}, "/reload/mode"),
    # Not watching is reload.mode restart: watch mode with no watch would apply nothing.
    "watch interval 0": ({"reload": {"intervalSeconds": 0}}, "/reload/intervalSeconds"),
    "relative learning hostPath": ({"learning": {"hostPath": "var/lib/logclass"}}, "/learning/hostPath"),
    "bad emptyDir size": ({"learning": {"sizeLimit": "lots"}}, "/learning/sizeLimit"),
    "misspelt learning key": ({"learning": {"enable": False}}, "enable"),
    # Handshake secrets would sit in the ConfigMap: upstreamSecret mounts them.
    "inline upstream shared_key": (
        {"daemonset": {"relay": {"upstreams": [{"host": "a", "port": 1, "shared_key": "k"}]}}},
        "/daemonset/relay/upstreams/0",
    ),
    "inline upstream password": (
        {"daemonset": {"relay": {"upstreams": [{"host": "a", "port": 1, "password": "p"}]}}},
        "/daemonset/relay/upstreams/0",
    ),
    "unknown apiListen": ({"daemonset": {"apiListen": "pod"}}, "/daemonset/apiListen"),
    # The shared store.
    "store url without a scheme": ({"store": {"url": "cache.example.com:6379"}}, "/store/url"),
    "store url over http": ({"store": {"url": "http://cache.example.com:6379"}}, "/store/url"),
    "store url with no host": ({"store": {"url": "redis://"}}, "/store/url"),
    "store url with a database name": ({"store": {"url": "redis://cache:6379/logs"}}, "/store/url"),
    # The URL sits in the ConfigMap: a password goes in store.existingSecret.
    "store password in the url": ({"store": {"url": "rediss://:hunter2@cache:6380/0"}}, "/store/url"),
    "store user and password in the url": ({"store": {"url": "redis://app:hunter2@cache:6379/0"}}, "/store/url"),
    "store url smuggling a key": ({"store": {"url": "redis://cache:6379/0\nstore:\n  url: x"}}, "/store/url"),
    "store enabled as a string": ({"store": {"enabled": "true"}}, "/store/enabled"),
    "store secret name smuggling yaml": ({"store": {"existingSecret": "x\n  evil: true"}}, "/store/existingSecret"),
    "store key prefix with a space": ({"store": {"keyPrefix": "shop logs"}}, "/store/keyPrefix"),
    "store key prefix too long": ({"store": {"keyPrefix": "k" * 65}}, "/store/keyPrefix"),
    "latest valkey tag": ({"store": {"image": {"tag": "latest"}}}, "/store/image/tag"),
    "valkey as root": ({"store": {"securityContext": {"runAsNonRoot": False}}}, "/store/securityContext/runAsNonRoot"),
    "bad store claim size": ({"store": {"persistence": {"size": "lots"}}}, "/store/persistence/size"),
    "unknown eviction policy": ({"store": {"maxMemoryPolicy": "lru"}}, "/store/maxMemoryPolicy"),
    "misspelt store key": ({"store": {"enable": True}}, "enable"),
    # The chart manages these from `store`: set in config they would bypass the Secret and the guard.
    "config.store.url": ({"config": {"store": {"url": "redis://cache:6379/0"}}}, "/config/store/url"),
    "config.store.password_file": ({"config": {"store": {"password_file": "/x"}}}, "/config/store/password_file"),
    "config.store.key_prefix": ({"config": {"store": {"key_prefix": "x"}}}, "/config/store/key_prefix"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_schema_rejects_bad_values_and_says_where(chart: Any, case: str) -> None:
    values, where = BAD_VALUES[case]
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart.validate_schema(values)
    assert where in str(err.value)


def test_render_refuses_values_the_schema_rejects(chart: Any) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="/image/tag"):
        chart.render({"image": {"tag": "latest"}}, name=RELEASE, namespace=NAMESPACE)


def test_config_sections_in_the_values_schema_are_the_sidecars() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    sections = schema["properties"]["config"]["propertyNames"]["enum"]
    assert sorted(sections) == sorted(config_mod.Settings.__dataclass_fields__)


def test_every_default_value_passes_the_schema(chart: Any) -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    chart.validate_schema(defaults)
    for values, _ in MODES.values():
        chart.validate_schema(values)


# --- one source of truth for the Fluent Bit config ------------------------------------------------


def fluent_bit_sections(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """Classic Fluent Bit config -> {(SECTION, Name): {key: value}}, keys lower-cased
    (Fluent Bit's keys are case-insensitive); @INCLUDE/@SET lines are skipped."""
    sections: dict[tuple[str, str], dict[str, str]] = {}
    current: dict[str, str] | None = None
    header = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("@"):
            continue
        match = re.fullmatch(r"\[([A-Z_]+)\]", line)
        if match:
            header, current = match.group(1), {}
            sections[(header, f"#{len(sections)}")] = current
            continue
        assert current is not None, f"key outside a section: {raw!r}"
        key, _, value = line.partition(" ")
        current[key.lower()] = value.strip()
    return {(h, body.get("name", "")): body for (h, _), body in sections.items()}


def fluent_bit_shape_diff(repo_texts: list[str], chart_text: str) -> list[str]:
    """How the chart's Fluent Bit config differs in shape (sections, keys) from the repo's."""
    repo: dict[tuple[str, str], dict[str, str]] = {}
    for text in repo_texts:
        repo.update(fluent_bit_sections(text))
    ours = fluent_bit_sections(chart_text)
    diff = [f"section {s} only in deploy/fluent-bit/" for s in sorted(set(repo) - set(ours))]
    diff += [f"section {s} only in the chart" for s in sorted(set(ours) - set(repo))]
    for section in sorted(set(repo) & set(ours)):
        for key in sorted(set(repo[section]) ^ set(ours[section])):
            where = "deploy/fluent-bit/" if key in repo[section] else "the chart"
            diff.append(f"{section}: key {key!r} only in {where}")
    return diff


def test_chart_fluent_bit_config_has_the_shape_of_deploy_fluent_bit(chart: Any) -> None:
    confs = sorted(FLUENT_BIT_DIR.glob("*.conf")) if FLUENT_BIT_DIR.is_dir() else []
    assert confs, (
        f"{FLUENT_BIT_DIR.relative_to(ROOT)}/ has no .conf file: the chart's Fluent Bit config must be "
        "compared with the repo's (one source of truth)"
    )
    chart_text = render(chart, DAEMONSET).config_map()["fluent-bit.conf"]
    assert fluent_bit_shape_diff([c.read_text(encoding="utf-8") for c in confs], chart_text) == []


def test_fluent_bit_shape_diff_catches_drift(chart: Any) -> None:
    chart_text = render(chart, DAEMONSET).config_map()["fluent-bit.conf"]
    assert fluent_bit_shape_diff([chart_text.replace("127.0.0.1", "${RELAY_HOST}")], chart_text) == []
    drifted = chart_text.replace("Require_ack_response", "Retry_Wait").replace(
        "[INPUT]\n    Name              tail", "[INPUT]\n    Name systemd"
    )
    assert fluent_bit_shape_diff([drifted], chart_text) == [
        "section ('INPUT', 'systemd') only in deploy/fluent-bit/",
        "section ('INPUT', 'tail') only in the chart",
        "('OUTPUT', 'forward'): key 'require_ack_response' only in the chart",
        "('OUTPUT', 'forward'): key 'retry_wait' only in deploy/fluent-bit/",
    ]


def test_chart_fluent_bit_forwards_to_the_relay_with_acks(chart: Any, tmp_path: Path) -> None:
    release = render(chart, DAEMONSET)
    sections = fluent_bit_sections(release.config_map()["fluent-bit.conf"])
    forward = sections[("OUTPUT", "forward")]
    relay_listen = effective_config(release, tmp_path).relay.listen
    assert f"{forward['host']}:{forward['port']}" == relay_listen
    assert forward["require_ack_response"].lower() == "on"
    tail = sections[("INPUT", "tail")]
    fluent_bit = release.container("fluent-bit")
    mounts = mounts_of(fluent_bit)
    conf_path = fluent_bit["args"][fluent_bit["args"].index("-c") + 1]
    assert mounts[conf_path]["subPath"] == "fluent-bit.conf"
    assert tail["path"].startswith("/var/log/") and mounts["/var/log"]["readOnly"] is True
    assert any(tail["db"].startswith(path + "/") for path in mounts), "tail offsets must be on a volume"


def test_chart_fluent_bit_adds_pod_metadata_the_relay_can_use(chart: Any, tmp_path: Path) -> None:
    release = render(chart, DAEMONSET)
    sections = fluent_bit_sections(release.config_map()["fluent-bit.conf"])
    tail, k8s = sections[("INPUT", "tail")], sections[("FILTER", "kubernetes")]
    assert k8s["match"] == tail["tag"] == "kube.*"
    # tail's kube.* becomes kube.<path with "/" as ".">: the filter must strip exactly the folder part.
    folder = tail["path"].rsplit("/", 1)[0]
    assert k8s["kube_tag_prefix"] == "kube" + folder.replace("/", ".") + "."
    for key in ("merge_log", "keep_log", "k8s-logging.parser", "k8s-logging.exclude", "labels", "annotations"):
        assert k8s[key] == "On", key
    assert k8s["namespace_labels"] == k8s["namespace_annotations"] == "On"
    # The relay classifies message_key: a merged JSON line must keep it and not be merged over it.
    message_key = effective_config(release, tmp_path).relay.message_key
    assert k8s["merge_log_key"] not in (message_key, "kubernetes", "kubernetes_namespace")
    moved = render(chart, _merge(DAEMONSET, {"daemonset": {"fluentBit": {"logPath": "/mnt/log/containers/*.log"}}}))
    moved_k8s = fluent_bit_sections(moved.config_map()["fluent-bit.conf"])[("FILTER", "kubernetes")]
    assert moved_k8s["kube_tag_prefix"] == "kube.mnt.log.containers."


def test_chart_kubernetes_filter_is_the_agent_configs(chart: Any) -> None:
    """Same keys and values as deploy/fluent-bit/agent/ (the shape test compares keys only)."""
    agent = fluent_bit_sections((FLUENT_BIT_DIR / "fluent-bit.conf").read_text(encoding="utf-8"))
    chart_text = render(chart, DAEMONSET).config_map()["fluent-bit.conf"]
    assert fluent_bit_sections(chart_text)[("FILTER", "kubernetes")] == agent[("FILTER", "kubernetes")]


def test_only_fluent_bit_gets_an_api_token(chart: Any) -> None:
    release = render(chart, _merge(DAEMONSET, VLLM))
    for workload in release.workloads():
        assert workload["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    token_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert token_dir in mounts_of(release.container("fluent-bit"))
    assert token_dir not in mounts_of(release.container())
    volume = volumes_of(release.sidecar_workload())[mounts_of(release.container("fluent-bit"))[token_dir]["name"]]
    sources = {next(iter(source)) for source in volume["projected"]["sources"]}
    assert sources == {"serviceAccountToken", "configMap", "downwardAPI"}
    service = render(chart)
    assert token_dir not in mounts_of(service.container())


# --- ServiceAccount and RBAC ----------------------------------------------------------------------


def rules_of(role: Obj) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination a ClusterRole grants."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    } | {("nonResourceURLs", url, "") for rule in role["rules"] for url in rule.get("nonResourceURLs", [])}


def test_cluster_role_reads_pods_and_namespaces_and_nothing_else(chart: Any) -> None:
    release = render(chart, DAEMONSET)
    role = release.get("ClusterRole", CLUSTER_NAME)
    assert rules_of(role) == {("", r, v) for r in ("pods", "namespaces") for v in ("get", "list", "watch")}
    assert "aggregationRule" not in role
    # The checker itself: a wider role does not pass.
    wider = {"rules": role["rules"] + [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}
    assert ("", "secrets", "get") in rules_of(wider)


def test_binding_gives_the_role_to_the_pods_service_account(chart: Any) -> None:
    release = render(chart, DAEMONSET)
    binding = release.get("ClusterRoleBinding", CLUSTER_NAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_NAME}
    pod = release.sidecar_workload()["spec"]["template"]["spec"]
    subject = {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    assert binding["subjects"] == [subject]
    account = release.get("ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["name"] == FULLNAME and account["automountServiceAccountToken"] is False
    annotated = render(chart, _merge(DAEMONSET, {"serviceAccount": {"annotations": {"iam.example/role": "r"}}}))
    assert annotated.get("ServiceAccount")["metadata"]["annotations"] == {"iam.example/role": "r"}


@pytest.mark.parametrize("values", [RBAC_OFF, EXISTING_SA, {}], ids=["rbac off", "existing account", "service"])
def test_no_rbac_when_off_or_in_service_mode(chart: Any, values: Obj) -> None:
    release = render(chart, values if values == {} else _merge(DAEMONSET, values))
    assert not {kind for kind, _ in release.kinds()} & RBAC


def test_existing_service_account_is_used_and_not_created(chart: Any) -> None:
    release = render(chart, _merge(DAEMONSET, EXISTING_SA))
    assert not any(kind == "ServiceAccount" for kind, _ in release.kinds())
    assert release.sidecar_workload()["spec"]["template"]["spec"]["serviceAccountName"] == "logging-agent"
    # Named and created: the binding follows the name.
    named = render(chart, _merge(DAEMONSET, {"serviceAccount": {"name": "fb-agent"}}))
    assert named.has("ServiceAccount", "fb-agent")
    assert named.get("ClusterRoleBinding", CLUSTER_NAME)["subjects"][0]["name"] == "fb-agent"
    unnamed = render(chart, _merge(DAEMONSET, {"serviceAccount": {"create": False}}))
    assert unnamed.sidecar_workload()["spec"]["template"]["spec"]["serviceAccountName"] == "default"


# --- every manifest against Kubernetes' OpenAPI schema --------------------------------------------

# The oldest Kubernetes the chart supports (native gRPC probes, kube-root-ca.crt, policy/v1 ...).
KUBERNETES_VERSION = "1.31.0"
# Prometheus Operator CRDs: no schema in Kubernetes' OpenAPI.
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}
VALIDATED = {
    **{mode: values for mode, (values, _) in MODES.items()},
    "service, tls": TLS,
    "service, mtls": MTLS,
    "service, http off": HTTP_OFF,
    "daemonset, mtls, http off": _merge(_merge(DAEMONSET, MTLS), HTTP_OFF),
    "daemonset, all on": _merge(ALL_ON, {"metrics": {"serviceMonitor": {"enabled": True}}}),
    "service, model volume, grafana": _merge(
        GRAFANA, {"model": {"source": "volume", "volume": {"persistentVolumeClaim": {"claimName": "bundles"}}}}
    ),
    "service, restart mode, learning off": _merge(RESTART, {"learning": {"enabled": False}}),
    "daemonset, restart mode, rules": _merge(_merge(DAEMONSET, RESTART), {"rules": RULES}),
    "daemonset, learning on a volume": _merge(DAEMONSET, LEARNING_PVC),
    "daemonset, learning off": _merge(DAEMONSET, {"learning": {"enabled": False}}),
    "service, learning on a volume, rules": _merge(LEARNING_PVC, {"rules": RULES}),
    "daemonset, vllm, auth and admin auth": _merge(_merge(_merge(DAEMONSET, VLLM), AUTH), ADMIN_AUTH),
    "service, admin auth from an existing secret": {"adminAuth": {"enabled": True, "existingSecret": "ops-token"}},
    "service, external store": EXTERNAL_STORE,
    "daemonset, store from an existing secret, no claim": _merge(
        DAEMONSET,
        {"store": {"enabled": True, "existingSecret": "valkey-auth", "persistence": {"enabled": False}}},
    ),
    "service, store on a storage class, admin auth": _merge(
        _merge(STORE, ADMIN_AUTH), {"store": {"persistence": {"storageClass": "fast-ssd"}}}
    ),
    "service, otlp on the pod network": _merge(OTLP, {"otlp": {"listen": "all"}}),
    "daemonset, otlp on loopback": _merge(DAEMONSET, OTLP),
}


def validation_report(release: Rendered) -> list[str]:
    """One line per object: valid, or skipped as a CRD; an invalid object raises."""
    lines = []
    for obj in release.objects:
        where = f"{obj['apiVersion']} {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CRD_KINDS:
            lines.append(f"{where}: CRD, not in Kubernetes' schema")
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        lines.append(f"{where}: valid (Kubernetes {KUBERNETES_VERSION}, strict)")
    return lines


@pytest.mark.parametrize("mode", list(VALIDATED))
def test_every_manifest_is_valid_kubernetes(chart: Any, mode: str) -> None:
    lines = validation_report(render(chart, VALIDATED[mode]))
    print(f"\n[{mode}]\n" + "\n".join(lines))
    assert lines


def test_strict_validation_catches_unknown_fields_and_types(chart: Any) -> None:
    account = render(chart, DAEMONSET).get("ServiceAccount")
    with pytest.raises(kubernetes_validate.ValidationError, match="automountServiceAcountToken"):
        kubernetes_validate.validate(account | {"automountServiceAcountToken": False}, KUBERNETES_VERSION, strict=True)
    role = render(chart, DAEMONSET).get("ClusterRole", CLUSTER_NAME)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role | {"rules": [{"verbs": "get"}]}, KUBERNETES_VERSION, strict=True)


# --- Grafana dashboard ----------------------------------------------------------------------------

DASHBOARD_CONFIGMAP = f"{FULLNAME}-dashboard"
# The chart reads the dashboard through this symlink: Helm only reads files inside the chart.
DASHBOARD_LINK = CHART / "dashboards" / "logclass.json"


@pytest.mark.parametrize("values", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_grafana_dashboard_is_off_by_default(chart: Any, values: Obj) -> None:
    assert not render(chart, values).has("ConfigMap", DASHBOARD_CONFIGMAP)


@pytest.mark.parametrize("mode", ["service", "daemonset"])
def test_grafana_dashboard_configmap_carries_the_repo_dashboard(chart: Any, mode: str) -> None:
    values = _merge(MODES[mode][0], {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Logs"}}})
    configmap = render(chart, values).get("ConfigMap", DASHBOARD_CONFIGMAP)
    meta = configmap["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1", "the label Grafana's dashboard sidecar looks for"
    assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert meta["annotations"] == {"grafana_folder": "Logs"} and meta["namespace"] == NAMESPACE
    assert list(configmap["data"]) == ["logclass.json"]
    text = configmap["data"]["logclass.json"]
    assert json.loads(text) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert text == DASHBOARD.read_text(encoding="utf-8"), "not byte for byte the repo's dashboard"


def test_grafana_dashboard_namespace_and_extra_labels(chart: Any) -> None:
    values = {"grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"team": "obs"}}}
    meta = render(chart, values).get("ConfigMap", DASHBOARD_CONFIGMAP)["metadata"]
    assert meta["namespace"] == "monitoring"
    # Helm merges maps: the sidecar label stays unless set to null.
    assert meta["labels"]["team"] == "obs" and meta["labels"]["grafana_dashboard"] == "1"


def test_chart_dashboard_is_a_link_to_deploy_grafana_and_packages_as_a_file(tmp_path: Path) -> None:
    assert DASHBOARD_LINK.is_symlink() and DASHBOARD_LINK.resolve() == DASHBOARD.resolve(), (
        f"{DASHBOARD_LINK.relative_to(ROOT)} must link to deploy/grafana/logclass.json; recreate it with "
        f"ln -sfn ../../../grafana/logclass.json {DASHBOARD_LINK.relative_to(ROOT)}"
    )
    # What a chart repository serves: `helm package` must store the dashboard itself, not the link.
    archive = helm_python.package(str(CHART), destination=str(tmp_path))
    with tarfile.open(archive) as tar:
        member = tar.getmember("logclass/dashboards/logclass.json")
        assert member.isfile()
        packed = tar.extractfile(member)
        assert packed is not None and packed.read() == DASHBOARD.read_bytes()


# --- safe defaults (issue 28) ---------------------------------------------------------------------


class _Health(BaseHTTPRequestHandler):
    ready = True

    def do_GET(self) -> None:
        ok = self.path == "/healthz" or (self.path == "/readyz" and self.ready)
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _run_probe(command: list[str], env: dict[str, str]) -> int:
    assert command[:2] == ["python", "-c"]
    return subprocess.run([sys.executable, *command[1:]], env={**os.environ, **env}, timeout=30, check=False).returncode


def test_in_daemonset_mode_the_api_is_on_loopback_and_the_probes_run_inside(chart: Any) -> None:
    """Nothing but the pod itself calls the API in daemonset mode; exposing gRPC and HTTP on every
    node's pod IP, unauthenticated by default, was issue 28's finding. The exec probes are run
    here against real listeners."""
    release = render(chart, DAEMONSET)
    container = release.container()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LOGCLASS_SERVER__LISTEN"] == "127.0.0.1:50051"
    assert env["LOGCLASS_SERVER__HTTP_LISTEN"] == "127.0.0.1:8000"
    ready, live = container["readinessProbe"]["exec"]["command"], container["livenessProbe"]["exec"]["command"]
    assert container["startupProbe"]["exec"]["command"] == ready and ready[-1] == "/readyz" and live[-1] == "/healthz"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        listen = {"LOGCLASS_SERVER__HTTP_LISTEN": f"127.0.0.1:{server.server_address[1]}"}
        assert _run_probe(ready, listen) == 0 and _run_probe(live, listen) == 0
        _Health.ready = False  # loading, or draining: not ready, still alive
        assert _run_probe(ready, listen) != 0 and _run_probe(live, listen) == 0
    finally:
        _Health.ready = True
        server.shutdown()
    # No HTTP (or client certificates required): the gRPC port must take a connection.
    (tcp,) = {json.dumps(render(chart, _merge(DAEMONSET, v)).container()["livenessProbe"]) for v in (HTTP_OFF, MTLS)}
    command = json.loads(tcp)["exec"]["command"]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert _run_probe(command, {"LOGCLASS_SERVER__LISTEN": f"127.0.0.1:{listener.getsockname()[1]}"}) == 0
    assert _run_probe(command, {"LOGCLASS_SERVER__LISTEN": f"127.0.0.1:{free_port()}"}) != 0
    # apiListen all: on every interface again, with kubelet's own probes.
    exposed = render(chart, _merge(DAEMONSET, {"daemonset": {"apiListen": "all"}})).container()
    assert {e["name"]: e["value"] for e in exposed["env"]}["LOGCLASS_SERVER__LISTEN"] == "0.0.0.0:50051"
    assert "httpGet" in exposed["readinessProbe"]


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_the_network_policy_is_on_by_default(chart: Any, base: Obj) -> None:
    policy = render(chart, base).get("NetworkPolicy")
    ports = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert ports == ({9464} if base else {50051, 8000, 9464}), "daemonset mode: only the scrape comes in"


def test_upstream_handshake_secrets_come_from_a_secret(chart: Any, tmp_path: Path) -> None:
    upstreams = [{"host": "agg-a", "port": 24224}, {"host": "agg-b", "port": 24224, "username": "fluent"}]
    secret = {"name": "relay-upstream", "sharedKeyKey": "key", "passwordKey": "pw"}
    release = render(
        chart, _merge(DAEMONSET, {"daemonset": {"relay": {"upstreams": upstreams, "upstreamSecret": secret}}})
    )
    cfg = effective_config(release, tmp_path)
    folder = "/etc/logclass/relay-upstream"
    assert [(u.host, u.shared_key_file, u.password_file) for u in cfg.relay.upstreams] == [
        ("agg-a", f"{folder}/shared_key", None),
        ("agg-b", f"{folder}/shared_key", f"{folder}/password"),
    ]
    assert not any(u.shared_key or u.password for u in cfg.relay.upstreams), "no secret in the ConfigMap"
    mount = mounts_of(release.container())[folder]
    assert mount["readOnly"] is True
    volume = volumes_of(release.sidecar_workload())[mount["name"]]
    assert volume["secret"] == {
        "secretName": "relay-upstream",
        "items": [{"key": "key", "path": "shared_key"}, {"key": "pw", "path": "password"}],
    }
    plain = effective_config(render(chart, DAEMONSET), tmp_path)
    assert [u.shared_key_file for u in plain.relay.upstreams] == [None]


@pytest.mark.parametrize("base", [{}, DAEMONSET], ids=["service", "daemonset"])
def test_metrics_token_from_a_secret_for_the_sidecar_and_the_scrape(chart: Any, tmp_path: Path, base: Obj) -> None:
    values = {"metrics": {"authSecret": {"name": "metrics-token", "key": "t"}, "serviceMonitor": {"enabled": True}}}
    release = render(chart, _merge(base, values))
    assert effective_config(release, tmp_path).server.metrics_auth.token_file == "/etc/logclass/metrics-auth/token"
    mount = mounts_of(release.container())["/etc/logclass/metrics-auth"]
    assert mount["readOnly"] is True
    volume = volumes_of(release.sidecar_workload())[mount["name"]]
    assert volume["secret"] == {"secretName": "metrics-token", "items": [{"key": "t", "path": "token"}]}
    monitor = release.get("ServiceMonitor" if not base else "PodMonitor")
    (endpoint,) = monitor["spec"]["endpoints" if not base else "podMetricsEndpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "metrics-token", "key": "t"}}
    open_metrics = effective_config(render(chart, base), tmp_path).server.metrics_auth
    assert open_metrics.token is None and open_metrics.token_file is None


# --- OTLP front end (otlp.*) -------------------------------------------------------------------------


def test_otlp_is_off_by_default(chart: Any, tmp_path: Path) -> None:
    release = render(chart)
    assert not effective_config(release, tmp_path).otlp.enabled
    assert not any(k.startswith("LOGCLASS_OTLP__") for k in env_of(release.container()))
    assert "otlp-buffer" not in volumes_of(release.sidecar_workload())


@pytest.mark.parametrize("mode", ["service", "daemonset"])
def test_otlp_on_loopback_reaches_the_config_with_its_buffer(chart: Any, tmp_path: Path, mode: str) -> None:
    base = DAEMONSET if mode == "daemonset" else {}
    release = render(chart, _merge(base, OTLP))
    otlp = effective_config(release, tmp_path).otlp
    assert otlp.enabled and (str(otlp.grpc_listen), str(otlp.http_listen)) == ("127.0.0.1:4317", "127.0.0.1:4318")
    assert (otlp.upstream.protocol, otlp.upstream.endpoint) == ("grpc", OTLP["otlp"]["upstream"]["endpoint"])
    assert str(otlp.buffer.path) == OTLP_BUFFER
    container = release.container()
    mount = mounts_of(container)[OTLP_BUFFER]
    assert not mount.get("readOnly")
    volume = volumes_of(release.sidecar_workload())[mount["name"]]
    if mode == "daemonset":
        assert volume["hostPath"] == {"path": f"{OTLP_BUFFER}/{RELEASE}", "type": "DirectoryOrCreate"}
        (owner,) = pod_template(release)["spec"]["initContainers"]
        assert mounts_of(owner)[OTLP_BUFFER]["name"] == mount["name"] and f"'{OTLP_BUFFER}'" in owner["command"][-1]
        compile(owner["command"][-1], "init", "exec")
    else:
        assert volume == {"name": mount["name"], "emptyDir": {"sizeLimit": "1Gi"}}
    # Loopback: nothing on the pod network, the Service or the NetworkPolicy.
    names = {p["name"] for p in container["ports"]}
    assert not names & {"otlp-grpc", "otlp-http"}
    if release.has("Service"):
        assert not {p["name"] for p in release.get("Service")["spec"]["ports"]} & {"otlp-grpc", "otlp-http"}
    ports = {p["port"] for rule in release.get("NetworkPolicy")["spec"]["ingress"] for p in rule["ports"]}
    assert not ports & {4317, 4318}


def test_otlp_on_the_pod_network_only_behind_the_network_policy(chart: Any, tmp_path: Path) -> None:
    senders = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}}]
    values = _merge(OTLP, {"otlp": {"listen": "all"}, "networkPolicy": {"otlpFrom": senders}})
    release = render(chart, values)
    otlp = effective_config(release, tmp_path).otlp
    assert (str(otlp.grpc_listen), str(otlp.http_listen)) == ("0.0.0.0:4317", "0.0.0.0:4318")
    container_ports = {p["name"]: p["containerPort"] for p in release.container()["ports"]}
    assert (container_ports["otlp-grpc"], container_ports["otlp-http"]) == (4317, 4318)
    service = {p["name"]: p for p in release.get("Service")["spec"]["ports"]}
    assert service["otlp-grpc"]["port"] == 4317 and service["otlp-grpc"]["targetPort"] == "otlp-grpc"
    assert service["otlp-http"]["port"] == 4318
    (rule,) = [
        r for r in release.get("NetworkPolicy")["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {4317, 4318}
    ]
    assert rule["from"] == senders
    # Without a NetworkPolicy nothing would guard receivers that have no TLS or token: refused.
    with pytest.raises(helm_python.HelmRenderError, match=r"otlp\.listen all needs networkPolicy\.enabled"):
        render(chart, _merge(values, {"networkPolicy": {"enabled": False}}))


def test_otlp_http_upstream_one_receiver_off_and_a_buffer_volume(chart: Any, tmp_path: Path) -> None:
    claim = {
        "ephemeral": {
            "volumeClaimTemplate": {
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}
            }
        }
    }
    values = _merge(
        OTLP,
        {
            "otlp": {
                "ports": {"grpc": None},
                "upstream": {"protocol": "http", "endpoint": "https://collector:4318"},
                "buffer": {"volume": claim},
            },
            # Other otlp.* settings pass through config.otlp and merge with the chart's.
            "config": {"otlp": {"buffer": {"max_bytes": 1 << 30}, "upstream": {"timeout_ms": 3000}}},
        },
    )
    release = render(chart, values)
    otlp = effective_config(release, tmp_path).otlp
    assert otlp.grpc_listen is None and str(otlp.http_listen) == "127.0.0.1:4318"
    assert (otlp.upstream.protocol, otlp.upstream.endpoint, otlp.upstream.timeout_ms) == (
        "http",
        "https://collector:4318",
        3000,
    )
    assert otlp.buffer.max_bytes == 1 << 30 and str(otlp.buffer.path) == OTLP_BUFFER
    assert volumes_of(release.sidecar_workload())["otlp-buffer"] == {"name": "otlp-buffer", **claim}


def test_otlp_needs_an_upstream_and_its_managed_keys_stay_out_of_config(chart: Any) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="/otlp/upstream/endpoint"):
        render(chart, {"otlp": {"enabled": True}})
    for managed in ({"enabled": True}, {"grpc_listen": "0.0.0.0:4317"}, {"buffer": {"path": "/x"}}):
        with pytest.raises(helm_python.HelmValuesError, match="/config/otlp"):
            render(chart, _merge(OTLP, {"config": {"otlp": managed}}))


def test_notes_say_where_to_send_otlp(chart: Any) -> None:
    notes = render(chart, OTLP).notes
    assert "OTLP/gRPC  127.0.0.1:4317" in notes and "http://127.0.0.1:4318/v1/logs" in notes
    assert "loopback" in notes
    exposed = render(chart, _merge(OTLP, {"otlp": {"listen": "all"}})).notes
    assert f"{FULLNAME}.{NAMESPACE}.svc:4317" in exposed and "networkPolicy.otlpFrom" in exposed
    assert "OTLP" not in render(chart, {}).notes
