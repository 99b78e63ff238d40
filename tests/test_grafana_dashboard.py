"""deploy/grafana/logclass.json: a well-formed Grafana dashboard whose every query asks for series a
real sidecar exports.

The main test runs `logclass serve` with both model lanes (the LLM one in front of a server that
answers some questions and never answers others, and holds one template at most), the relay
(first upstream dead, second up late) and a shared store (a real redis-server), drives traffic
through every path that creates a labelled series (each tier, pending past the request budget, a
lane rejection, an open circuit, relay faults, store lookups and claims), scrapes /metrics and
checks each PromQL expression of the dashboard against the scrape: metric names, label names and
the label values the dashboard matches on. Expressions are parsed with promql-parser (Prometheus'
grammar), so an invalid query fails here, not in Grafana; a renamed metric or label fails here,
not as an empty panel in production.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import promql_parser as promql  # promql-parser: Prometheus' PromQL grammar (Rust), dev extra
import pytest
import yaml
from fluent import sender as fluent_sender  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from logclass import config
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from logclass.core.circuit import State
from logclass.core.decision import LogRecord
from logclass.engine.metrics import Metrics
from logclass.engine.pipeline import build_engine
from logclass.engine.runtime import Runtime
from logclass.relay.metrics import RelayMetrics
from logclass.tiers.llm.tier import CIRCUIT_STATE_VALUES
from tests.conftest import ROOT, SEED_ROWS, free_port, metrics_text, start_server
from tests.relay.conftest import FAST_FORWARD
from tests.relay.forward_peer import ForwardClient, Upstream
from tests.store.redis_server import RedisServer

DASHBOARD = ROOT / "deploy" / "grafana" / "logclass.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Target labels Prometheus attaches at scrape time (ServiceMonitor / PodMonitor), not the sidecar.
TARGET_LABELS = frozenset({"namespace", "pod"})
# Grafana's interval macros, which are not PromQL: any duration parses the same.
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# LegacyCRM lines go straight to the LLM (router.source_routes in the defaults). The test's LLM
# server answers the first and never answers the second.
ANSWERED = "Case escalation for ticket ID 7324 failed because the assigned support agent is no longer active."
LEAD = "Lead conversion failed for prospect ID 7 due to missing contact information."

Scrape = dict[str, dict[str, set[str]]]  # sample name -> label name -> values seen


# --- the dashboard's queries --------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels and those nested in collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [
        (f"panel {panel['title']!r} target {target.get('refId')}", target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # label_values(selector, label): the selector is PromQL, the label must exist on it.
        match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", query)
        assert match, f"variable {var['name']}: only label_values(selector, label) is checked, got {query!r}"
        selector, label = match.groups()
        out.append((f"variable {var['name']}", f"count by ({label}) ({selector})"))
    return out


@dataclass
class Use:
    """What one selector in a query needs from the scrape."""

    metric: str
    labels: set[str] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)  # label="value" matchers


def parse(expr: str) -> promql.Expr:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return promql.parse(expr)


def selectors(node: Any) -> list[promql.VectorSelector]:
    if isinstance(node, promql.VectorSelector):
        return [node]
    if isinstance(node, promql.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql.BinaryExpr):
        return selectors(node.lhs) + selectors(node.rhs)
    if isinstance(node, promql.Call):
        return [s for arg in node.args for s in selectors(arg)]
    if isinstance(node, promql.AggregateExpr | promql.ParenExpr | promql.UnaryExpr | promql.SubqueryExpr):
        return selectors(node.expr)
    return []  # number and string literals


def matchers(selector: promql.VectorSelector) -> list[promql.Matcher]:
    found = list(selector.matchers.matchers)
    for group in selector.matchers.or_matchers:
        found.extend(group)
    return found


def uses(expr: str) -> list[Use]:
    """Every selector of ``expr`` with the labels it matches on or groups by. Grouping labels
    (``by``, ``on``) are required of every selector beneath them: conservative for nested
    aggregations, exact for what the dashboard writes."""
    found: dict[int, Use] = {}

    def use_of(selector: promql.VectorSelector) -> Use:
        key = id(selector)
        if key not in found:
            ms = matchers(selector)
            name = selector.name or next((m.value for m in ms if m.name == "__name__"), "")
            use = Use(name)
            for m in ms:
                if m.name != "__name__":
                    use.labels.add(m.name)
                    if m.op == promql.MatchOp.Equal and "$" not in m.value:
                        use.values[m.name] = m.value
            found[key] = use
        return found[key]

    def visit(node: Any, grouping: frozenset[str]) -> None:
        if isinstance(node, promql.VectorSelector | promql.MatrixSelector):
            for selector in selectors(node):
                use_of(selector).labels |= grouping
            return
        if isinstance(node, promql.AggregateExpr):
            modifier = node.modifier
            by = modifier.labels if modifier is not None and modifier.type == promql.AggModifierType.By else []
            visit(node.expr, grouping | frozenset(by))
        elif isinstance(node, promql.BinaryExpr):
            matching = node.modifier.matching if node.modifier is not None else None
            on = matching.labels if matching is not None and matching.type == promql.LabelModifierType.Include else []
            visit(node.lhs, grouping | frozenset(on))
            visit(node.rhs, grouping | frozenset(on))
        elif isinstance(node, promql.Call):
            for arg in node.args:
                visit(arg, grouping)
        elif isinstance(node, promql.ParenExpr | promql.UnaryExpr | promql.SubqueryExpr):
            visit(node.expr, grouping)

    tree = parse(expr)
    visit(tree, frozenset())
    for selector in selectors(tree):
        use_of(selector)
    return list(found.values())


def scrape_of(text: str) -> Scrape:
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return out


def problems(exprs: list[tuple[str, str]], scrape: Scrape) -> list[str]:
    """What the queries ask for that the scrape lacks; empty when every query can return data."""
    out = []
    for where, expr in exprs:
        try:
            found = uses(expr)
        except ValueError as exc:
            out.append(f"{where}: not valid PromQL ({exc}): {expr}")
            continue
        for use in found:
            if not use.metric.startswith("logclass_"):
                out.append(f"{where}: {use.metric or 'a selector without a metric name'} is not a logclass metric")
                continue
            if use.metric not in scrape:
                out.append(f"{where}: {use.metric} is not exported by the sidecar")
                continue
            labels = scrape[use.metric]
            for label in sorted(use.labels - TARGET_LABELS):
                if label not in labels:
                    out.append(f"{where}: {use.metric} has no label {label!r} (it has {sorted(labels) or 'none'})")
            for label, value in sorted(use.values.items()):
                if label in labels and value not in labels[label]:
                    out.append(f"{where}: no {use.metric} series with {label}={value!r} (seen {sorted(labels[label])})")
    return out


# --- structure ----------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "logclass" and dashboard["title"]
    assert dashboard["id"] is None, "an id belongs to one Grafana instance; imports and provisioning assign their own"
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        title = panel.get("title")
        assert title, f"panel {panel['id']} has no title"
        grid = panel.get("gridPos")
        assert grid and all(isinstance(grid.get(k), int) for k in "hwxy"), f"{title}: gridPos {grid}"
        assert grid["x"] + grid["w"] <= 24, f"{title}: wider than the 24-column grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{title} overlaps {cells[(x, y)]}"
                cells[(x, y)] = title
        if panel["type"] == "row":
            continue
        assert panel.get("description", "").strip(), f"{title}: no description"
        assert panel["datasource"] == DATASOURCE, f"{title}: datasource {panel.get('datasource')}"
        # A heatmap's unit is its y axis'.
        unit = panel["fieldConfig"]["defaults"].get("unit") or panel["options"].get("yAxis", {}).get("unit")
        assert unit, f"{title}: no unit"
        targets = panel.get("targets") or []
        assert targets, f"{title}: no targets"
        ref_ids = [t.get("refId") for t in targets]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), f"{title}: refIds {ref_ids}"
        for target in targets:
            assert target.get("expr", "").strip(), f"{title} {target['refId']}: no expr"
            assert target.get("datasource") == DATASOURCE, f"{title} {target['refId']}: datasource"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "Traffic",
        "Tiers & cache",
        "Lanes",
        "Latency",
        "LLM",
        "Learning & reload",
        "Shared store",
        "Relay",
        "Errors",
        "OTLP",
    ]
    assert {p["type"] for p in panels} >= {"timeseries", "stat", "heatmap"}


def test_variables_and_every_selector_filters_on_them() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod"):
        var = variables[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"], name
        assert var["datasource"] == DATASOURCE, name
        # "All" as a regex that also matches a missing label, so the dashboard works off Kubernetes.
        assert var["allValue"] == ".*", name
    unfiltered = []
    for where, expr in queries(dashboard):
        if where.startswith("variable"):
            continue
        for selector in selectors(parse(expr)):
            got = {(m.name, m.value) for m in matchers(selector) if m.op == promql.MatchOp.Re}
            if not {("namespace", "$namespace"), ("pod", "$pod")} <= got:
                unfiltered.append(f"{where}: {selector}")
    assert unfiltered == [], 'selectors without namespace=~"$namespace", pod=~"$pod":\n' + "\n".join(unfiltered)


def _metrics_scrape() -> Scrape:
    """The exposition of a real Metrics registry without a server: a small engine (the regex tier
    and an LLM lane whose server is down) wired to it as `logclass serve` wires its own, after one
    request with no budget (a regex record, an empty one, one pending on the LLM) has drained."""
    metrics = Metrics()
    RelayMetrics(metrics.registry)
    env = {
        "LOGCLASS_ROUTER__TIERS": "[regex, llm]",
        "LOGCLASS_LLM__BACKEND": "vllm",
        "LOGCLASS_LLM__SERVER__URL": f"http://127.0.0.1:{free_port()}/v1",  # nothing listens
        "LOGCLASS_LLM__SERVER__MODEL": "down",
        "LOGCLASS_LLM__SERVER__RETRIES": "0",
    }
    settings = config.load(environ=env)
    engine = build_engine(settings, on_batch=metrics.observe_lane)
    runtime = Runtime(settings, metrics)
    runtime.attach(engine, None)  # lane gauges, and the LLM tier's calls, latency and circuit
    classify = runtime.classify
    records = [
        LogRecord("BillingSystem", "User 12345 logged in."),
        LogRecord("BillingSystem", ""),
        LogRecord("LegacyCRM", LEAD),
    ]

    async def scenario() -> str:
        try:
            tiers = [d.tier for d in await classify(records, 0.0)]
            assert tiers == ["regex", "none", "pending"], tiers
            await asyncio.wait_for(engine.drain(), timeout=30)  # the LLM call fails: counted, batch observed
            return generate_latest(metrics.registry).decode()
        finally:
            await engine.close()

    return scrape_of(asyncio.run(scenario()))


def test_checker_reports_what_the_scrape_lacks() -> None:
    scrape = _metrics_scrape()
    good = (
        'sum by (label, tier) (rate(logclass_records_total{namespace=~"$namespace", tier="regex"}[$__rate_interval]))'
    )
    cases = {
        "good": (good, []),
        "circuit": ("max(logclass_llm_circuit_state)", []),
        "bucket": ("histogram_quantile(0.99, sum by (le) (rate(logclass_llm_seconds_bucket[5m])))", []),
        "lane label": ("sum by (lane) (logclass_lane_queue_templates) + on(lane) logclass_lane_running_templates", []),
        "lane batches": (
            'histogram_quantile(0.5, sum by (le) (rate(logclass_batch_records_bucket{lane="llm"}[5m])))',
            [],
        ),
        "pending": ('sum(rate(logclass_records_total{tier="pending"}[5m]))', []),
        "inflight": ("max(logclass_inflight_templates)", []),
        "lane not configured": ('logclass_lane_queue_templates{lane="embedding"}', ["lane='embedding'"]),
        "missing metric": ("sum(rate(logclass_not_a_metric_total[5m]))", ["logclass_not_a_metric_total is not"]),
        "removed metric": ("sum(logclass_queue_records)", ["logclass_queue_records is not exported"]),
        "counter without _total": ("rate(logclass_records[5m])", ["logclass_records is not exported"]),
        "label rot": ("sum by (tierz) (rate(logclass_records_total[5m]))", ["has no label 'tierz'"]),
        "matcher label": ('logclass_records_total{lable="x"}', ["has no label 'lable'"]),
        "on() label": (
            "logclass_records_total / on(kind) logclass_errors_total",
            ["logclass_records_total has no label 'kind'"],
        ),
        "renamed value": ('logclass_records_total{tier="llm_pending"}', ["tier='llm_pending'"]),
        "other metric": ("up", ["up is not a logclass metric"]),
        "not PromQL": ("sum(rate(logclass_records_total[5m])", ["not valid PromQL"]),
    }
    for name, (expr, expected) in cases.items():
        found = problems([(name, expr)], scrape)
        assert len(found) == len(expected), f"{name}: {found}"
        for problem, fragment in zip(found, expected, strict=True):
            assert fragment in problem, f"{name}: {problem!r} does not say {fragment!r}"


# --- the learning and reload panels ----------------------------------------------------------------

LEARNING_ROW = "Learning & reload"
# Metrics the sidecar's hot reload and learning (issue 19) export, with their labels and values as
# agreed with that work; this branch's sidecar does not export them yet.
# The series behind the Learning & reload row, with every label value the panels expect.
LEARNING_SERIES = {
    "logclass_reloads_total": {"part": ("rules", "config", "bundle"), "outcome": ("ok", "refused", "restart_required")},
    "logclass_model_info": {"version": ("v1",)},
    "logclass_memory_templates": {"kind": ("trained", "learnt")},
    "logclass_learnt_total": {"origin": ("llm", "feedback")},
}
# Metrics a panel reads that the sidecar does not export yet (none now: the reload metrics came with it).
AWAITING_SIDECAR: dict[str, Any] = {}


def row_panels(dashboard: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels below row ``title`` down to the next row (rows are not collapsed)."""
    panels = dashboard["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == title)
    out = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        out.append(panel)
    return out


def contract_scrape() -> Scrape:
    """An exposition with every series of LEARNING_SERIES and the records the LLM and the memory
    decided: the agreed names, labels and values, registered as the sidecar registers them."""
    registry = CollectorRegistry()
    records = Counter("logclass_records", "", ["tier", "label"], registry=registry)
    for tier in ("llm", "memory", "embedding"):
        records.labels(tier, "Billing").inc()
    for name, labels in LEARNING_SERIES.items():
        base = name.removesuffix("_total")
        kind = Counter if name.endswith("_total") else Gauge
        metric = kind(base, "", list(labels), registry=registry)
        for combo in itertools.product(*labels.values()):
            metric.labels(*combo).inc()
    return scrape_of(generate_latest(registry).decode())


def test_learning_and_reload_panels_ask_for_the_agreed_series() -> None:
    dashboard = load_dashboard()
    panels = row_panels(dashboard, LEARNING_ROW)
    row_queries = [(f"panel {p['title']!r} target {t['refId']}", t["expr"]) for p in panels for t in p["targets"]]
    assert problems(row_queries, contract_scrape()) == []
    grouped = {(use.metric, frozenset(use.labels - TARGET_LABELS)) for _, expr in row_queries for use in uses(expr)}
    # What issue 19 asks to see, and how each panel must split it.
    wanted = {
        ("logclass_memory_templates", frozenset({"kind"})),
        ("logclass_learnt_total", frozenset({"origin"})),
        ("logclass_reloads_total", frozenset({"part", "outcome"})),
        ("logclass_model_info", frozenset({"version"})),
        ("logclass_records_total", frozenset({"tier"})),
        ("logclass_records_total", frozenset()),
    }
    assert wanted <= grouped, sorted(wanted - grouped)
    # The LLM's share of decisions: decided by the LLM over all records, on the same window.
    (share,) = [p for p in panels if "1h window" in p["title"]]
    llm = next(t["expr"] for t in share["targets"] if 'tier="llm"' in t["expr"])
    assert llm.count("[1h]") == 2 and share["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_contract_check_catches_a_wrong_label() -> None:
    bad = [("typo", 'sum by (reason) (increase(logclass_reloads_total{outcome="restart"}[5m]))')]
    found = problems(bad, contract_scrape())
    assert len(found) == 2 and "no label 'reason'" in found[0] and "outcome='restart'" in found[1], found


# --- the shared store panels (issue 30) -------------------------------------------------------------

STORE_ROW = "Shared store"
# The store's series as agreed with the sidecar's store work (sidecar/logclass/engine/metrics.py):
# names, labels and the label values the panels match on or are described with. Counters carry
# _total; the latency histogram is read through _bucket. The live test below checks that the
# sidecar's exposition agrees with this, name for name and label for label.
STORE_SERIES: dict[str, dict[str, tuple[str, ...]]] = {
    "logclass_store_calls_total": {},
    "logclass_store_failures_total": {},
    "logclass_store_skipped_total": {},
    # changes: the lesson log's blocking read, which the latency panel leaves out.
    "logclass_store_seconds": {"operation": ("changes",)},
    "logclass_store_lookups_total": {"result": ("hit", "miss")},
    "logclass_store_claims_total": {"outcome": ("won", "held")},
    "logclass_store_lessons_total": {"direction": ("published", "received")},
    "logclass_store_resyncs_total": {},
    "logclass_store_circuit_open": {},
}


def store_contract_scrape() -> Scrape:
    """An exposition with every series of STORE_SERIES, registered as the sidecar registers them."""
    registry = CollectorRegistry()
    for name, labels in STORE_SERIES.items():
        if name.endswith("_total"):
            metric: Any = Counter(name.removesuffix("_total"), "", list(labels), registry=registry)
        elif name == "logclass_store_seconds":
            metric = Histogram(name, "", list(labels), registry=registry)
        else:
            metric = Gauge(name, "", list(labels), registry=registry)
        for combo in itertools.product(*(values or ("any",) for values in labels.values())):
            child = metric.labels(*combo) if labels else metric
            child.observe(0.001) if isinstance(metric, Histogram) else child.inc()
    return scrape_of(generate_latest(registry).decode())


def test_shared_store_panels_ask_for_the_agreed_series() -> None:
    panels = row_panels(load_dashboard(), STORE_ROW)
    row_queries = [(f"panel {p['title']!r} target {t['refId']}", t["expr"]) for p in panels for t in p["targets"]]
    assert problems(row_queries, store_contract_scrape()) == []
    grouped = {(use.metric, frozenset(use.labels - TARGET_LABELS)) for _, expr in row_queries for use in uses(expr)}
    # What issue 30 asks to see, and how each panel must split it.
    wanted = {
        ("logclass_store_calls_total", frozenset()),
        ("logclass_store_failures_total", frozenset()),
        ("logclass_store_skipped_total", frozenset()),
        ("logclass_store_seconds_bucket", frozenset({"le", "operation"})),
        ("logclass_store_lookups_total", frozenset({"result"})),
        ("logclass_store_claims_total", frozenset({"outcome"})),
        ("logclass_store_lessons_total", frozenset({"direction"})),
        ("logclass_store_resyncs_total", frozenset()),
        ("logclass_store_circuit_open", frozenset()),
    }
    assert grouped == wanted, (sorted(grouped - wanted), sorted(wanted - grouped))
    (latency,) = [p for p in panels if "latency" in p["title"]]
    quantiles = sorted(re.findall(r"histogram_quantile\((0\.\d+),", " ".join(t["expr"] for t in latency["targets"])))
    assert quantiles == ["0.5", "0.99"] and latency["fieldConfig"]["defaults"]["unit"] == "s"
    # The lesson log's read blocks for up to a second waiting for a change: its time is not latency.
    assert all('operation!="changes"' in t["expr"] for t in latency["targets"])
    (circuit,) = [p for p in panels if p["type"] == "stat"]
    texts = {k: v["text"] for k, v in circuit["fieldConfig"]["defaults"]["mappings"][0]["options"].items()}
    assert texts == {"0": "closed", "1": "open"}
    # Rates of counters, never of the gauge.
    for where, expr in row_queries:
        for use in uses(expr):
            counter = use.metric.endswith(("_total", "_bucket"))
            assert counter == bool(re.search(rf"(rate|increase)\({use.metric}\{{", expr)), f"{where}: {expr}"


def test_store_contract_check_catches_a_wrong_name_or_label() -> None:
    bad = [
        ("old name", "sum(rate(logclass_store_errors_total[5m]))"),
        ("label", "sum by (op) (rate(logclass_store_seconds_bucket[5m]))"),
        ("value", 'sum(rate(logclass_store_lessons_total{direction="sent"}[5m]))'),
    ]
    found = problems(bad, store_contract_scrape())
    assert len(found) == 3, found
    assert "logclass_store_errors_total is not exported" in found[0]
    assert "no label 'op'" in found[1] and "direction='sent'" in found[2], found


# --- against a real sidecar ---------------------------------------------------------------------


class LlmServer(ThreadingHTTPServer):
    """An OpenAI-compatible LLM server that answers every question with its first allowed label,
    except questions about ``LEAD``: those it takes and never answers (a stuck server)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LlmHandler)
        self.stopping = threading.Event()
        self.answered = 0
        self.held = 0
        self._thread = threading.Thread(target=self.serve_forever, name="llm-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


class _LlmHandler(BaseHTTPRequestHandler):
    server: LlmServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path.endswith("/chat/completions"), self.path
        if any(LEAD in message["content"] for message in body["messages"]):
            self.server.held += 1
            self.server.stopping.wait(120)  # until the client gives up and the server stops
            return
        self.server.answered += 1
        choice = body["structured_outputs"]["choice"][0]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": choice}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Sidecar:
    proc: subprocess.Popen[str]
    grpc_address: str
    metrics_port: int
    relay_port: int
    late_upstream: Upstream
    llm: LlmServer

    def text(self) -> str:
        return metrics_text(self.metrics_port)

    def scrape(self) -> Scrape:
        return scrape_of(self.text())

    def samples(self) -> Samples:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(self.text())
            for s in family.samples
        }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= set(have))


# The LLM call the stuck server holds lasts this long; the request's budget ends much earlier.
LLM_REQUEST_TIMEOUT_MS = 3000
INLINE_BUDGET_MS = 200


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    tmp = tmp_path_factory.mktemp("dashboard")
    # The Shared store row's series exist only in a sidecar with a store: a real one, on loopback.
    store = RedisServer(tmp_path_factory.mktemp("store"))
    store.start()
    llm = LlmServer()
    grpc_port, metrics_port, relay_port = free_port(), free_port(), free_port()
    dead, late = free_port(), Upstream()
    config_doc = {
        "server": {
            "metrics_listen": f"127.0.0.1:{metrics_port}",
            "grace_seconds": 3,
            # Known records never wait; new ones wait this long for the model lanes, then are pending.
            "inline_budget_ms": INLINE_BUDGET_MS,
            # One template at most in the LLM lane: a request with two new LegacyCRM templates is refused.
            "lanes": {"llm": {"max_queue": 1}},
        },
        "llm": {
            "server": {
                "url": llm.url,
                "model": "test",
                "request_timeout_ms": LLM_REQUEST_TIMEOUT_MS,
                "retries": 0,
                # The warm-up and the first record are answered; the held call's failure opens it.
                "circuit": {"failures": 1, "cooldown_s": 600},
            },
        },
        "relay": {
            "enabled": True,
            "listen": f"127.0.0.1:{relay_port}",
            "source_key": "source",
            "tag_missing_message": True,
            "upstreams": [{"host": "127.0.0.1", "port": dead}, {"host": "127.0.0.1", "port": late.port}],
            # The smallest allowed, so a few requests fill it while no upstream is up.
            "buffer": {"path": str(tmp / "buffer"), "max_bytes": 65536, "full_wait_s": 0.5},
            "forward": FAST_FORWARD,
        },
        # Generous against a loaded test machine: a store failure here is a test failure.
        "store": {"url": store.url, "timeout_ms": 2000},
        # The OTLP row's series: every one is exported from the start (at 0), so no traffic is
        # needed; the upstream is a closed port, and nothing is buffered for it.
        "otlp": {
            "enabled": True,
            "grpc_listen": f"127.0.0.1:{free_port()}",
            "http_listen": f"127.0.0.1:{free_port()}",
            "upstream": {"endpoint": f"http://127.0.0.1:{free_port()}"},
            "buffer": {"path": str(tmp / "otlp-buffer")},
        },
    }
    config_path = tmp / "logclass.yaml"
    config_path.write_text(yaml.safe_dump(config_doc), encoding="utf-8")
    # LOGCLASS_LLM__BACKEND: tests/conftest.py turns the LLM off for every subprocess.
    env = {"LOGCLASS_CONFIG": str(config_path), "LOGCLASS_LLM__BACKEND": "vllm"}
    proc: subprocess.Popen[str] | None = None
    try:
        proc = start_server(f"127.0.0.1:{grpc_port}", env)
        sidecar = Sidecar(proc, f"127.0.0.1:{grpc_port}", metrics_port, relay_port, late, llm)
        _drive(sidecar)
        yield sidecar
    finally:
        late.stop()
        llm.stop()
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err[-3000:]
        finally:
            store.stop()


def _drive(sidecar: Sidecar) -> None:
    """Traffic through every path that creates a labelled series."""
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = pb_grpc.LogClassifierStub(channel)  # type: ignore[no-untyped-call]
        # Every answer awaited: the regex, memory, embedding and LLM tiers decide (a new wording
        # of a seed template is the embedding tier's), an empty message errs.
        rows = [
            *((s, m) for s, m, _ in SEED_ROWS),
            ("ModernCRM", "Repeated sign-in failures recorded for account 5"),
            ("LegacyCRM", ANSWERED),
            ("BillingSystem", ""),
        ]
        request = pb.ClassifyRequest(records=[pb.LogRecord(source=s, message=m) for s, m in rows], wait_for_all=True)
        tiers = {r.tier for r in stub.Classify(request, timeout=30).results}
        assert {"regex", "memory", "embedding", "llm"} <= tiers, tiers
        assert sidecar.llm.answered >= 2, "the warm-up and the LegacyCRM record"

        # The server holds this question: the request's inline budget ends first, the record is
        # pending, and its template stays in the LLM lane (running) until the call times out.
        started = time.monotonic()
        (lead,) = stub.Classify(
            pb.ClassifyRequest(records=[pb.LogRecord(source="LegacyCRM", message=LEAD)]), timeout=30
        ).results
        waited = time.monotonic() - started
        assert lead.tier == "pending" and lead.label == "Unclassified", lead
        assert INLINE_BUDGET_MS / 1000 <= waited < LLM_REQUEST_TIMEOUT_MS / 1000, waited
        samples = sidecar.samples()
        assert time.monotonic() - started < LLM_REQUEST_TIMEOUT_MS / 1000, "too slow to see the held call"
        assert samples[("logclass_lane_running_templates", (("lane", "llm"),))] == 1
        assert samples[("logclass_lane_queue_templates", (("lane", "llm"),))] == 0
        assert samples[("logclass_inflight_templates", ())] == 1

        # Two new templates for an LLM lane that holds one: refused whole, naming the lane.
        full = [f"Opportunity sync for account {name} stalled waiting on approval." for name in ("Acme", "Globex")]
        request = pb.ClassifyRequest(records=[pb.LogRecord(source="LegacyCRM", message=m) for m in full])
        with pytest.raises(grpc.RpcError) as refused:
            stub.Classify(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        assert "llm lane is full" in str(refused.value.details()), refused.value.details()

    acked: list[str] = []
    with ForwardClient(sidecar.relay_port) as client:
        chunk = [{"log": m, "source": s, "seq": f"seed-{i}"} for i, (s, m, _) in enumerate(SEED_ROWS)]
        chunk.append({"source": "BillingSystem", "seq": "no-message"})  # missing_message fallback
        assert client.wait_ack(client.packed("app", chunk), timeout=30)
        acked += [str(r["seq"]) for r in chunk]
    logger = fluent_sender.FluentSender("fl", host="127.0.0.1", port=sidecar.relay_port)
    assert logger.emit("app", {"log": SEED_ROWS[1][1], "source": "BillingSystem", "seq": "fl-0"}), logger.last_error
    logger.close()
    acked.append("fl-0")
    with ForwardClient(sidecar.relay_port) as bad:
        bad.send_raw(b"\xc1\x00\x00")  # never valid msgpack: a protocol error
        assert bad.is_closed(timeout=5)
    # No upstream is up: the buffer fills, a request waits, then is refused (backpressure).
    with ForwardClient(sidecar.relay_port) as client:
        pad = "x" * 12000
        for n in range(10):
            record = {"log": SEED_ROWS[1][1], "source": "BillingSystem", "seq": f"fill-{n}", "pad": pad}
            if not client.wait_ack(client.packed("app", [record]), timeout=5):
                break
            acked.append(f"fill-{n}")
        else:
            raise AssertionError("a 64 KiB buffer took 120 KB without backpressure")
    sidecar.late_upstream.start()
    assert sidecar.late_upstream.wait_for_all(acked, timeout=30), "the late upstream did not get the records"


def awaited(problem: str) -> bool:
    """A query's only problem is that its metric is one the sidecar will export (AWAITING_SIDECAR)."""
    return any(problem.endswith(f": {metric} is not exported by the sidecar") for metric in AWAITING_SIDECAR)


def test_every_dashboard_query_finds_its_series_in_a_real_scrape(sidecar: Sidecar) -> None:
    started = time.monotonic()
    exprs = queries(load_dashboard())
    # The held LLM call and the forwarder's counters land asynchronously after the traffic above.
    deadline = time.monotonic() + 20
    while True:
        scrape = sidecar.scrape()
        found = [p for p in problems(exprs, scrape) if not awaited(p)]
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found == [], "\n".join(found)
    print(f"\n{len(exprs)} dashboard queries checked against a live scrape in {time.monotonic() - started:.1f}s")


def test_metrics_awaiting_the_sidecar_are_not_exported_yet(sidecar: Sidecar) -> None:
    """The exemption above ends the day the sidecar exports one: then take it out of
    AWAITING_SIDECAR and make _drive create its series (a SIGHUP for a reload, an LLM answer for a
    learnt template), so the real scrape checks its panel too. Families count even without a
    sample: a labelled counter has none until its first event."""
    families = {family.name for family in text_string_to_metric_families(sidecar.text())}
    exported = [m for m in AWAITING_SIDECAR if m in families or m.removesuffix("_total") in families]
    assert exported == [], f"now exported by the sidecar: {exported}; remove them from AWAITING_SIDECAR"


def family_name(sample: str) -> str:
    """The metric family a sample name belongs to (a counter's _total, a histogram's parts)."""
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


def store_contract_mismatches(text: str) -> list[str]:
    """How an exposition differs from STORE_SERIES: a metric missing, other label names, or a
    listed label value the sidecar does not report."""
    live = {family.name: family for family in text_string_to_metric_families(text)}
    mismatches = []
    for name, labels in STORE_SERIES.items():
        family = live.get(family_name(name))
        if family is None:
            mismatches.append(f"{name}: not exported")
            continue
        samples = [s for s in family.samples if not s.name.endswith(("_count", "_sum", "_created"))]
        names = {key for s in samples for key in s.labels} - {"le"}
        if names != set(labels):
            mismatches.append(f"{name}: labels {sorted(names)}, agreed {sorted(labels)}")
        for label, values in labels.items():
            seen = {s.labels[label] for s in samples if label in s.labels}
            if set(values) - seen:
                mismatches.append(f"{name}: no {label} {sorted(set(values) - seen)} (seen {sorted(seen)})")
    return mismatches


def test_store_contract_is_what_the_sidecar_exports(sidecar: Sidecar) -> None:
    """STORE_SERIES, which the Shared store row is checked against, agrees with the live
    exposition. The lesson log's first blocking read ends within a second of the start."""
    deadline = time.monotonic() + 15
    while (found := store_contract_mismatches(sidecar.text())) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert found == [], "\n".join(found)


def test_store_contract_check_catches_drift() -> None:
    registry = CollectorRegistry()
    Counter("logclass_store_calls", "", ["node"], registry=registry).labels("a").inc()
    Counter("logclass_store_lookups", "", ["result"], registry=registry).labels("hit").inc()
    found = store_contract_mismatches(generate_latest(registry).decode())
    assert "logclass_store_calls_total: labels ['node'], agreed []" in found
    assert "logclass_store_lookups_total: no result ['miss'] (seen ['hit'])" in found
    assert "logclass_store_circuit_open: not exported" in found


def test_values_behind_the_lane_llm_and_relay_panels(sidecar: Sidecar) -> None:
    """The values behind the panels the traffic above moved: pending records, the lane rejection,
    the lanes emptied once the held call failed, the circuit it opened, and relay records counted
    in logclass_records_total like gRPC's."""
    open_ = CIRCUIT_STATE_VALUES[State.OPEN]
    deadline = time.monotonic() + 15
    while True:
        # The held call fails request_timeout_ms after the record was answered pending.
        samples = sidecar.samples()
        idle = total(samples, "logclass_inflight_templates") == 0
        if (samples.get(("logclass_llm_circuit_state", ())) == open_ and idle) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert samples[("logclass_llm_circuit_state", ())] == open_
    assert total(samples, "logclass_llm_calls_total", outcome="unavailable") == 1  # the held call
    assert total(samples, "logclass_llm_calls_total", outcome="answered") >= 1
    assert total(samples, "logclass_records_total", tier="llm") >= 1
    assert total(samples, "logclass_records_total", tier="pending") >= 1
    assert total(samples, "logclass_lane_rejected_requests_total", lane="llm") == 1
    assert total(samples, "logclass_errors_total", kind="resource_exhausted") == 1
    for lane in ("embedding", "llm"):
        assert total(samples, "logclass_lane_queue_templates", lane=lane) == 0, lane
        assert total(samples, "logclass_lane_running_templates", lane=lane) == 0, lane
        assert total(samples, "logclass_batch_records_count", lane=lane) >= 1, lane
    assert total(samples, "logclass_inflight_templates") == 0
    # One over gRPC; the relay's (seed chunk, fl-0, fill-n) count only if relay records are counted.
    regex_user_action = samples[("logclass_records_total", (("label", "User Action"), ("tier", "regex")))]
    assert regex_user_action >= 3, regex_user_action


def test_values_behind_the_shared_store_panels(sidecar: Sidecar) -> None:
    """The store took the new templates' lookups and claims, all answered: one sidecar misses and
    wins every claim (nobody else decides), and its circuit stays closed."""
    samples = sidecar.samples()
    assert total(samples, "logclass_store_calls_total") >= 1
    assert total(samples, "logclass_store_failures_total") == 0
    assert total(samples, "logclass_store_skipped_total") == 0
    assert samples[("logclass_store_circuit_open", ())] == 0
    assert total(samples, "logclass_store_lookups_total", result="miss") >= 1
    assert total(samples, "logclass_store_claims_total", outcome="won") >= 1
    assert total(samples, "logclass_store_claims_total", outcome="held") == 0
