"""k-nearest-neighbour head (classifier or regressor): k, metric and scaling chosen on validation.

Distances are brute force (exact, deterministic). For the grid, neighbours are found once per
(metric, scaling) with the largest k and every smaller k reuses the first columns, so the grid costs
about one query per (metric, scaling). The saved head stores the training features and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors

from transferkit.heads.base import GridResult, best_index, c_array, checked_input, fit_standardizer, standardize
from transferkit.heads.metrics import primary_score

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 7, 11, 15, 21)
METRICS: tuple[str, ...] = ("cosine", "euclidean")


def _combine(neighbour_targets: np.ndarray, n_classes: int | None) -> np.ndarray:
    """Regression: mean of neighbour targets. Classification: vote shares per class index (n, n_classes)."""
    if n_classes is None:
        return neighbour_targets.mean(axis=1)
    n, k = neighbour_targets.shape
    counts = np.zeros((n, n_classes))
    np.add.at(counts, (np.repeat(np.arange(n), k), neighbour_targets.ravel()), 1.0)
    return counts / k


class KNNPredictor:
    """Uniform-weight kNN over stored (optionally standardised) training features; ties go to the lower class."""

    kind = "knn"

    def __init__(
        self,
        X_fit: np.ndarray,
        y_fit: np.ndarray,
        k: int,
        metric: str,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        classes: np.ndarray | None = None,
    ) -> None:
        self.X_fit, self.y_fit = c_array(X_fit), c_array(y_fit)
        self.k, self.metric = int(k), metric
        self.mean, self.scale = c_array(mean), c_array(scale)
        self.classes_ = classes
        self.n_features_in_ = int(self.X_fit.shape[1])
        self._nn = NearestNeighbors(n_neighbors=self.k, algorithm="brute", metric=metric).fit(self.X_fit)

    def _combined(self, X: Any) -> np.ndarray:
        X = standardize(checked_input(X, self.n_features_in_), self.mean, self.scale)
        idx = self._nn.kneighbors(X, return_distance=False)
        return _combine(self.y_fit[idx], None if self.classes_ is None else self.classes_.size)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Share of the k neighbours in each class, columns in ``classes_`` order (classification only)."""
        if self.classes_ is None:
            raise AttributeError("predict_proba is only available for classification")
        return self._combined(X)

    def predict(self, X: Any) -> np.ndarray:
        """Majority class of the k neighbours, or their mean target for regression."""
        out = self._combined(X)
        return out if self.classes_ is None else self.classes_[np.argmax(out, axis=1)]

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Training features and targets (class indices for classification), scaler and classes."""
        arrays = {"X_fit": self.X_fit, "y_fit": self.y_fit}
        if self.mean is not None and self.scale is not None:
            arrays.update(scaler_mean=self.mean, scaler_scale=self.scale)
        if self.classes_ is not None:
            arrays["classes"] = self.classes_
        return arrays, {"k": self.k, "metric": self.metric}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> KNNPredictor:
        """Rebuild from :meth:`state` output."""
        return cls(
            arrays["X_fit"],
            arrays["y_fit"],
            int(meta["k"]),
            str(meta["metric"]),
            arrays.get("scaler_mean"),
            arrays.get("scaler_scale"),
            arrays.get("classes"),
        )


def fit_knn(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    task: str,
    seed: int,
    ks: Sequence[int] = DEFAULT_KS,
    metrics: Sequence[str] = METRICS,
    scalings: Sequence[bool] = (False, True),
) -> GridResult:
    """Head family ``knn``: k x metric x (raw | standardised) by validation score; larger k wins ties."""
    del seed  # brute-force kNN is deterministic
    classes = np.unique(y_train) if task == "classification" else None
    targets = np.searchsorted(classes, y_train) if classes is not None else y_train
    n_classes = None if classes is None else classes.size
    ks_desc = sorted({min(int(k), X_train.shape[0]) for k in ks}, reverse=True)
    grid, scores = [], []
    for scaled in scalings:
        mean, scale = fit_standardizer(X_train) if scaled else (None, None)
        Xtr, Xva = standardize(X_train, mean, scale), standardize(X_val, mean, scale)
        for metric in metrics:
            nn = NearestNeighbors(n_neighbors=ks_desc[0], algorithm="brute", metric=metric).fit(Xtr)
            idx = nn.kneighbors(Xva, return_distance=False)
            for k in ks_desc:
                out = _combine(targets[idx[:, :k]], n_classes)
                pred = out if classes is None else classes[np.argmax(out, axis=1)]
                grid.append((k, metric, scaled, mean, scale, Xtr))
                scores.append(primary_score(task, y_val, pred))
    i = best_index(scores)
    k, metric, scaled, mean, scale, Xtr = grid[i]
    predictor = KNNPredictor(Xtr, targets, k, metric, mean, scale, classes)
    val_scores = [
        {"params": {"k": g[0], "metric": g[1], "standardize": g[2]}, "score": s}
        for g, s in zip(grid, scores, strict=True)
    ]
    return GridResult(predictor, {"k": k, "metric": metric, "standardize": scaled}, val_scores, scores[i])
