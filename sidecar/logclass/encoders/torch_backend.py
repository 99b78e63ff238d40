"""sentence-transformers on torch: fp32 on CPU, fp16 on CUDA. Any model folder it can load."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from logclass.encoders.base import Encoder, EncoderOptions
from logclass.encoders.model import EncoderError, is_cuda


class TorchEncoder(Encoder):
    backend: ClassVar[str] = "torch"

    def __init__(self, options: EncoderOptions) -> None:
        super().__init__(options)
        model_path, device, threads = options.model_path, options.device, options.threads
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        # Weight-loading bars would interleave with our own output on every start.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        # Process-wide in torch; the encoder is its only user.
        torch.set_num_threads(threads)
        model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        model.max_seq_length = options.max_seq_length
        if is_cuda(device):
            model = model.half()
            self.precision = "fp16"
        self.model: Any = model.eval()
        self._types = "token_type_ids" in model.tokenizer.model_input_names
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dimension = get_dim()
        if dimension is None:
            raise EncoderError(f"{model_path} does not declare its embedding dimension")
        self.dimension = int(dimension)

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = {
                "input_ids": torch.from_numpy(ids).to(self.device),
                "attention_mask": torch.from_numpy(mask).to(self.device),
            }
            if self._types:
                features["token_type_ids"] = torch.zeros_like(features["input_ids"])
            vectors = self.model(features)["sentence_embedding"].float()
            vectors = torch.nn.functional.normalize(vectors, p=2.0, dim=1)
            return np.asarray(vectors.cpu().numpy(), dtype=np.float32)
