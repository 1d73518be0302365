"""Pixel features of images: each image resized to a small square (at most 32 px, never enlarged past the
training images' own size), grey or colour as the training images are, scaled to [0, 1] and flattened — the
image baseline every transfer route has to beat (a linear model standardises them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_SIZE = 32


class PixelFeatures:
    """Images (paths, arrays, PIL) -> (N, size*size*channels) float32 rows in [0, 1]."""

    def __init__(self, size: int = MAX_SIZE, grey: bool = False) -> None:
        self.size, self.grey = int(size), bool(grey)

    def fit(self, items: Sequence[Any]) -> PixelFeatures:
        from transferkit.backbones.preprocess import to_pil

        look = [to_pil(items[i]) for i in range(min(len(items), 32))]
        self.size = max(4, min(MAX_SIZE, max(max(im.size) for im in look)))
        self.grey = all(_is_grey(np.asarray(im)) for im in look)
        return self

    @property
    def dim(self) -> int:
        return self.size * self.size * (1 if self.grey else 3)

    def one(self, item: Any) -> np.ndarray:
        from PIL import Image

        from transferkit.backbones.preprocess import to_pil

        im = to_pil(item).convert("L" if self.grey else "RGB").resize((self.size, self.size),
                                                                         Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32).reshape(-1) / 255.0

    def transform(self, items: Sequence[Any]) -> np.ndarray:
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for i, item in enumerate(items):
            out[i] = self.one(item)
        return out

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        return {}, {"featurizer": "pixels", "size": self.size, "grey": self.grey}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], doc: dict) -> PixelFeatures:
        return cls(doc["size"], doc["grey"])


def _is_grey(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
