"""The wheel as a user meets it: built from the product's folders, installed outside the checkout,
and run from an empty working directory with the defaults (no LOGCLASS_* settings).

The installed copy is put first on PYTHONPATH, ahead of the editable install of the test venv,
and every command checks it was the one imported, so nothing here can read the checkout.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT, SEED_CSV, free_port, wait_serving

# What `pip wheel .` reads: the project metadata and the src folder (sidecar/logclass).
SOURCES = ["pyproject.toml", "README.md", "sidecar"]
PACKAGE = ROOT / "sidecar" / "logclass"


@functools.cache
def http_address() -> str:
    """The HTTP front end's address, picked when the server starts (a port picked at
    import could be taken by another test's server by then)."""
    return f"127.0.0.1:{free_port()}"


LINES = [
    ("BillingSystem", "User 12345 logged in."),
    ("ModernCRM", "IP 192.168.133.114 blocked due to potential attack"),
    ("AnalyticsEngine", "Backup completed successfully."),
]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    site: Path
    workdir: Path
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [str(self.site / "bin" / "logclass"), *args]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _build_wheel(out: Path) -> Path:
    """`pip wheel` of a copy of the sources, so no build/ left in the checkout leaks into it."""
    src = out / "src"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    dist = out / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist)]
    subprocess.run([*pip, str(src)], check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = dist.glob("logclass-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(base)
    site = base / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", str(site)]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    workdir = base / "empty"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGCLASS_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # Relay state and the LLM cache under the test's own home, not the user's.
    env.update(XDG_STATE_HOME=str(base / "state"))
    return Installed(wheel, site, workdir, env)


def _top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {name.split("/", 1)[0] for name in zf.namelist()}


def test_the_only_top_level_package_is_logclass(installed: Installed) -> None:
    names = _top_level(installed.wheel)
    assert {n for n in names if not n.endswith(".dist-info")} == {"logclass"}
    assert len(names) == 2, names


def test_every_package_folder_and_the_default_bundle_are_in_the_wheel(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
    # Package discovery finds every folder with an __init__.py; a folder without one would be missing.
    for module in PACKAGE.rglob("*.py"):
        relative = module.relative_to(PACKAGE).as_posix()
        assert f"logclass/{relative}" in names, f"{relative}: give its folder an __init__.py"
    bundle = {p.name for p in (PACKAGE / "models" / "default").iterdir()}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("logclass/models/default/")} == bundle
    for data in ("logclass/config/defaults.yaml", "logclass/config/schema.json", "logclass/config/rules.yaml"):
        assert data in names
    # The file formats' schemas, for editors and checks outside logclass.
    for schema in ("manifest", "rules", "labels"):
        assert f"logclass/core/schemas/{schema}.schema.json" in names
    console = {p.name for p in (PACKAGE / "http" / "console").iterdir()}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("logclass/http/console/")} == console
    assert "logclass/py.typed" in names
    assert not [n for n in names if n.endswith("generate.py")], "stub generation is a build-time tool"
    # Training data stays in the repository: nothing at run time reads it.
    assert not [n for n in names if n.startswith("logclass/training/data/")]


def test_imports_resolve_to_the_installed_copy(installed: Installed) -> None:
    code = (
        "import logclass, logclass.training.train, logclass.models\n"
        "from logclass.engine.pipeline import DEFAULT_BUNDLE\n"
        "print(logclass.__file__); print(logclass.training.train.__file__); print(DEFAULT_BUNDLE)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=installed.workdir, env=installed.env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for path in out.stdout.split():
        assert Path(path).is_relative_to(installed.site), path


def _write_lines(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "log_message"])
        writer.writerows(LINES)


def test_classify_and_report_with_the_defaults(installed: Installed) -> None:
    _write_lines(installed.workdir / "one.csv")
    out = installed.run("classify", "one.csv", "-o", "out.csv")
    assert out.returncode == 0, out.stderr
    with (installed.workdir / "out.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["log_message"] for r in rows] == [m for _, m in LINES]
    assert rows[0]["target_label"] == "User Action"
    assert rows[1]["target_label"] == "Security Alert"
    report = installed.run("report", "out.csv", "-o", "report.html", "--no-progress")
    assert report.returncode == 0, report.stderr
    assert "<html" in (installed.workdir / "report.html").read_text(encoding="utf-8").lower()


def test_train_a_bundle_and_classify_with_it(installed: Installed) -> None:
    with SEED_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Every label of the seed, a few rows each: the user's small CSV, not the shipped one.
    per_label: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        per_label.setdefault(row["target_label"], []).append(row)
    small = [r for group in per_label.values() for r in group[:12]]
    with (installed.workdir / "mine.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(small)
    out = installed.run("train", "mine.csv", "--out", "bundles/mine", "--features", "lexical", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert (installed.workdir / "bundles" / "mine" / "manifest.json").is_file()
    _write_lines(installed.workdir / "two.csv")
    classified = installed.run("classify", "two.csv", "--model", "bundles/mine", "-o", "-")
    assert classified.returncode == 0, classified.stderr
    assert "User Action" in classified.stdout


def test_relay_print_config(installed: Installed) -> None:
    out = installed.run("relay", "--print-config")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["relay"]["listen"] == "127.0.0.1:24224"


@pytest.fixture
def served(installed: Installed) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **installed.env,
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "LOGCLASS_SERVER__HTTP_LISTEN": http_address(),
    }
    proc = subprocess.Popen(
        installed.command("serve", "--listen", address),
        cwd=installed.workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def test_serve_reaches_serving_and_classifies(installed: Installed, served: tuple[str, subprocess.Popen[str]]) -> None:
    address, proc = served
    wait_serving(address, proc, timeout=300)
    _write_lines(installed.workdir / "three.csv")
    out = installed.run("classify", "three.csv", "--server", address, "-o", "-")
    assert out.returncode == 0, out.stderr
    assert "Security Alert" in out.stdout
    # The HTTP front end of the installed copy: its API docs (their proto comments and Swagger
    # UI's files are package data of logclass and fastapi-offline) and the console's files.
    base = f"http://{http_address()}"
    assert "LogClassifier.Classify" in httpx.get(f"{base}/openapi.json", timeout=30).text
    assert "the records to classify" in httpx.get(f"{base}/openapi.json", timeout=30).text.lower()
    for path in ("/", "/docs", "/docs/assets/swagger-ui-bundle.js", "/console/console.js"):
        assert httpx.get(base + path, timeout=30).status_code == 200, path
    upload = httpx.post(
        f"{base}/classify", files={"file": ("three.csv", (installed.workdir / "three.csv").read_bytes())}
    )
    assert upload.status_code == 200 and "Security Alert" in upload.text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    log = proc.stderr.read() if proc.stderr else ""
    # The test venv (the installed dependencies) may live in the checkout; nothing else of it may show.
    outside_venv = [line for line in log.splitlines() if str(ROOT) in line.replace(str(ROOT / ".venv"), "")]
    assert not outside_venv, f"the installed sidecar read the checkout: {outside_venv}"
