"""ONNX Runtime: fp32 or dynamic int8 on CPU, fp16 through the CUDA execution provider."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from logclass.encoders.base import Encoder, EncoderOptions
from logclass.encoders.export import Variant, ensure_export
from logclass.encoders.model import EncoderError, is_cuda

_CUDA = "CUDAExecutionProvider"


def _providers(device: str) -> list[Any]:
    """Execution providers for ``device``; checked before any export is made, so a missing
    onnxruntime-gpu is reported at once instead of after exporting an fp16 model for it."""
    import onnxruntime as ort

    if not is_cuda(device):
        return ["CPUExecutionProvider"]
    if _CUDA not in ort.get_available_providers():
        raise EncoderError(
            "embedding.backend onnx on CUDA needs onnxruntime-gpu (pip install onnxruntime-gpu); "
            "or use embedding.backend: torch"
        )
    index = int(device.partition(":")[2] or 0)
    return [(_CUDA, {"device_id": index}), "CPUExecutionProvider"]


def _session(path: Path, providers: list[Any], threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One model, one batch at a time: parallelism lives inside each operator.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about fused ops' shape inference are noise here
    return ort.InferenceSession(str(path), options, providers=providers)


class OnnxEncoder(Encoder):
    backend: ClassVar[str] = "onnx"
    variant_on_cpu: ClassVar[Variant] = "fp32"
    cpu_only: ClassVar[bool] = False
    one_text_per_pass: ClassVar[bool] = False

    def __init__(self, options: EncoderOptions, cache_dir: str | None, log: Callable[[str], object] = print) -> None:
        if self.cpu_only and is_cuda(options.device):
            raise EncoderError(
                f"embedding.backend {self.backend} runs on the CPU only (dynamic int8 has no fast CUDA kernels); "
                "set embedding.device: cpu, or use onnx or torch on CUDA with a bundle trained for them"
            )
        if self.one_text_per_pass:
            options = dataclasses.replace(options, batch_size=1)
        super().__init__(options)
        self.precision = "fp16" if is_cuda(options.device) else self.variant_on_cpu
        providers = _providers(options.device)
        self.onnx_path = ensure_export(options.model_path, self.precision, cache_dir, log)
        self._session = _session(self.onnx_path, providers, options.threads)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.dimension = int(self.forward(*_sample()).shape[1])

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        (vectors,) = self._session.run(None, {name: feed[name] for name in self._inputs})
        return np.asarray(vectors, dtype=np.float32)


class OnnxInt8Encoder(OnnxEncoder):
    backend: ClassVar[str] = "onnx-int8"
    variant_on_cpu: ClassVar[Variant] = "int8"
    cpu_only: ClassVar[bool] = True
    # Dynamic quantisation scales each pass's activations by that pass's range, so texts
    # batched together change each other's embeddings (mean cosine 0.991 between batchings,
    # as far apart as int8 is from fp32), and a label would depend on a record's neighbours.
    # One text per pass makes every embedding the same wherever it is computed, and costs
    # nothing on a CPU: 107 texts/s against 109 at 32 per pass (2 cores).
    one_text_per_pass: ClassVar[bool] = True


def _sample() -> tuple[np.ndarray, np.ndarray]:
    # [CLS] x [SEP] in BERT's vocabulary; any ids below the vocabulary size do for the shape.
    return np.array([[101, 1037, 102]], dtype=np.int64), np.ones((1, 3), dtype=np.int64)
