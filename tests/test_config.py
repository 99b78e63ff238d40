from __future__ import annotations

from pathlib import Path

import pytest

from logclass import config
from logclass.address import AddressError, split_host_port


def test_defaults_validate_and_carry_the_seed_policy() -> None:
    cfg = config.load(environ={})
    assert cfg["router"]["tiers"] == ["regex", "memory", "embedding", "llm"]
    # The seed's routes and thresholds travel with its bundle (models/default), not the config.
    assert cfg["router"]["source_routes"] is None and cfg["embedding"]["min_confidence"] is None
    assert cfg["router"]["fallback_label"] == "Unclassified"


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
    assert cfg["embedding"]["min_confidence"] == 0.75
    assert cfg["router"]["fallback_label"] == "unknown"
    assert cfg["router"]["tiers"] == ["regex", "embedding"]


def test_file_then_env_precedence(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("templates:\n  cache_size: 10\nembedding:\n  batch_size: 8\n")
    cfg = config.load(path, environ={"LOGCLASS_EMBEDDING__BATCH_SIZE": "16"})
    assert cfg["templates"]["cache_size"] == 10
    assert cfg["embedding"]["batch_size"] == 16
    # Untouched keys keep their defaults.
    assert cfg["templates"]["masks"] == config.defaults()["templates"]["masks"]


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"LOGCLASS_EMBEDDING__MIN_CONFIDENCE": "1.5"}, "embedding.min_confidence"),
        ({"LOGCLASS_EMBEDDING__BATCH_SIZE": "many"}, "embedding.batch_size"),
        ({"LOGCLASS_EMBEDDING__DEVICE": "tpu"}, "embedding.device"),
        ({"LOGCLASS_TEMPLATES__CACHE_SIZ": "5"}, "templates"),
        ({"LOGCLASS_ROUTER__TIERS": "[embedding, regex]"}, "'regex' must come first"),
        (
            {"LOGCLASS_ROUTER__SOURCE_ROUTES": "{CRM: embedding}", "LOGCLASS_ROUTER__TIERS": "[regex, llm]"},
            "source_routes.CRM",
        ),
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
    from logclass.tiers.encoder import resolve_batch_size

    cfg = config.load(environ={"LOGCLASS_EMBEDDING__BATCH_SIZE": "auto"})
    assert cfg["embedding"]["batch_size"] == "auto"
    assert resolve_batch_size("auto", "cpu") == 32
    assert resolve_batch_size("auto", "cuda:0") == 256
    assert resolve_batch_size(64, "cuda") == 64


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
    assert cfg["relay"]["auth"]["shared_key"] == "k-relay"  # the loaded config itself is untouched


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
