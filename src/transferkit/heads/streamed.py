"""Linear heads fitted over a feature store shard by shard: memory bounded by one shard, not by the data.

Ridge needs only the d x d Gram matrix and X^T Y of the standardised training rows, so it is solved exactly
(the solution of `linear.fit_ridge` in memory, up to rounding) from two passes over the shards: the column
means, then the centred products. Logistic regression runs the in-memory probe's L-BFGS path (`softmax.SoftmaxPath`,
the same objective, warm starts and C search) with its loss and gradient summed shard by shard: one pass over the
training shards per evaluation, fewer when `cache_bytes` lets it keep the first shards' prepared rows. Validation and
test rows are scored the same way, shard by shard. Nothing here calls `FeatureSet.features()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from transferkit.errors import HeadError
from transferkit.features.store import FeatureSet
from transferkit.heads.base import GridResult, best_index, c_array, standardize
from transferkit.heads.linear import DEFAULT_ALPHAS, LinearPredictor, _targets
from transferkit.heads.logreg import LogisticProbe, grid_result
from transferkit.heads.metrics import primary_score, score_all
from transferkit.heads.softmax import SoftmaxFit, SoftmaxPath, softmax_scores
from transferkit.heads.validate import check_two_classes


class ShardRows:
    """Rows `rows` of feature set `fs`, read in store order one shard at a time (as float64)."""

    def __init__(self, fs: FeatureSet, rows: Sequence[int] | np.ndarray) -> None:
        self.fs = fs
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        if self.rows.size and (self.rows[0] < 0 or self.rows[-1] >= fs.n_items):
            raise HeadError(f"row indices must lie in [0, {fs.n_items}) for {fs.path}")

    def __len__(self) -> int:
        return int(self.rows.size)

    def chunks(self, skip: int = 0) -> Iterator[tuple[slice, np.ndarray]]:
        """(positions in `self.rows`, their features) per shard that holds any of the rows; the first `skip` such
        shards are not read."""
        for i in range(self.fs.meta["n_shards"]):
            lo, hi = self.fs.shard_bounds(i)
            a, b = np.searchsorted(self.rows, [lo, hi])
            if a == b:
                continue
            if skip:
                skip -= 1
                continue
            yield slice(int(a), int(b)), self.fs.read_shard(i)[self.rows[a:b] - lo].astype(np.float64)

    def standardizer(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, scale, active columns) of the rows, as `base.fit_standardizer` gives them in memory (population
        std, scale 1 where a column is constant), from two passes; active: the columns not constant on the rows."""
        d = self.fs.feature_dim
        mean, sq, active = np.zeros(d), np.zeros(d), np.zeros(d, bool)
        for _, X in self.chunks():
            mean += X.sum(axis=0)
        mean /= len(self)
        for _, X in self.chunks():
            sq += ((X - mean) ** 2).sum(axis=0)
            active |= np.any(X != mean, axis=0)
        scale = np.sqrt(sq / len(self))
        scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
        return mean, scale, np.flatnonzero(active)


