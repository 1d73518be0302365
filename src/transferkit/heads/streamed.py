"""Linear heads fitted over a feature store shard by shard: memory bounded by one shard, not by the data.

Ridge needs only the d x d Gram matrix and X^T Y of the standardised training rows, so it is solved exactly
(the solution of `linear.fit_ridge` in memory, up to rounding) from two passes over the shards: the column
means, then the centred products. Logistic regression runs the in-memory probe's L-BFGS path (`softmax.SoftmaxPath`,
the same objective, warm starts and C search) and the linear SVM LinearSVC's squared-hinge objective in the primal,
both with the loss and gradient summed block by block over `PreparedRows`: the training rows prepared once (the
first blocks kept in memory up to `cache_bytes`, the rest in a temporary file read back for every evaluation).
Validation and test rows are scored shard by shard. Nothing here calls `FeatureSet.features()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from transferkit.errors import HeadError
from transferkit.features.store import FeatureSet
from transferkit.heads.base import GridResult, best_index, c_array, standardize
from transferkit.heads.linear import DEFAULT_ALPHAS, DEFAULT_SVM_CS, LinearPredictor, _targets
from transferkit.heads.logreg import LogisticProbe, grid_result
from transferkit.heads.metrics import primary_score, score_all
from transferkit.heads.softmax import SoftmaxPath, softmax_scores
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

    def chunks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """(positions in `self.rows`, their features) per shard that holds any of the rows."""
        for i in range(self.fs.meta["n_shards"]):
            lo, hi = self.fs.shard_bounds(i)
            a, b = np.searchsorted(self.rows, [lo, hi])
            if a == b:
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


class PreparedRows:
    """The training rows of a feature store prepared once for an iterative solver that passes over them many times:
    the first pass reads the shards and prepares each block (standardised, active columns, in `precision`); the first
    blocks are kept in memory while they fit in `cache_bytes`, the rest are written to a temporary file that later
    passes read back as they are (no decoding, no conversions: the page cache serves them, outside this process's
    memory). Each block comes with its rows of `targets` (class indices)."""

    #: rows read back from the temporary file at once (up to this many bytes): fewer, larger products
    SPILL_READ_BYTES = 32 << 20

    def __init__(self, rows: ShardRows, targets: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                 active: np.ndarray, *, precision: str = "float32", cache_bytes: int = 0) -> None:
        self.rows, self.targets, self.mean, self.scale, self.active = rows, np.asarray(targets), mean, scale, active
        self.dtype, self.cache_bytes = np.dtype(precision), cache_bytes
        self._cached: list[tuple[np.ndarray, np.ndarray]] = []
        self._spilled: list[tuple[int, np.ndarray]] = []  # (rows, targets) of each group of blocks in the file
        self._spill: Any = None
        self._prepared = False

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(Z, targets) blocks covering every row once, in store order."""
        if not self._prepared:
            yield from self._first_pass()
            return
        yield from self._cached
        if self._spilled:
            width = self.active.size
            buf = np.empty(max(n for n, _ in self._spilled) * width, self.dtype)
            self._spill.seek(0)
            for n, t in self._spilled:
                Z = buf[: n * width]
                if self._spill.readinto(memoryview(Z).cast("B")) != Z.nbytes:
                    raise HeadError("the temporary file of prepared training rows was cut short: fit again")
                yield Z.reshape(n, width), t

    def _first_pass(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import tempfile

        self._cached, self._spilled, used = [], [], 0
        for at, X in self.rows.chunks():
            Z = np.ascontiguousarray(standardize(X, self.mean, self.scale)[:, self.active], dtype=self.dtype)
            t = self.targets[at]
            if not self._spilled and used + Z.nbytes <= self.cache_bytes:
                self._cached.append((Z, t))
                used += Z.nbytes
            else:
                if self._spill is None:
                    self._spill = tempfile.TemporaryFile(prefix="transferkit-rows-")
                self._spill.write(Z.tobytes())
                self._spilled.append((Z.shape[0], t))
            yield Z, t
        if self._spill is not None:
            self._spill.flush()
            groups: list[tuple[int, list[np.ndarray]]] = []  # consecutive blocks, read back in one go
            for n, t in self._spilled:
                if groups and (groups[-1][0] + n) * self.active.size * self.dtype.itemsize <= self.SPILL_READ_BYTES:
                    groups[-1] = (groups[-1][0] + n, [*groups[-1][1], t])
                else:
                    groups.append((n, [t]))
            self._spilled = [(n, np.concatenate(ts)) for n, ts in groups]
        self._prepared = True

    def close(self) -> None:
        """Delete the temporary file (also done when this object is garbage-collected)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None


class StreamedSoftmaxPath(SoftmaxPath):
    """`SoftmaxPath` over rows of a feature store: its loss and gradient are summed over `PreparedRows` blocks, never
    all the rows in memory."""

    def __init__(self, prepared: PreparedRows, n_classes: int, *, max_iter: int = 1000, tol: float = 1e-4) -> None:
        self._setup(len(prepared.rows), prepared.rows.fs.feature_dim, prepared.active, n_classes, max_iter, tol,
                    prepared.dtype.name)
        self.prepared = prepared

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.prepared.blocks()


def _train_val(fs: FeatureSet, train: Sequence[int] | np.ndarray, val: Sequence[int] | np.ndarray,
               head: str) -> tuple[np.ndarray, ShardRows, ShardRows]:
    """Labels, training rows and validation rows of `fs`, refused where a head cannot be fitted on them."""
    y = fs.labels()
    if y is None:
        raise HeadError(f"{fs.path} holds unlabelled features: a {head} head needs labels")
    tr, va = ShardRows(fs, train), ShardRows(fs, val)
    if len(tr) < 2 or not len(va):
        raise HeadError(f"{head} needs at least 2 training rows and 1 validation row (got {len(tr)} and {len(va)})")
    return y, tr, va


def _val_scores(va: ShardRows, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                intercept: np.ndarray) -> np.ndarray:
    """Decision values of a linear model on standardised validation rows, shard by shard."""
    return np.concatenate([softmax_scores(standardize(X, mean, scale), coef, intercept) for _, X in va.chunks()])


def predict_rows(predictor: Any, rows: ShardRows) -> np.ndarray:
    """The predictor's predictions for `rows`, in the order of `rows.rows`, computed one shard at a time."""
    parts = [predictor.predict(X) for _, X in rows.chunks()]
    return np.concatenate(parts) if parts else np.empty(0)


def fit_ridge_streamed(fs: FeatureSet, train: Sequence[int] | np.ndarray, val: Sequence[int] | np.ndarray,
                       task: str, alphas: Sequence[float] = DEFAULT_ALPHAS) -> GridResult:
    """Head family ``ridge`` on the rows `train` of `fs`, alpha chosen on the rows `val`, without loading the
    features: peak memory is one shard plus d x d (and d x outputs) float64 arrays."""
    y, tr, va = _train_val(fs, train, val, "ridge")
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
    """Head family ``logreg`` on the rows `train` of `fs`, C chosen on the rows `val` (the probe's grid, refinement
    and warm starts), without loading the features: memory is one shard plus what `cache_bytes` allows."""
    y, tr, va = _train_val(fs, train, val, "logreg")
    y_tr = y[tr.rows]
    check_two_classes(y_tr, "the training labels")
    probe = LogisticProbe(Cs=Cs, refine_steps=refine_steps, precision=precision, seed=seed)
    probe.classes_, probe.n_features_in_ = np.unique(y_tr), fs.feature_dim
    mean, scale, active = tr.standardizer()
    probe.scaler_mean_, probe.scaler_scale_ = c_array(mean), c_array(scale)
    prepared = PreparedRows(tr, np.searchsorted(probe.classes_, y_tr), mean, scale, active, precision=precision,
                            cache_bytes=cache_bytes)
    path = StreamedSoftmaxPath(prepared, len(probe.classes_), max_iter=probe.max_iter, tol=probe.tol)
    try:
        probe._set_solution(probe.search(path, lambda fit: _val_scores(va, mean, scale, fit.coef, fit.intercept),
                                         y[va.rows]))
    finally:
        prepared.close()
    return grid_result(probe)


def _squared_hinge(theta: np.ndarray, prepared: PreparedRows, lam: float, k: int) -> tuple[float, np.ndarray]:
    """Mean squared hinge of one-vs-rest margins + lam/2 ||(W, b)||² (the intercept is penalised, as liblinear's
    intercept feature is), and its gradient, summed over the prepared blocks (whose targets are class indices: the
    ±1 codes are made per block)."""
    r, n = prepared.active.size, len(prepared.rows)
    W, b = theta[: r * k].reshape(r, k), theta[r * k:]
    total, gW, gb = 0.0, np.zeros((r, k)), np.zeros(k)
    columns = np.arange(k) + (1 if k == 1 else 0)  # two classes: one column, +1 for the second class
    for Z, y_index in prepared.blocks():
        T = np.where(y_index[:, None] == columns[None, :], 1.0, -1.0)
        slack = np.maximum(0.0, 1.0 - T * ((Z @ W.astype(Z.dtype)).astype(np.float64) + b))
        total += float(np.sum(slack * slack))
        G = (-2.0 / n) * T * slack
        gW += (Z.T @ G.astype(Z.dtype)).astype(np.float64)
        gb += G.sum(axis=0)
    loss = total / n + 0.5 * lam * float(np.sum(theta * theta))
    return loss, np.concatenate([(gW + lam * W).ravel(), gb + lam * b])


def fit_linear_svm_streamed(fs: FeatureSet, train: Sequence[int] | np.ndarray, val: Sequence[int] | np.ndarray,
                            seed: int = 0, *, cache_bytes: int = 0, Cs: Sequence[float] = DEFAULT_SVM_CS,
                            max_iter: int = 1000, tol: float = 1e-5) -> GridResult:
    """Head family ``svm`` on the rows `train` of `fs`, C chosen on the rows `val`, without loading the features: the
    objective of the in-memory head (scikit-learn's LinearSVC: squared hinge, one-vs-rest, C times the sum of the
    losses, intercept penalised) solved in the primal by L-BFGS over `PreparedRows`, warm-started from the previous
    C of the grid (ascending; the smaller C wins ties, as in memory)."""
    from scipy import optimize

    del seed  # deterministic
    y, tr, va = _train_val(fs, train, val, "svm")
    y_tr = y[tr.rows]
    check_two_classes(y_tr, "the training labels")
    classes = np.unique(y_tr)
    mean, scale, active = tr.standardizer()
    prepared = PreparedRows(tr, np.searchsorted(classes, y_tr), mean, scale, active, cache_bytes=cache_bytes)
    k, r, n = (1 if classes.size == 2 else classes.size), active.size, len(tr)
    theta = np.zeros(r * k + k)
    best: LinearPredictor | None = None
    best_score, best_C, val_scores = -np.inf, 0.0, []
    y_val = y[va.rows]
    try:
        for C in sorted(Cs):
            res = optimize.minimize(_squared_hinge, theta, args=(prepared, 1.0 / (C * n), k), method="L-BFGS-B",
                                    jac=True, options={"maxiter": max_iter, "gtol": tol,
                                                       "ftol": 64 * np.finfo(float).eps})
            theta = res.x
            coef = np.zeros((k, fs.feature_dim))
            coef[:, active] = theta[: r * k].reshape(r, k).T
            pred = LinearPredictor(mean, scale, coef, theta[r * k:].copy(), classes)
            score = primary_score("classification", y_val, predict_rows(pred, va))
            val_scores.append({"params": {"C": float(C)}, "score": score})
            if score > best_score:
                best, best_score, best_C = pred, score, float(C)
    finally:
        prepared.close()
    assert best is not None
    return GridResult(best, {"C": best_C}, val_scores, best_score)


def evaluate_rows(predictor: Any, fs: FeatureSet, rows: Sequence[int] | np.ndarray,
                  task: str) -> dict[str, float]:
    """Every score of the task on the rows `rows` of `fs`, scored one shard at a time."""
    where = ShardRows(fs, rows)
    return score_all(task, fs.labels()[where.rows], predict_rows(predictor, where))
