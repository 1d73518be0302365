"""scikit-learn estimators over transferkit: thin wrappers that call the same library functions a user would."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from transferkit.backbones import Backbone, load_backbone
from transferkit.data.dataset import Dataset
from transferkit.errors import DataError
from transferkit.features import FeatureStore, extract_features


@lru_cache(maxsize=4)
def _cached_backbone(spec: str, pretrained: bool, pooling: str, image_size: int | None, device: str) -> Backbone:
    """Clones made by GridSearchCV share one loaded model instead of loading it again."""
    return load_backbone(spec, pretrained=pretrained, pooling=pooling, image_size=image_size, device=device)


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """A frozen pretrained backbone as a scikit-learn transformer: raw items in, (N, D) features out.

    X is a list/array of images (paths, H×W(×C) arrays, PIL images) or of strings, as the backbone
    expects. Features go through the feature store (`cache=True`), so transforming the same data again
    — in a grid search, say — runs no model work.

    >>> make_pipeline(FeatureExtractor("effnet:lite0"), LogisticRegression()).fit(images, labels)
    """

    def __init__(self, backbone: Any = "effnet:lite0", *, pooling: str = "default", image_size: int | None = None,
                 pretrained: bool = True, batch_size: int = 64, precision: str = "auto", cache: bool = True,
                 cache_dir: str | None = None, device: str = "cpu", progress: bool = False) -> None:
        self.backbone = backbone
        self.pooling = pooling
        self.image_size = image_size
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.precision = precision
        self.cache = cache
        self.cache_dir = cache_dir
        self.device = device
        self.progress = progress

    def _load(self) -> Backbone:
        if isinstance(self.backbone, str):
            return _cached_backbone(self.backbone, self.pretrained, self.pooling, self.image_size, self.device)
        return load_backbone(self.backbone, pretrained=self.pretrained, pooling=self.pooling,
                             image_size=self.image_size, device=self.device)

    def fit(self, X: Any = None, y: Any = None) -> FeatureExtractor:
        """Load the backbone (nothing is learned: the backbone stays frozen)."""
        self.backbone_ = self._load()
        self.n_features_out_ = self.backbone_.feature_dim
        return self

    def _dataset(self, X: Any) -> Dataset:
        if len(X) == 0:
            raise DataError("FeatureExtractor.transform got no items: pass a list of images or strings")
        numeric = isinstance(X, np.ndarray) and X.dtype != object  # an (N, H, W[, C]) stack stays one array
        items = X if numeric else list(X)
        if self.backbone_.modality == "image" and not numeric:
            items = [Path(x) if isinstance(x, str) else x for x in items]
        return Dataset(items, None, (), self.backbone_.modality, name="sklearn-input")

    def transform(self, X: Any) -> np.ndarray:
        """(N, D) float32 features of the items in X."""
        check_is_fitted(self, "backbone_")
        data = self._dataset(X)
        if not self.cache:
            return self.backbone_.embed(data.items, batch_size=self.batch_size)
        store = FeatureStore(Path(self.cache_dir) / "features" if self.cache_dir else None)
        fs = extract_features(self.backbone_, data, store=store, batch_size=self.batch_size,
                              precision=self.precision, progress=self.progress)
        return fs.features()

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names f0..f{D-1} (for pandas output in pipelines)."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"f{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):  # noqa: D105 — raw items (strings, images) are valid input, not only numbers
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags
