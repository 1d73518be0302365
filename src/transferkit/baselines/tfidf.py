"""TF-IDF features of texts: word 1-2-grams and character 2-5-grams (within word boundaries), sublinear term
frequency, each block L2-normalised — the text baseline every transfer route has to beat.

The fitted state is the two vocabularies (JSON lists, index = column) and their idf weights (arrays), so a model
folder rebuilds the exact same matrix without pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transferkit.errors import DataError

#: (analyzer, n-gram range, max terms) of each block
BLOCKS = (("word", (1, 2), 200_000), ("char_wb", (2, 5), 200_000))


def _vectorizer(analyzer: str, ngrams: tuple[int, int], max_features: int | None, vocabulary: list[str] | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, lowercase=True,
                           strip_accents="unicode", dtype=np.float32,
                           max_features=None if vocabulary is not None else max_features, vocabulary=vocabulary)


def _texts(items: Sequence[Any]) -> list[str]:
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise DataError(f"item {i} is a {type(t).__name__}, not a text: the TF-IDF baseline reads strings")
        out.append(t)
    return out


class TfidfFeatures:
    """Texts -> a sparse (N, D) matrix: the blocks of `BLOCKS` side by side."""

    def __init__(self, vectorizers: list | None = None) -> None:
        self.vectorizers = vectorizers or []

    def fit(self, items: Sequence[Any]) -> TfidfFeatures:
        texts = _texts(items)
        self.vectorizers = [_vectorizer(a, n, m).fit(texts) for a, n, m in BLOCKS]
        return self

    @property
    def dim(self) -> int:
        return sum(len(v.vocabulary_) for v in self.vectorizers)

    def transform(self, items: Sequence[Any]):
        import scipy.sparse as sp

        texts = _texts(items)
        return sp.hstack([v.transform(texts) for v in self.vectorizers], format="csr")

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON document): idf weights per block, and the blocks' settings and vocabularies."""
        arrays, blocks = {}, []
        for i, ((analyzer, ngrams, _), v) in enumerate(zip(BLOCKS, self.vectorizers, strict=True)):
            arrays[f"idf{i}"] = np.asarray(v.idf_, dtype=np.float64)
            blocks.append({"analyzer": analyzer, "ngram_range": list(ngrams),
                           "vocabulary": v.get_feature_names_out().tolist()})
        return arrays, {"featurizer": "tfidf", "sublinear_tf": True, "blocks": blocks}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], doc: dict) -> TfidfFeatures:
        vecs = []
        for i, b in enumerate(doc["blocks"]):
            v = _vectorizer(b["analyzer"], tuple(b["ngram_range"]), None, vocabulary=list(b["vocabulary"]))
            v.idf_ = np.asarray(arrays[f"idf{i}"], dtype=np.float64)
            vecs.append(v)
        return cls(vecs)