class StreamedSoftmaxPath(SoftmaxPath):
    """`SoftmaxPath` over rows of a feature store: each loss and gradient reads the training shards (standardised,
    active columns, in `precision`) instead of a matrix in memory. The prepared rows of the first shards are kept
    while they fit in `cache_bytes`, so only the rest is read again."""

    def __init__(self, rows: ShardRows, y_index: np.ndarray, n_classes: int, mean: np.ndarray, scale: np.ndarray,
                 active: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-4, precision: str = "float32",
                 cache_bytes: int = 0) -> None:
        self._setup(len(rows), rows.fs.feature_dim, active, n_classes, max_iter, tol, precision)
        self.rows, self.y_index, self.mean, self.scale = rows, np.asarray(y_index), mean, scale
        self.cache_bytes = cache_bytes
        self._cached: list[tuple[np.ndarray, np.ndarray]] | None = None

    def _prepared(self, at: slice, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = np.ascontiguousarray(standardize(X, self.mean, self.scale)[:, self.active], dtype=self.dtype)
        return Z, self.y_index[at]

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._cached is not None:
            yield from self._cached
            for at, X in self.rows.chunks(skip=len(self._cached)):
                yield self._prepared(at, X)
            return
        cached: list[tuple[np.ndarray, np.ndarray]] = []
        used, full = 0, False
        for at, X in self.rows.chunks():
            block = self._prepared(at, X)
            if not full and used + block[0].nbytes <= self.cache_bytes:
                cached.append(block)
                used += block[0].nbytes
            else:
                full = True
            yield block
        self._cached = cached


def predict_rows(predictor: Any, rows: ShardRows) -> np.ndarray:
    """The predictor's predictions for `rows`, in the order of `rows.rows`, computed one shard at a time."""
    parts = [predictor.predict(X) for _, X in rows.chunks()]
    return np.concatenate(parts) if parts else np.empty(0)


def fit_ridge_streamed(fs: FeatureSet, train: Sequence[int] | np.ndarray, val: Sequence[int] | np.ndarray,
                       task: str, alphas: Sequence[float] = DEFAULT_ALPHAS) -> GridResult:
    """Head family ``ridge`` on the rows `train` of `fs`, alpha chosen on the rows `val`, without loading the
    features: peak memory is one shard plus d x d (and d x outputs) float64 arrays."""
    y = fs.labels()
    if y is None:
        raise HeadError(f"{fs.path} holds unlabelled features: a ridge head needs labels")
    tr, va = ShardRows(fs, train), ShardRows(fs, val)
    if len(tr) < 2 or not len(va):
        raise HeadError(f"ridge needs at least 2 training rows and 1 validation row (got {len(tr)} and {len(va)})")
    d = fs.feature_dim
    Y, classes = _targets(y[tr.rows], task)
    y_mean = Y.mean(axis=0)
    mean = np.zeros(d)
    for _, X in tr.chunks():
        mean += X.sum(axis=0)
    mean /= len(tr)
    gram, cross = np.zeros((d, d)), np.zeros((d, Y.shape[1]))
    for at, X in tr.chunks():
        Xc = X - mean
        gram += Xc.T @ Xc
        cross += Xc.T @ (Y[at] - y_mean)
    scale = np.sqrt(np.clip(np.diag(gram), 0.0, None) / len(tr))  # the population std, as fit_standardizer's
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
    evals, Q = np.linalg.eigh(gram / np.outer(scale, scale))
    proj = Q.T @ (cross / scale[:, None])
    evals = np.clip(evals, 0.0, None)
    order = sorted(alphas, reverse=True)  # larger alpha first: it wins ties (simpler model)
    preds = [LinearPredictor(mean, scale, (Q @ (proj / (evals + a)[:, None])).T, y_mean, classes) for a in order]
    y_val = y[va.rows]
    scores = [primary_score(task, y_val, predict_rows(p, va)) for p in preds]
    i = best_index(scores)
    val_scores = [{"params": {"alpha": float(a)}, "score": s} for a, s in zip(order, scores, strict=True)]
    return GridResult(preds[i], {"alpha": float(order[i])}, val_scores, scores[i])


def fit_logreg_streamed(fs: FeatureSet, train: Sequence[int] | np.ndarray, val: Sequence[int] | np.ndarray,
                        seed: int = 0, *, cache_bytes: int = 0, Cs: Sequence[float] | None = None,
                        refine_steps: int = 3, precision: str = "float32") -> GridResult:
    """Head family ``logreg`` on the rows `train` of `fs`, C chosen on the rows `val` (the probe's grid and
    refinement), without loading the features: memory is one shard plus what `cache_bytes` allows."""
    y = fs.labels()
    if y is None:
        raise HeadError(f"{fs.path} holds unlabelled features: a logreg head needs labels")
    tr, va = ShardRows(fs, train), ShardRows(fs, val)
    if len(tr) < 2 or not len(va):
        raise HeadError(f"logreg needs at least 2 training rows and 1 validation row (got {len(tr)} and {len(va)})")
    y_tr = y[tr.rows]
    check_two_classes(y_tr, "the training labels")
    probe = LogisticProbe(Cs=Cs, refine_steps=refine_steps, precision=precision, seed=seed)
    probe.classes_, probe.n_features_in_ = np.unique(y_tr), fs.feature_dim
    mean, scale, active = tr.standardizer()
    probe.scaler_mean_, probe.scaler_scale_ = c_array(mean), c_array(scale)
    path = StreamedSoftmaxPath(tr, np.searchsorted(probe.classes_, y_tr), len(probe.classes_), mean, scale, active,
                               max_iter=probe.max_iter, tol=probe.tol, precision=precision, cache_bytes=cache_bytes)

    def val_scores(fit: SoftmaxFit) -> np.ndarray:
        return np.concatenate([softmax_scores(standardize(X, mean, scale), fit.coef, fit.intercept)
                               for _, X in va.chunks()])

    probe._set_solution(probe.search(path, val_scores, y[va.rows]))
    return grid_result(probe)


def evaluate_rows(predictor: Any, fs: FeatureSet, rows: Sequence[int] | np.ndarray,
                  task: str) -> dict[str, float]:
    """Every score of the task on the rows `rows` of `fs`, scored one shard at a time."""
    where = ShardRows(fs, rows)
    return score_all(task, fs.labels()[where.rows], predict_rows(predictor, where))
