"""One error hierarchy: errors raised on purpose are LogclassErrors, shown as one line with exit
code 2; anything else is a bug and leaves `logclass` with its traceback."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from logclass import cli
from logclass import config as config_mod
from logclass.client import ClassifierClient
from logclass.errors import LogclassError
from tests.conftest import ROOT

# Generated gRPC stubs are not ours to change.
_GENERATED = "logclass.api.logclass"


def _module_names() -> list[str]:
    names = []
    for folder, package in ((ROOT / "sidecar" / "logclass", "logclass"),):
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            name = ".".join([package, *parts])
            if not name.startswith(_GENERATED):
                names.append(name)
    return names


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _module_names():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            # Private classes are control-flow signals that never leave their module; were one to
            # escape, it is a bug and must not be printed as a user error.
            if value.__module__ == name and issubclass(value, BaseException) and not value.__name__.startswith("_"):
                found.append(value)
    return found


def test_the_walk_finds_the_known_errors() -> None:
    names = {cls.__name__ for cls in _exception_classes()}
    assert {"CliError", "ConfigError", "BundleError", "TrainError", "BufferWriteError", "LlmUnavailable"} <= names


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_error_is_a_logclass_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, LogclassError), f"{cls.__module__}.{cls.__name__}: derive it from LogclassError"


def test_errors_module_imports_nothing_of_the_project() -> None:
    # Every layer imports it, so it must sit below all of them.
    text = (ROOT / "sidecar" / "logclass" / "errors.py").read_text(encoding="utf-8")
    assert "import logclass" not in text and "from logclass" not in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["report", "in.csv", "--templates", "0"], "--templates and --examples must be at least 1"),
        (["config", "--config", "no-such-config.yaml"], "cannot read config file no-such-config.yaml"),
        (["relay", "--upstream", ":24224", "--print-config"], "the host is missing"),
        (
            ["train", "training/data/seed_test.csv", "--out", "unused", "--memory-min-purity", "2"],
            "--memory-min-purity must be in (0, 1]",
        ),
        (["serve", "--listen", "127.0.0.1:99999", "--llm-backend", "none"], "is not HOST:PORT"),
    ],
)
def test_a_user_error_is_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"logclass {argv[0]}: error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("bug", [ValueError("boom"), ZeroDivisionError("boom"), RuntimeError("boom")])
def test_a_bug_is_not_a_usage_error(bug: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cfg: config_mod.Config) -> config_mod.Config:
        raise bug

    monkeypatch.setattr(config_mod, "redacted", broken)
    with pytest.raises(type(bug), match="boom"):
        cli.main(["config"])


def test_a_bug_crashes_the_command_with_its_traceback(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from logclass import cli, config\n"
        "def broken(cfg):\n"
        "    raise ValueError('boom: a bug, not a usage error')\n"
        "config.redacted = broken\n"
        "sys.exit(cli.main(['config']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: boom: a bug" in result.stderr


def test_a_config_file_that_is_not_utf8_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # UnicodeDecodeError is a ValueError, which the CLI no longer turns into a usage error.
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("router:\n  fallback_label: Non classé\n".encode("latin-1"))
    assert cli.main(["config", "--config", str(latin1)]) == cli.EXIT_USAGE
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_an_unknown_encoding_is_refused_before_any_file_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["classify", "no-such.csv", "--encoding", "no-such-codec"])
    assert exit_.value.code == cli.EXIT_USAGE
    assert "unknown encoding 'no-such-codec'" in capsys.readouterr().err


class _Refused(grpc.RpcError):
    """What a sidecar with server.auth answers a call without a token."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAUTHENTICATED

    def details(self) -> str:
        return "missing bearer token"


def test_a_sidecar_that_refuses_the_call_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: ClassifierClient, records: object) -> list[object]:
        raise _Refused()

    monkeypatch.setattr(ClassifierClient, "classify", refused)
    rows = tmp_path / "in.csv"
    rows.write_text("source,log_message\nbilling,User 12345 logged in.\n", encoding="utf-8")
    argv = ["classify", str(rows), "--server", "127.0.0.1:1", "-o", str(tmp_path / "out.csv"), "--no-progress"]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--server 127.0.0.1:1: UNAUTHENTICATED (missing bearer token)" in err and "Traceback" not in err
