"""Configuration: packaged YAML defaults, an optional user file, then environment overrides.

``load`` merges them, validates the result against ``schema.json`` (generated from the types in
``settings``) and returns a typed ``Settings``, parsed once at start-up. Code reads attributes of
it and never carries its own defaults: every value comes from ``defaults.yaml`` or the user.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from logclass.config.settings import Settings as Settings
from logclass.core import files
from logclass.core.files import read_yaml
from logclass.core.typed import subsection
from logclass.errors import LogclassError

ENV_PREFIX = "LOGCLASS_"
# LOGCLASS_CONFIG names a file, it is not a key override.
_ENV_FILE = "LOGCLASS_CONFIG"

# The plain data of a configuration (what YAML holds); ``Settings`` is its typed form.
Config = dict[str, Any]


class ConfigError(LogclassError):
    """A configuration that cannot be used; the message says where and how to fix it."""


def _packaged_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def packaged_path(name: str) -> Path:
    """Filesystem path of a file shipped in this package (rules.yaml, defaults.yaml)."""
    return Path(str(resources.files(__package__).joinpath(name)))


def defaults() -> Config:
    data: Config = yaml.safe_load(_packaged_text("defaults.yaml"))
    return data


def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_packaged_text("schema.json"))
    return data


def _merge(base: Config, override: Mapping[str, Any], section: type[Any] | None = Settings) -> Config:
    """Deep-merge mappings; lists and scalars in ``override`` replace those in ``base``. An empty
    mapping replaces a map of values (``source_routes: {}`` clears the routes) but changes nothing
    in a section of settings (``tls: {}`` keeps the defaults): ``section`` is the settings type of
    this level, None inside a map of values."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        child = subsection(section, key)
        if isinstance(value, Mapping) and (value or child is not None) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, child)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_file(path: Path) -> Config:
    data = read_yaml(path, "config file", error=ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def env_overrides(environ: Mapping[str, str]) -> Config:
    """``LOGCLASS_A__B=v`` becomes ``{"a": {"b": v}}`` with ``v`` parsed as YAML."""
    out: Config = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == _ENV_FILE:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key part; use LOGCLASS_SECTION__KEY")
        value = files.yaml_of(raw, f"{name}={raw!r}", "environment variable", error=ConfigError) if raw != "" else ""
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        node[path[-1]] = value
    return out


# Settings that moved when the serving core became lanes (0.2): a config that still has one is
# told where it went instead of only "additional properties are not allowed".
MOVED = {
    ("llm", "timeout_ms"): "server.inline_budget_ms (per request; the LLM no longer has its own budget)",
    ("llm", "cache_size"): "templates.cache_size (LLM answers share the template cache)",
    ("llm", "max_queue"): "server.lanes.llm.max_queue",
    ("server", "max_queue_records"): "server.lanes.embedding.max_queue (templates, not records)",
}


def _check_moved(config: Mapping[str, Any]) -> None:
    found = [
        f"  {section}.{key} is now {where}"
        for (section, key), where in MOVED.items()
        if isinstance(config.get(section), Mapping) and key in config[section]
    ]
    if found:
        raise ConfigError("invalid configuration: settings that moved:\n" + "\n".join(found))


def validate(config: Config) -> None:
    _check_moved(config)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"  {where}: {err.message}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))


def load(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Effective settings: defaults < file (``path`` or $LOGCLASS_CONFIG) < env < ``overrides``."""
    return Settings.from_dict(load_dict(path, environ, overrides))


def config_path(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file ``load`` reads (``path``, else $LOGCLASS_CONFIG), if any."""
    env = os.environ if environ is None else environ
    file_path = path if path is not None else env.get(_ENV_FILE)
    return Path(file_path) if file_path else None


def load_dict(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """``load``'s merged and validated configuration as plain data (what ``logclass config`` prints)."""
    env = os.environ if environ is None else environ
    config = defaults()
    file_path = path if path is not None else env.get(_ENV_FILE)
    if file_path:
        config = _merge(config, _read_file(Path(file_path)))
    config = _merge(config, env_overrides(env))
    if overrides:
        config = _merge(config, overrides)
    validate(config)
    return config


def redacted(config: Settings | Mapping[str, Any]) -> Config:
    """Plain data safe to print or log: secrets replaced by a marker."""
    out = config.to_dict() if isinstance(config, Settings) else copy.deepcopy(dict(config))
    relay = out.get("relay") or {}
    relay_auth = relay.get("auth") or {}
    secrets: list[tuple[Any, str]] = [
        (out.get("server", {}).get("auth"), "token"),
        (out.get("llm", {}).get("server"), "api_key"),
        (relay_auth, "shared_key"),
    ]
    secrets += [(user, "password") for user in relay_auth.get("users") or []]
    secrets += [(up, key) for up in relay.get("upstreams") or [] for key in ("shared_key", "password")]
    for section, key in secrets:
        if section and section.get(key):
            section[key] = "<redacted>"
    store = out.get("store") or {}
    if store.get("url"):
        store["url"] = redacted_url(store["url"])
    return out


def redacted_url(url: str) -> str:
    """``url`` with any user and password replaced by a marker (``redis://<redacted>@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://<redacted>@{rest.split('@', 1)[1]}"
