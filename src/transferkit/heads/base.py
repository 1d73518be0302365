"""What every head shares: standardisation, the predictor protocol, the fitted-head record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from transferkit.errors import DataError, HeadError
from transferkit.heads.metrics import score_all
from transferkit.heads.validate import check_features


def c_array(a: np.ndarray | None) -> np.ndarray | None:
    """`a` as a C-contiguous array (same dtype). Fitted arrays are stored this way, which is how they come back
    from safetensors, so a loaded head computes bit for bit what the fitted one did (another memory layout can
    take another BLAS path and round the last bit differently)."""
    return None if a is None else np.ascontiguousarray(a)


def fit_standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of ``X`` like sklearn's StandardScaler (zero-variance columns get scale 1)."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
    return mean, scale


def standardize(X: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None) -> np.ndarray:
    """Apply a fitted standardisation; ``None`` means the head works on raw features."""
    if mean is None or scale is None:
        return X
    return (X - mean) / scale


class Predictor(Protocol):
    """A fitted, array-backed model that persist.py can write and rebuild without pickle."""

    kind: ClassVar[str]
    n_features_in_: int

    def predict(self, X: Any) -> np.ndarray: ...

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (for safetensors) and JSON-able metadata that rebuild this predictor."""
        ...

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Predictor: ...


@dataclass
class GridResult:
    """What a head family returns after its validation search: the model and the search record."""

    predictor: Any
    params: dict[str, Any]
    val_scores: list[dict[str, Any]]
    val_score: float


@dataclass
class FittedHead:
    """A head trained on the train split with hyperparameters chosen on the validation split.

    ``name`` is the head that won (for ``requested='auto'`` the best family); ``val_scores`` holds
    one entry per grid point ({"params": ..., "score": ...}); ``candidates`` (auto only) summarises
    every family tried. The final model is trained on train only; the caller measures test.
    """

    name: str
    task: str
    predictor: Predictor
    params: dict[str, Any]
    val_score: float
    metric: str
    val_scores: list[dict[str, Any]]
    fit_time_s: float
    requested: str = ""
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.requested:
            self.requested = self.name

    @property
    def classes_(self) -> np.ndarray | None:
        """Class labels in column order of predict_proba (None for regression)."""
        return getattr(self.predictor, "classes_", None)

    @property
    def has_proba(self) -> bool:
        """Whether this head gives class probabilities (logreg and knn classifiers do)."""
        return self.task == "classification" and callable(getattr(self.predictor, "predict_proba", None))

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (classification) or values (regression) for feature rows ``X``."""
        return self.predictor.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order; only logreg and knn classifiers have them."""
        if self.task == "regression":
            raise HeadError(f"head {self.name!r} is a regressor and gives no probabilities; use predict")
        if not self.has_proba:
            raise HeadError(
                f"head {self.name!r} (classification) gives no probabilities; use head 'logreg' or 'knn' for them"
            )
        return self.predictor.predict_proba(X)

    def class_scores(self, X: Any) -> np.ndarray:
        """(n, n_classes) scores whose arg-max is the prediction, columns in ``classes_`` order: the predictor's
        own per-class scores, or its decision function (binary margins as two columns)."""
        own = getattr(self.predictor, "class_scores", None)
        if own is not None:
            return np.asarray(own(X), dtype=np.float64)
        s = np.asarray(self.decision_function(X), dtype=np.float64)
        return np.column_stack([-s, s]) if s.ndim == 1 else s

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores before the decision (margins, logits or neighbour votes)."""
        fn = getattr(self.predictor, "decision_function", None)
        if fn is None:
            raise HeadError(f"head {self.name!r} has no decision_function; use predict or predict_proba")
        return fn(X)

    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """Every score of the task (accuracy + macro-F1, or R² + MAE) on ``X, y``.

        For a classifier, labels it never saw in training are an error (they can never be predicted, and
        usually mean the labels are coded differently, e.g. names instead of class ids).
        """
        y = np.asarray(y)
        if self.task == "classification" and self.classes_ is not None and y.size:
            unseen = np.setdiff1d(np.unique(y), np.asarray(self.classes_))
            if unseen.size:
                shown = ", ".join(repr(v) for v in unseen[:5].tolist()) + (" …" if unseen.size > 5 else "")
                known = ", ".join(repr(v) for v in np.asarray(self.classes_)[:10].tolist())
                raise DataError(f"y holds {unseen.size} label(s) the head never saw in training ({shown}); it knows "
                                f"{known}{' …' if len(self.classes_) > 10 else ''}: code the labels as in training")
        return score_all(self.task, y, self.predict(X))

    def summary(self) -> dict[str, Any]:
        """A JSON-able record: name, task, chosen hyperparameters, validation scores, fit time."""
        return {
            "name": self.name,
            "requested": self.requested,
            "task": self.task,
            "params": self.params,
            "metric": self.metric,
            "val_score": self.val_score,
            "val_scores": self.val_scores,
            "fit_time_s": self.fit_time_s,
            "candidates": self.candidates,
        }


class Timer:
    """Context manager measuring wall-clock seconds in ``.seconds``."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def checked_input(X: Any, n_features: int) -> np.ndarray:
    """Validate feature rows handed to a fitted predictor."""
    return check_features(X, "X", n_features=n_features)


def best_index(scores: list[float]) -> int:
    """Index of the highest score; ties go to the earliest (grids are ordered simplest first)."""
    clean = [s if np.isfinite(s) else -np.inf for s in scores]
    best = 0
    for i, s in enumerate(clean):
        if s > clean[best]:
            best = i
    return best
