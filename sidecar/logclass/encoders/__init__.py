"""Sentence encoders: one contract (``Encoder``), three backends, chosen per device and bundle.

- ``torch``: sentence-transformers, fp32 on CPU, fp16 on CUDA.
- ``onnx``: ONNX Runtime with fused attention, fp32 on CPU, fp16 on CUDA.
- ``onnx-int8``: ONNX Runtime with dynamically quantised int8 weights, CPU only.

``torch`` and ``onnx`` give the same embeddings (cosine > 0.9999); ``onnx-int8`` gives slightly
different ones (about 0.99), so a classifier head trained on one family must serve on it.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from logclass.encoders.base import Encoder, EncoderOptions
from logclass.encoders.model import (
    BACKENDS,
    MODEL_NAME,
    EncoderError,
    family,
    is_cuda,
    model_folder,
    nvidia_driver_present,
    resolve_batch_size,
    resolve_batch_tokens,
    resolve_device,
    resolve_threads,
    weights_sha256,
)

if TYPE_CHECKING:
    from logclass.config.settings import EmbeddingSettings

__all__ = [
    "BACKENDS",
    "MODEL_NAME",
    "Encoder",
    "EncoderError",
    "EncoderOptions",
    "choose_backend",
    "family",
    "open_encoder",
    "weights_sha256",
]

log = logging.getLogger("logclass.encoders")


def choose_backend(configured: str, device: str, trained_with: str | None) -> str:
    """``configured`` unless it is ``auto``: then the fastest backend of the family the bundle was
    trained with (``trained_with``; None when training), measured by make bench-encoder: int8 on
    a CPU (2.5x torch fp32 at 0.99 cosine), fp16 torch on CUDA, fp32 ONNX Runtime for fp bundles on
    a CPU (1.1x torch)."""
    if configured != "auto":
        return configured
    if trained_with is None:
        return "torch" if is_cuda(device) else "onnx-int8"
    if family(trained_with) == "int8":
        return "onnx-int8"
    return "torch" if is_cuda(device) else "onnx"


def _announce(message: str) -> None:
    # Long-running commands configure logging; one-shot ones (classify, train) print to stderr.
    if logging.getLogger().handlers:
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


def _runs_int8(settings: EmbeddingSettings, trained_with: str | None) -> bool:
    return settings.backend == "onnx-int8" or (
        settings.backend == "auto" and trained_with is not None and family(trained_with) == "int8"
    )


def open_encoder(settings: EmbeddingSettings, trained_with: str | None = None) -> Encoder:
    from logclass.encoders.onnx_backend import OnnxEncoder, OnnxInt8Encoder

    path = model_folder(settings.model_path)
    # int8 runs on the CPU whatever the machine: with device auto, no need to ask torch (seconds
    # of start-up) whether there is a GPU; the driver's presence is enough to say what is lost.
    int8_auto = _runs_int8(settings, trained_with) and settings.device == "auto"
    device = "cpu" if int8_auto else resolve_device(settings.device)
    backend = choose_backend(settings.backend, device, trained_with)
    if int8_auto and nvidia_driver_present():
        if trained_with is not None and family(trained_with) == "int8":
            why = "the model bundle was trained on onnx-int8 embeddings, which run"
            fix = "retrain with embedding.backend: torch to encode on the GPU"
        else:
            why = "embedding.backend is onnx-int8, which runs"
            fix = "set embedding.backend: auto or torch to encode on the GPU"
        log.warning(f"{why} on the CPU only: encoding on the CPU although CUDA is available; {fix}")
    options = EncoderOptions(
        model_path=path,
        device=device,
        batch_size=resolve_batch_size(settings.batch_size, device),
        batch_tokens=resolve_batch_tokens(settings.batch_tokens, device),
        max_seq_length=settings.max_seq_length,
        threads=resolve_threads(settings.threads),
    )
    if backend == "torch":
        from logclass.encoders.torch_backend import TorchEncoder

        return TorchEncoder(options)
    cls = OnnxInt8Encoder if backend == "onnx-int8" else OnnxEncoder
    return cls(options, cache_dir=settings.cache_dir, log=_announce)
