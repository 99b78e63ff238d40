"""Feature vectors for the trained head: sentence embeddings, hashed n-grams, or both.

Lexical features hash word and character n-grams of the template (numbers, ids and paths
already masked), so they need no vocabulary: the same text gives the same vector in training
and at run time, and a bundle stores nothing but the head's weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from logclass.core.head import Matrix
from logclass.core.manifest import FeatureSpec
from logclass.encoders import Encoder
from logclass.errors import LogclassError

_HALF = 1.0 / np.sqrt(2.0)


class FeatureError(LogclassError):
    pass


class Featurizer:
    def __init__(self, spec: FeatureSpec, encoder: Encoder | None) -> None:
        if spec.uses_embedding and encoder is None:
            raise FeatureError(f"features {spec.kind!r} need the sentence encoder")
        self.spec = spec
        self.encoder = encoder if spec.uses_embedding else None
        self._word = self._char = None
        if spec.uses_lexical:
            from sklearn.feature_extraction.text import HashingVectorizer

            def vectorizer(analyzer: str, ngrams: tuple[int, int]) -> HashingVectorizer:
                return HashingVectorizer(
                    n_features=spec.lexical_features,
                    analyzer=analyzer,
                    ngram_range=ngrams,
                    alternate_sign=False,
                    norm="l2",
                    dtype=np.float32,
                )

            self._word = vectorizer("word", spec.word_ngrams)
            self._char = vectorizer("char_wb", spec.char_ngrams)

    @property
    def dimension(self) -> int:
        dims = 0
        if self.encoder is not None:
            dims += self.encoder.dimension
        if self.spec.uses_lexical:
            dims += 2 * self.spec.lexical_features
        return dims

    def lexical(self, templates: Sequence[str]) -> sp.csr_matrix:
        assert self._word is not None and self._char is not None
        blocks = [self._word.transform(templates), self._char.transform(templates)]
        return sp.csr_matrix(sp.hstack(blocks, format="csr") * _HALF)

    def transform(self, messages: Sequence[str], templates: Sequence[str], progress: bool = False) -> Matrix:
        """Unit-length rows: the embedding of each message and/or the n-grams of its template."""
        embedded = lexical = None
        if self.encoder is not None:
            embedded = np.asarray(self.encoder.encode(list(messages), progress=progress), dtype=np.float32)
        if self.spec.uses_lexical:
            lexical = self.lexical(templates)
        return combine(self.spec.kind, embedded, lexical)


def combine(kind: str, embedded: np.ndarray | None, lexical: sp.csr_matrix | None) -> Matrix:
    """The feature matrix of ``kind`` from its unit-length blocks; both blocks side by side are
    scaled by 1/sqrt(2), so every row stays unit length and dot products stay cosines."""
    if kind == "embedding" and embedded is not None:
        return embedded
    if kind == "lexical" and lexical is not None:
        return lexical
    if kind == "both" and embedded is not None and lexical is not None:
        return sp.csr_matrix(sp.hstack([sp.csr_matrix(embedded), lexical], format="csr") * _HALF)
    raise FeatureError(f"features {kind!r} need blocks that were not computed")
