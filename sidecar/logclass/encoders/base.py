"""The encoder contract: texts in, unit-length float32 rows out, in batches planned by tokens.

Tokenisation is shared by every backend (the model folder's fast tokenizer), so backends differ
only in how a padded batch becomes vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from logclass.encoders.batching import pad, plan_batches
from logclass.encoders.model import EncoderError, usable_cores

# Texts tokenised at a time: enough to sort into well-filled buckets, few enough that the next
# chunk's tokenisation overlaps this chunk's forward passes.
TOKENIZE_CHUNK = 4096


def load_tokenizer(model_path: Path, max_seq_length: int) -> Any:
    from tokenizers import Tokenizer

    path = model_path / "tokenizer.json"
    if not path.is_file():
        raise EncoderError(
            f"{model_path} has no tokenizer.json (a fast tokenizer); save the model with "
            "sentence-transformers >= 3 or transformers' fast tokenizer"
        )
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    return tokenizer


def _pad_id(tokenizer: Any) -> int:
    for token in ("[PAD]", "<pad>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0  # masked out either way


# Numbers the encoder computes in; also the name of an ONNX export's variant.
Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class EncoderOptions:
    """What every backend is opened with, resolved for this machine (no ``auto`` left)."""

    model_path: Path
    device: str
    batch_size: int
    batch_tokens: int
    max_seq_length: int
    threads: int


class Encoder(ABC):
    """Batched sentence encoder. ``encode`` tokenises, sorts by length and runs forward passes of
    at most ``batch_size`` texts and ``batch_tokens`` padded tokens, so padding is paid per
    length bucket and a burst of long lines does not blow up one pass."""

    backend: ClassVar[str]

    def __init__(self, options: EncoderOptions) -> None:
        self.model_path = options.model_path
        self.device = options.device
        self.batch_size = options.batch_size
        self.batch_tokens = options.batch_tokens
        self.max_seq_length = options.max_seq_length
        self.threads = options.threads
        self.precision: Precision = "fp32"
        self.dimension = 0
        self._tokenizer = load_tokenizer(options.model_path, options.max_seq_length)
        self._pad_id = _pad_id(self._tokenizer)
        # A spare core tokenises the next chunk while this one runs; without one it would only
        # take time from the forward passes.
        spare = usable_cores() > options.threads
        self._tokenize_pool = ThreadPoolExecutor(1, thread_name_prefix="tokenize") if spare else None

    @property
    def name(self) -> str:
        """How model info and logs describe it, e.g. ``onnx-int8/int8 on cpu``, ``torch/fp16 on cuda``."""
        return f"{self.backend}/{self.precision} on {self.device}"

    @abstractmethod
    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Unit-length float32 rows for one padded batch of token ids."""

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def _chunks(self, texts: Sequence[str]) -> Iterator[tuple[int, list[list[int]]]]:
        starts = range(0, len(texts), TOKENIZE_CHUNK)
        if self._tokenize_pool is None:
            for start in starts:
                yield start, self.tokenize(texts[start : start + TOKENIZE_CHUNK])
            return
        ahead: Future[list[list[int]]] | None = None
        for index, start in enumerate(starts):
            current = ahead.result() if ahead is not None else self.tokenize(texts[start : start + TOKENIZE_CHUNK])
            following = start + TOKENIZE_CHUNK
            ahead = (
                self._tokenize_pool.submit(self.tokenize, texts[following : following + TOKENIZE_CHUNK])
                if index + 1 < len(starts)
                else None
            )
            yield start, current

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        from tqdm import tqdm

        with tqdm(total=len(texts), desc="encoding", unit="text", disable=not progress, leave=False) as bar:
            for start, rows in self._chunks(texts):
                for batch in plan_batches([len(r) for r in rows], self.batch_tokens, self.batch_size):
                    ids, mask = pad([rows[i] for i in batch], self._pad_id)
                    out[start + batch] = self.forward(ids, mask)
                    bar.update(len(batch))
        return out

    def close(self) -> None:
        if self._tokenize_pool is not None:
            self._tokenize_pool.shutdown(wait=True)
