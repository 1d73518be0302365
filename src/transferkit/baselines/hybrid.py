"""probe:hybrid for text: the TF-IDF baseline's features and a frozen encoder's embeddings side by side in one
linear model, the weight of the embedding block chosen on validation with the classifier's C.

Each embedding is L2-normalised and multiplied by `scale`, so the block weighs about as much as one TF-IDF block
at scale 1 (every TF-IDF block is L2-normalised too); scale trades the encoder's view against the n-grams'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transferkit.baselines.tfidf import TfidfFeatures

SCALES = (0.5, 1.0, 2.0, 4.0)


def _normalised(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, dtype=np.float32)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


class HybridFeatures:
    """Texts -> [TF-IDF blocks | scale * normalised embeddings] as one sparse matrix."""

    def __init__(self, tfidf: TfidfFeatures, scale: float, backbone: Any = None, precision: str = "fp32") -> None:
        self.tfidf, self.scale, self.backbone, self.precision = tfidf, float(scale), backbone, precision

    @property
    def dim(self) -> int:
        return self.tfidf.dim + (self.backbone.feature_dim if self.backbone is not None else 0)

    def combine(self, X_tfidf: Any, embeddings: np.ndarray) -> Any:
        """The hybrid rows from TF-IDF rows and the same items' embeddings (as extraction computed them)."""
        import scipy.sparse as sp

        return sp.hstack([X_tfidf, sp.csr_matrix(_normalised(embeddings) * self.scale)], format="csr")

    def transform(self, items: Sequence[Any]) -> Any:
        from transferkit.features.extract import embed_items

        if self.backbone is None:
            raise RuntimeError("a hybrid featurizer without its backbone can only combine given embeddings")
        return self.combine(self.tfidf.transform(items), embed_items(self.backbone, list(items),
                                                                     precision=self.precision))

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, doc = self.tfidf.state()
        return arrays, {"featurizer": "hybrid", "scale": self.scale, "tfidf": doc}
