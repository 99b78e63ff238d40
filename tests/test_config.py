from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from logclass import config
from logclass.address import AddressError, split_host_port
from logclass.config import schema_gen
from logclass.config.settings import Mask, RetrySettings, Settings, UpstreamSettings
from logclass.core.typed import MayOmit, split_annotated
from logclass.engine.pipeline import unbounded_lanes


def test_defaults_validate_and_carry_the_seed_policy() -> None:
    cfg = config.load(environ={})
    assert cfg.router.tiers == ("regex", "memory", "embedding", "llm")
    # The seed's routes and thresholds travel with its bundle (logclass/models/default), not the config.
    assert cfg.router.source_routes is None and cfg.embedding.min_confidence is None
    assert cfg.router.fallback_label == "Unclassified"


def test_env_overrides_are_typed_and_nested() -> None:
    cfg = config.load(
        environ={
            "LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "0.75",
            "LOGCLASS_ROUTER__FALLBACK_LABEL": "unknown",
            "LOGCLASS_ROUTER__TIERS": "[regex, embedding]",
            "LOGCLASS_ROUTER__SOURCE_ROUTES": "{}",
            "UNRELATED": "x",
        }
    )
    assert cfg.embedding.min_confidence == 0.75
    assert cfg.router.fallback_label == "unknown"
    assert cfg.router.tiers == ("regex", "embedding")
    assert cfg.router.source_routes == {}


