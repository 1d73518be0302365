"""The logistic-regression probe: multinomial logistic regression with C chosen on a validation split.

``LogisticProbe`` is a scikit-learn classifier (fit/predict/predict_proba/score, get_params/set_params,
so ``sklearn.base.clone`` works). With ``C=None`` it sweeps C with the CLIP protocol (search.py) and fits
every C with one warm-started L-BFGS path (softmax.py), which is what makes it faster than refitting a
fresh ``LogisticRegression`` per C (see benchmarks/probe_fit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from transferkit.errors import DataError
from transferkit.heads.base import GridResult, c_array, checked_input, fit_standardizer, standardize
from transferkit.heads.search import DEFAULT_C_GRID, log_grid_search
from transferkit.heads.softmax import SoftmaxFit, SoftmaxPath, probabilities, softmax_scores
from transferkit.heads.validate import check_features, check_labels, check_two_classes


class LogisticProbe(ClassifierMixin, BaseEstimator):
    """L2 logistic regression on standardised features, C picked by validation accuracy.

    Parameters: ``C`` fixes the inverse regularisation (no search); with ``C=None`` the coarse grid
    ``Cs`` (default 1e-6..1e6, one per decade) is swept and refined ``refine_steps`` times around the best.
    ``fit(X, y, X_val, y_val)`` selects on the given validation split and keeps the model trained on
    ``X`` only; ``fit(X, y)`` holds out ``val_fraction`` (stratified, ``seed``) to select C, then refits on
    all of ``X``. ``precision='float32'`` runs the big products in float32 (same accuracy, ~2-3x faster).
    ``n_threads`` caps BLAS threads while fitting; ``None`` uses one thread when a product is small
    (n*d*classes < 1e8), where extra threads only add synchronisation (and, on a busy machine, stall).
    Fitted: ``classes_``, ``coef_``/``intercept_`` (on standardised features), ``scaler_mean_``,
    ``scaler_scale_``, ``C_``, ``search_`` (one {"C", "val_score", "n_iter"} per C tried), ``n_iter_``.
    """

    def __init__(
        self,
        C: float | None = None,
        Cs: Sequence[float] | None = None,
        refine_steps: int = 3,
        val_fraction: float = 0.2,
        max_iter: int = 1000,
        tol: float = 1e-4,
        standardize: bool = True,
        precision: str = "float32",
        n_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        self.C = C
        self.Cs = Cs
        self.refine_steps = refine_steps
        self.val_fraction = val_fraction
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.precision = precision
        self.n_threads = n_threads
        self.seed = seed

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> LogisticProbe:
        """Fit on ``X, y``; choose C on ``X_val, y_val`` (or on a held-out part of ``X`` when not given)."""
        X = check_features(X, "X")
        y = check_labels(y, X.shape[0], "classification", "y")
        check_two_classes(y, "y")
        if (X_val is None) != (y_val is None):
            raise DataError("pass both X_val and y_val, or neither (then a validation part of X is held out)")
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        threads = self.n_threads
        if threads is None and X.size * self.classes_.size < 1e8:
            threads = 1
        with threadpool_limits(limits=threads, user_api="blas"):
            self._fit(X, y, X_val, y_val)
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray, X_val: Any, y_val: Any) -> None:
        if self.C is not None:
            self.search_ = []
            self._fit_final(X, y, float(self.C), None)
        elif X_val is not None:
            X_val = check_features(X_val, "X_val", n_features=X.shape[1])
            y_val = check_labels(y_val, X_val.shape[0], "classification", "y_val")
            self._set_solution(self._search(X, y, X_val, y_val))
        else:
            X_tr, X_va, y_tr, y_va = self._holdout(X, y)
            fit = self._search(X_tr, y_tr, X_va, y_va)
            self._fit_final(X, y, fit.C, fit)

    def _holdout(self, X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        _, counts = np.unique(y, return_counts=True)
        stratify = y if counts.min() >= 2 else None
        X_tr, X_va, y_tr, y_va = train_test_split(
            X, y, test_size=self.val_fraction, stratify=stratify, random_state=self.seed
        )
        check_two_classes(y_tr, "y (after holding out the validation part)")
        return [X_tr, X_va, y_tr, y_va]

    def _scaler(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.standardize:
            return fit_standardizer(X)
        return np.zeros(X.shape[1]), np.ones(X.shape[1])

    def _path(self, X: np.ndarray, y: np.ndarray) -> SoftmaxPath:
        self.scaler_mean_, self.scaler_scale_ = (c_array(a) for a in self._scaler(X))
        y_index = np.searchsorted(self.classes_, y)
        return SoftmaxPath(
            standardize(X, self.scaler_mean_, self.scaler_scale_),
            y_index,
            len(self.classes_),
            max_iter=self.max_iter,
            tol=self.tol,
            precision=self.precision,
        )

    def _search(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray) -> SoftmaxFit:
        path = self._path(X, y)
        Xv = standardize(X_val, self.scaler_mean_, self.scaler_scale_)
        return self.search(path, lambda fit: softmax_scores(Xv, fit.coef, fit.intercept), y_val)

    def search(self, path: SoftmaxPath, val_scores: Callable[[SoftmaxFit], np.ndarray],
               y_val: np.ndarray) -> SoftmaxFit:
        """Sweep C along `path` (the grid ``Cs``, refined), keeping the solution whose validation accuracy is best;
        `val_scores(fit)` gives its decision values on the validation rows (in memory, or shard by shard)."""
        fits: dict[float, SoftmaxFit] = {}

        def evaluate(C: float) -> float:
            fit = path.fit(C)
            fits[C] = fit
            return float(np.mean(self._labels(val_scores(fit)) == y_val))

        result = log_grid_search(evaluate, self.Cs if self.Cs is not None else DEFAULT_C_GRID, self.refine_steps)
        self.search_ = [{"C": c, "val_score": s, "n_iter": fits[c].n_iter} for c, s in result.history]
        return fits[result.best]

    def _fit_final(self, X: np.ndarray, y: np.ndarray, C: float, init: SoftmaxFit | None) -> None:
        self._set_solution(self._path(X, y).fit(C, init=init))

    def _set_solution(self, fit: SoftmaxFit) -> None:
        self.C_ = fit.C
        self.coef_ = c_array(fit.coef)
        self.intercept_ = c_array(fit.intercept)
        self.n_iter_ = np.array([fit.n_iter])

    # -- prediction ------------------------------------------------------------------------------------
    def _labels(self, scores: np.ndarray) -> np.ndarray:
        if scores.shape[1] == 1:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def _scores(self, X: Any) -> np.ndarray:
        X = checked_input(X, self.n_features_in_)
        return softmax_scores(standardize(X, self.scaler_mean_, self.scaler_scale_), self.coef_, self.intercept_)

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits: shape (n,) for two classes (positive means ``classes_[1]``), else (n, n_classes)."""
        s = self._scores(X)
        return s[:, 0] if s.shape[1] == 1 else s

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order."""
        return probabilities(self._scores(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per row."""
        return self._labels(self._scores(X))

    # -- persistence (see persist.py) -----------------------------------------------------------------
    kind = "logreg"

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Fitted arrays and JSON metadata (constructor params, chosen C, search record)."""
        arrays = {
            "scaler_mean": self.scaler_mean_,
            "scaler_scale": self.scaler_scale_,
            "coef": self.coef_,
            "intercept": self.intercept_,
            "classes": self.classes_,
        }
        params = self.get_params()
        if params["Cs"] is not None:
            params["Cs"] = [float(c) for c in params["Cs"]]
        meta = {"params": params, "C_": self.C_, "search_": self.search_, "n_iter_": self.n_iter_.tolist()}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> LogisticProbe:
        """Rebuild a fitted probe from :meth:`state` output."""
        probe = cls(**meta["params"])
        probe.scaler_mean_ = arrays["scaler_mean"]
        probe.scaler_scale_ = arrays["scaler_scale"]
        probe.coef_ = arrays["coef"]
        probe.intercept_ = arrays["intercept"]
        probe.classes_ = arrays["classes"]
        probe.n_features_in_ = int(probe.coef_.shape[1])
        probe.C_ = float(meta["C_"])
        probe.search_ = list(meta["search_"])
        probe.n_iter_ = np.array(meta["n_iter_"])
        return probe


def fit_logreg(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    Cs: Sequence[float] | None = None,
    refine_steps: int = 3,
    precision: str = "float32",
) -> GridResult:
    """Head family ``logreg``: the probe's C sweep on the validation split; final model trained on train."""
    probe = LogisticProbe(Cs=Cs, refine_steps=refine_steps, precision=precision, seed=seed)
    probe.fit(X_train, y_train, X_val, y_val)
    return grid_result(probe)


def grid_result(probe: LogisticProbe) -> GridResult:
    """A probe fitted by its C search, as the ``logreg`` family's search record."""
    val_scores = [{"params": {"C": s["C"]}, "score": s["val_score"]} for s in probe.search_]
    best = next(s["val_score"] for s in probe.search_ if s["C"] == probe.C_)
    return GridResult(probe, {"C": probe.C_}, val_scores, float(best))
