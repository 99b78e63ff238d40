"""deploy/otel/: the OpenTelemetry Collector example and logclass's otlp section name each other's
ports (Collector exporter -> logclass receiver, logclass upstream -> Collector's second receiver),
the logclass file is a runnable config, and the Collector's pipelines are wired. (No Collector
binary runs in the suite: the YAML is checked for shape, not run.)"""

from __future__ import annotations

from typing import Any

import yaml

from logclass import config
from logclass.otlp.app import check_runnable
from tests.conftest import NO_LLM, ROOT

OTEL = ROOT / "deploy" / "otel"


def _hostport(text: object) -> tuple[str, int]:
    host, _, port = str(text).removeprefix("http://").removeprefix("https://").rstrip("/").rpartition(":")
    return host, int(port)


def _collector() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((OTEL / "collector.yaml").read_text(encoding="utf-8"))
    return doc


def test_logclass_otlp_section_is_runnable_and_on_loopback() -> None:
    otlp = config.load(OTEL / "logclass-otlp.yaml", environ=NO_LLM).otlp
    check_runnable(otlp)
    assert otlp.enabled and otlp.grpc_listen is not None
    assert _hostport(otlp.grpc_listen)[0] == "127.0.0.1", "the receivers have no TLS or token yet"
    assert str(otlp.buffer.path).startswith("/var/lib/")
    # The attribute names the README documents are the defaults.
    names = otlp.attributes
    assert (names.label, names.confidence, names.tier, names.template_id, names.template) == (
        "log.record.label",
        "log.record.confidence",
        "log.record.tier",
        "log.record.template.id",
        "log.record.template",
    )
    readme = (OTEL / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in (names.label, names.tier, names.template_id, names.template))


def test_collector_exports_to_logclass_and_receives_its_records_back() -> None:
    otlp = config.load(OTEL / "logclass-otlp.yaml", environ=NO_LLM).otlp
    collector = _collector()
    exporter = collector["exporters"]["otlp/logclass"]
    assert otlp.grpc_listen is not None
    assert _hostport(exporter["endpoint"]) == _hostport(otlp.grpc_listen)
    assert exporter["tls"]["insecure"] is True and exporter["retry_on_failure"]["enabled"] is True
    assert otlp.upstream.protocol == "grpc" and otlp.upstream.endpoint is not None
    back = collector["receivers"]["otlp/classified"]["protocols"]["grpc"]["endpoint"]
    assert _hostport(back) == _hostport(otlp.upstream.endpoint)
    # Neither of logclass's ports is one of the Collector's own receivers'.
    own = [p["endpoint"] for p in collector["receivers"]["otlp"]["protocols"].values()]
    assert _hostport(otlp.grpc_listen)[1] not in {_hostport(e)[1] for e in own}
    pipelines = collector["service"]["pipelines"]
    assert pipelines["logs/in"]["receivers"] == ["otlp"] and pipelines["logs/in"]["exporters"] == ["otlp/logclass"]
    assert pipelines["logs/classified"]["receivers"] == ["otlp/classified"]
    # Every component a pipeline names is defined, and the batch stays under logclass's limit.
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(collector.get(kind, {})), (kind, pipeline)
    assert collector["processors"]["batch"]["send_batch_max_size"] <= otlp.max_records_per_request


def test_readmes_point_at_the_examples() -> None:
    index = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    assert "`otel/`" in index and "`fluent-bit/otlp/`" in index
    assert "otlp/" in (ROOT / "deploy" / "fluent-bit" / "README.md").read_text(encoding="utf-8")
