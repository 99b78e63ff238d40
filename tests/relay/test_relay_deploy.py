"""deploy/fluent-bit/: the classic and YAML Fluent Bit configs say the same thing, the agent sends
to where the relay listens with acks and unlimited retries, the aggregator takes the relay's chunk
size, and the relay's config is valid. (No Fluent Bit binary can be installed where the suite runs.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from logclass import config
from logclass.relay.settings import check_runnable, resolve
from tests.conftest import NO_LLM, ROOT

DEPLOY = ROOT / "deploy" / "fluent-bit"
SECTIONS = {"SERVICE": "service", "INPUT": "inputs", "FILTER": "filters", "OUTPUT": "outputs"}


def _value(value: Any) -> str:
    text = str(value).lower()
    return {"true": "on", "false": "off"}.get(text, text)


def classic(path: Path) -> dict[str, list[dict[str, str]]]:
    """Sections of a classic Fluent Bit config as lists of {lowercased key: normalised value}."""
    out: dict[str, list[dict[str, str]]] = {}
    current: dict[str, str] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = {}
            out.setdefault(SECTIONS[line[1:-1]], []).append(current)
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, _, value = line.partition(" ")
        current[key.lower()] = _value(value.strip())
    return out


def yaml_config(path: Path) -> dict[str, list[dict[str, str]]]:
    data = yaml.safe_load(path.read_text())
    out = {"service": [{k.lower(): _value(v) for k, v in data["service"].items()}]}
    for name, items in data["pipeline"].items():
        out[name] = [{k.lower(): _value(v) for k, v in item.items()} for item in items]
    return out


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def test_classic_and_yaml_configs_say_the_same() -> None:
    for role in ("agent", "aggregator"):
        assert classic(DEPLOY / role / "fluent-bit.conf") == yaml_config(DEPLOY / role / "fluent-bit.yaml"), role


def test_agent_sends_to_the_relay_with_acks_and_unlimited_retries() -> None:
    cfg = config.load(DEPLOY / "logclass-relay.yaml", environ=NO_LLM)
    relay = resolve(cfg)
    check_runnable(relay)
    agent = classic(DEPLOY / "agent" / "fluent-bit.conf")
    (output,) = agent["outputs"]
    assert output["name"] == "forward" and (output["host"], int(output["port"])) == (relay.host, relay.port)
    assert output["require_ack_response"] == "on" and output["retry_limit"] == "no_limits"
    assert output["retain_metadata_in_forward_mode"] == "off"
    (tail,) = agent["inputs"]
    assert tail["name"] == "tail" and tail["storage.type"] == "filesystem" and "db" in tail
    assert agent["service"][0]["storage.path"] and relay.message_key.keys == ("log",)
    assert len(relay.upstreams) == 2 and str(relay.buffer_path).startswith("/var/lib/")


def test_aggregator_takes_the_relays_chunks() -> None:
    relay = resolve(config.load(DEPLOY / "logclass-relay.yaml", environ=NO_LLM))
    (forward,) = classic(DEPLOY / "aggregator" / "fluent-bit.conf")["inputs"]
    assert forward["name"] == "forward" and int(forward["port"]) == relay.upstreams[0].port
    assert _size(forward["buffer_max_size"]) > relay.section.forward.max_chunk_bytes
    fluentd = (DEPLOY / "aggregator" / "fluentd.conf").read_text()
    assert "@type forward" in fluentd and f"port {relay.upstreams[0].port}" in fluentd


def _port(address: object) -> int:
    return int(str(address).rpartition(":")[2].rstrip("/"))


def test_otlp_example_fluent_bit_sends_to_logclass_and_takes_its_records_back() -> None:
    """deploy/fluent-bit/otlp/: Fluent Bit's opentelemetry output to logclass's OTLP/HTTP receiver,
    logclass's OTLP upstream to Fluent Bit's opentelemetry input, and a runnable otlp section."""
    from logclass.otlp.app import check_runnable as check_otlp

    example = DEPLOY / "otlp"
    fluent_bit = classic(example / "fluent-bit.conf")
    assert fluent_bit == yaml_config(example / "fluent-bit.yaml")
    otlp = config.load(example / "logclass-otlp.yaml", environ=NO_LLM).otlp
    check_otlp(otlp)
    assert otlp.enabled and otlp.http_listen is not None and _port(otlp.http_listen) == 4318
    (to_logclass,) = [o for o in fluent_bit["outputs"] if o["name"] == "opentelemetry"]
    assert (to_logclass["host"], int(to_logclass["port"])) == ("127.0.0.1", _port(otlp.http_listen))
    assert to_logclass["logs_uri"] == "/v1/logs" and to_logclass["retry_limit"] == "no_limits"
    assert to_logclass["logs_body_key"] == "$log"
    (from_logclass,) = [i for i in fluent_bit["inputs"] if i["name"] == "opentelemetry"]
    assert otlp.upstream.protocol == "http" and otlp.upstream.endpoint is not None
    assert _port(otlp.upstream.endpoint) == int(from_logclass["port"]) != _port(otlp.http_listen)
    assert from_logclass["listen"] == "127.0.0.1"
    # The tagged records come back under the input's tag, and leave by an output matching it.
    assert any(o["match"] == from_logclass["tag"] for o in fluent_bit["outputs"])
    # The source key logclass reads is one the nest filter lifts out of the kubernetes map.
    (nest,) = [f for f in fluent_bit["filters"] if f["name"] == "nest"]
    assert otlp.source_keys[0].key.startswith(nest["add_prefix"]) and otlp.source_keys[0].level == "record"
    assert str(otlp.buffer.path).startswith("/var/lib/")
