"""Linear heads fitted over a feature store shard by shard: memory bounded by one shard, not by the data.

Ridge needs only the d x d Gram matrix and X^T Y of the standardised training rows, so it is solved exactly
(the solution of `linear.fit_ridge` in memory, up to rounding) from two passes over the shards: the column
means, then the centred products. Validation and test rows are scored the same way, shard by shard. Nothing
here calls `FeatureSet.features()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from transferkit.errors import HeadError
from transferkit.features.store import FeatureSet
from transferkit.heads.base import GridResult, best_index
from transferkit.heads.linear import DEFAULT_ALPHAS, LinearPredictor, _targets
from transferkit.heads.metrics import primary_score, score_all


class ShardRows:
    """Rows `rows` of feature set `fs`, read in store order one shard at a time (as float64)."""

    def __init__(self, fs: FeatureSet, rows: Sequence[int] | np.ndarray) -> None:
        self.fs = fs
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        if self.rows.size and (self.rows[0] < 0 or self.rows[-1] >= fs.n_items):
            raise HeadError(f"row indices must lie in [0, {fs.n_items}) for {fs.path}")

    def __len__(self) -> int:
        return int(self.rows.size)

    def chunks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """(positions in `self.rows`, their features) per shard that holds any of the rows."""
        for i in range(self.fs.meta["n_shards"]):
            lo, hi = self.fs.shard_bounds(i)
            a, b = np.searchsorted(self.rows, [lo, hi])
            if a == b:
                continue
            yield slice(int(a), int(b)), self.fs.read_shard(i)[self.rows[a:b] - lo].astype(np.float64)


def predict_rows(predictor: LinearPredictor, rows: ShardRows) -> np.ndarray:
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


def evaluate_rows(predictor: LinearPredictor, fs: FeatureSet, rows: Sequence[int] | np.ndarray,
                  task: str) -> dict[str, float]:
    """Every score of the task on the rows `rows` of `fs`, scored one shard at a time."""
    where = ShardRows(fs, rows)
    return score_all(task, fs.labels()[where.rows], predict_rows(predictor, where))