def test_file_then_env_precedence(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("templates:\n  cache_size: 10\nembedding:\n  batch_size: 8\n")
    cfg = config.load(path, environ={"LOGCLASS_EMBEDDING__BATCH_SIZE": "16"})
    assert cfg.templates.cache_size == 10
    assert cfg.embedding.batch_size == 16
    # Untouched keys keep their defaults.
    assert cfg.to_dict()["templates"]["masks"] == config.defaults()["templates"]["masks"]


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "1.5"}, "embedding.min_confidence"),
        ({"LOGCLASS_EMBEDDING__BATCH_SIZE": "many"}, "embedding.batch_size"),
        ({"LOGCLASS_EMBEDDING__DEVICE": "tpu"}, "embedding.device"),
        (
            {"LOGCLASS_EMBEDDING__BACKEND": "tensorrt"},
            "embedding.backend: 'tensorrt' is not one of ['auto', 'torch', 'onnx', 'onnx-int8']",
        ),
        ({"LOGCLASS_EMBEDDING__BATCH_TOKENS": "4"}, "embedding.batch_tokens"),
        ({"LOGCLASS_EMBEDDING__CACHE_DIR": "5"}, "embedding.cache_dir: 5 is not of type"),
        ({"LOGCLASS_TEMPLATES__CACHE_SIZ": "5"}, "templates"),
        ({"LOGCLASS_SERVER__LISTEN": "nowhere"}, "server.listen: 'nowhere' does not match"),
        ({"LOGCLASS_RELAY__FORWARD__COMPRESS": "zstd"}, "relay.forward.compress: 'zstd' is not one of"),
        ({"LOGCLASS_RELAY__UPSTREAMS": "[{host: a}]"}, "relay.upstreams.0: 'port' is a required property"),
        ({"LOGCLASS_RELAY__UPSTREAMS": "[{host: a, port: 1, tls: {verify: 1}}]"}, "relay.upstreams.0.tls.verify"),
        ({"LOGCLASS_TEMPLATES__MASKS": "[{name: 1x, pattern: a, replace: b}]"}, "templates.masks.0.name"),
        ({"LOGCLASS_LLM__LABELS": "{}"}, "llm.labels: {} should be non-empty"),
        ({"LOGCLASS_MEMORY__MIN_PURITY": "0.5"}, "memory.min_purity: 0.5 is less than or equal to the minimum of 0.5"),
        ({"LOGCLASS_ROUTER__TIERS": "[regex, regex]"}, "router.tiers: ['regex', 'regex'] has non-unique elements"),
        ({"LOGCLASS_ROUTER__SOURCE_ROUTES": "{CRM: gpt}"}, "router.source_routes.CRM: 'gpt' is not one of"),
        ({"LOGCLASS_LLM__MAX_CONCURRENCY": "0"}, "llm.max_concurrency: 0 is less than the minimum of 1"),
        ({"LOGCLASS_RELAY__ENABLED": "maybe"}, "relay.enabled: 'maybe' is not of type 'boolean'"),
        ({"LOGCLASS_LLM__TIMEOUT_MS": "5"}, "llm.timeout_ms is now server.inline_budget_ms"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(environ=environ)
    assert fragment in str(err.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("router: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(bad, environ={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(config.ConfigError, match="mapping of sections"):
        config.load(scalar, environ={})


def test_auto_batch_size_depends_on_the_device() -> None:
    from logclass.encoders.model import resolve_batch_size

    cfg = config.load(environ={"LOGCLASS_EMBEDDING__BATCH_SIZE": "auto"})
    assert cfg.embedding.batch_size == "auto"
    assert resolve_batch_size("auto", "cpu") == 32
    assert resolve_batch_size("auto", "cuda:0") == 256
    assert resolve_batch_size(64, "cuda") == 64


def test_encoder_settings_default_to_auto_and_the_xdg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from logclass.encoders.export import encoders_cache_dir
    from logclass.encoders.model import resolve_batch_tokens

    cfg = config.load(environ={})
    assert (cfg.embedding.backend, cfg.embedding.batch_tokens, cfg.embedding.cache_dir) == ("auto", "auto", None)
    assert resolve_batch_tokens("auto", "cpu") == 2048
    assert resolve_batch_tokens("auto", "cuda:1") == 32768
    assert resolve_batch_tokens(512, "cuda") == 512
    chosen = config.load(
        environ={"LOGCLASS_EMBEDDING__BACKEND": "onnx-int8", "LOGCLASS_EMBEDDING__CACHE_DIR": "~/encoders"}
    )
    assert chosen.embedding.backend == "onnx-int8"
    assert encoders_cache_dir(chosen.embedding.cache_dir) == Path.home() / "encoders"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert encoders_cache_dir(None) == tmp_path / "logclass" / "encoders"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset
    assert encoders_cache_dir(None) == Path.home() / ".cache" / "logclass" / "encoders"


def test_redacted_masks_every_secret() -> None:
    cfg = config.load(
        environ={"LOGCLASS_LLM__SERVER__API_KEY": "k-llm", "LOGCLASS_SERVER__AUTH__TOKEN": "k-token"},
        overrides={
            "relay": {
                "auth": {"shared_key": "k-relay", "users": [{"username": "u", "password": "k-user"}]},
                "upstreams": [{"host": "agg", "port": 24224, "shared_key": "k-up", "password": "k-up-pw"}],
            }
        },
    )
    shown = str(config.redacted(cfg))
    for secret in ("k-llm", "k-token", "k-relay", "k-user", "k-up", "k-up-pw"):
        assert secret not in shown
    assert shown.count("<redacted>") == 6
    assert cfg.relay.auth.shared_key == "k-relay"  # the loaded config itself is untouched


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:50051", ("::1", 50051)), (":9464", ("0.0.0.0", 9464))],
)
def test_host_port_parsing(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address, "server.metrics_listen") == expected


@pytest.mark.parametrize("address", ["9464", "host:", "host:port", "host:0", "host:70000"])
def test_bad_host_port_names_the_setting(address: str) -> None:
    with pytest.raises(AddressError, match=r"server.metrics_listen: .* is not HOST:PORT"):
        split_host_port(address, "server.metrics_listen")


def _leaves(data: Any, prefix: str = "") -> list[str]:
    """Dotted paths of a mapping's keys in order, nested mappings walked (maps of values, such as
    source_routes, are null in the defaults)."""
    out = []
    for key, value in data.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
    return out


def _fields(cls: type[Any], prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _fields(tp, f"{prefix}{f.name}.")
    return out


def test_every_default_is_a_field_and_every_field_has_a_default() -> None:
    """defaults.yaml is the one source of values: a field it lacks would be a schema error at
    start-up, a key it has that no field reads would be dead."""
    defaults, fields = _leaves(config.defaults()), _fields(Settings)
    assert set(defaults) - set(fields) == set(), "keys of defaults.yaml without a field in config/settings.py"
    assert set(fields) - set(defaults) == set(), "fields without a value in defaults.yaml"
    # Same order, so `logclass config` prints the keys as defaults.yaml documents them.
    assert defaults == fields


def test_no_field_has_a_default_in_code() -> None:
    """Neither a dataclass default nor a MayOmit in a section: those are for list items only."""

    def walk(cls: type[Any]) -> None:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name
            inner, meta = split_annotated(hints[f.name])
            assert not any(isinstance(m, MayOmit) for m in meta), f"{cls.__name__}.{f.name}"
            if dataclasses.is_dataclass(inner):
                walk(typing.cast(type[Any], inner))

    walk(Settings)


def test_load_returns_typed_frozen_settings() -> None:
    cfg = config.load(environ={"LOGCLASS_RELAY__UPSTREAMS": "[{host: agg, port: 24224, tls: {ca_file: ca.pem}}]"})
    assert isinstance(cfg, Settings) and isinstance(cfg.relay.forward.retry, RetrySettings)
    assert isinstance(cfg.templates.masks[0], Mask) and cfg.templates.masks[0].name == "url"
    (upstream,) = cfg.relay.upstreams
    assert isinstance(upstream, UpstreamSettings) and (upstream.host, upstream.port) == ("agg", 24224)
    # Keys an upstream leaves out mean what their MayOmit says: no secret, TLS verified.
    assert upstream.shared_key is None and upstream.tls is not None
    assert upstream.tls.ca_file == "ca.pem" and upstream.tls.verify is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.router.fallback_label = "x"  # type: ignore[misc]


def test_to_dict_round_trips_the_merged_data() -> None:
    environ = {"LOGCLASS_ROUTER__SOURCE_ROUTES": "{CRM: llm}", "LOGCLASS_EMBEDDING__LABEL_MIN_CONFIDENCE": "{a: 0.5}"}
    plain = config.load_dict(environ=environ)
    cfg = config.load(environ=environ)
    assert cfg.to_dict() == plain
    assert Settings.from_dict(cfg.to_dict()) == cfg
    assert yaml.safe_load(yaml.safe_dump(config.redacted(cfg))) == plain


def test_overrides_replace_typed_values() -> None:
    cfg = config.load(environ={}, overrides={"server": {"lanes": {"llm": {"max_queue": 2}}}})
    assert cfg.server.lanes.llm.max_queue == 2 and cfg.server.lanes.embedding.max_queue == 50000
    unbounded = unbounded_lanes(cfg)
    assert unbounded.server.lanes.llm.max_queue == unbounded.server.lanes.embedding.max_queue == 2**62
    assert cfg.server.lanes.llm.max_queue == 2  # replaced, not mutated


def test_a_missing_key_or_a_null_names_it() -> None:
    data = config.defaults()
    del data["server"]["batch"]["max_wait_ms"]
    with pytest.raises(
        config.ConfigError, match=r"invalid configuration:\n  server\.batch: 'max_wait_ms' is a required"
    ):
        config.validate(data)
    with pytest.raises(config.ConfigError, match=r"server\.batch\.max_wait_ms: None is not of type 'number'"):
        config.load(environ={}, overrides={"server": {"batch": {"max_wait_ms": None}}})


def test_an_empty_mapping_clears_a_map_but_keeps_a_section() -> None:
    cfg = config.load(environ={"LOGCLASS_ROUTER__SOURCE_ROUTES": "{}"}, overrides={"server": {"tls": {}}})
    assert cfg.router.source_routes == {}
    assert cfg.server.tls == config.load(environ={}).server.tls


def test_schema_json_is_generated_from_the_types() -> None:
    problem = schema_gen.check()
    assert problem is None, problem


def test_a_stale_schema_is_reported_with_the_command(tmp_path: Path) -> None:
    stale = tmp_path / "schema.json"
    stale.write_text("{}\n")
    problem = schema_gen.check(stale)
    assert problem is not None and "make schema" in problem and "logclass.config.schema_gen" in problem


def test_generated_schema_keeps_the_constraints() -> None:
    """Spot checks of what the generator derives from the types (the full file is checked above)."""
    props = schema_gen.generate()["properties"]
    assert props["router"]["properties"]["tiers"] == {
        "type": "array",
        "items": {"enum": ["regex", "memory", "embedding", "llm"]},
        "uniqueItems": True,
        "minItems": 1,
        "description": props["router"]["properties"]["tiers"]["description"],
    }
    routes = props["router"]["properties"]["source_routes"]
    assert routes["type"] == ["object", "null"] and routes["additionalProperties"] == {
        "enum": ["regex", "memory", "embedding", "llm"]
    }
    batch = props["embedding"]["properties"]["batch_size"]
    assert batch["oneOf"] == [{"type": "integer", "minimum": 1, "maximum": 4096}, {"const": "auto"}]
    upstream = props["relay"]["properties"]["upstreams"]["items"]
    assert upstream["required"] == ["host", "port"] and upstream["additionalProperties"] is False
    assert upstream["properties"]["tls"]["type"] == ["object", "null"]
    assert props["llm"]["properties"]["server"]["properties"]["url"]["type"] == ["string", "null"]
    assert all(section["additionalProperties"] is False for section in props.values())


def test_an_alias_bomb_in_an_environment_value_is_refused() -> None:
    levels = ["[&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = ", ".join(levels) + "]"
    with pytest.raises(config.ConfigError, match=r"LOGCLASS_ROUTER__TIERS=.* is not valid YAML: expands to more than"):
        config.load(environ={"LOGCLASS_ROUTER__TIERS": bomb})
