"""Input checks shared by every head; each failure names the input and the fix."""

from __future__ import annotations

import numpy as np

from transferkit.errors import DataError


def check_features(X: object, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """Return ``X`` as a finite 2-D float64 array, or raise DataError naming ``name``."""
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} is not a numeric array ({exc}); pass an (n_samples, n_features) float array") from None
    if arr.ndim != 2:
        raise DataError(f"{name} has shape {arr.shape}; pass a 2-D (n_samples, n_features) array")
    if arr.shape[0] == 0:
        raise DataError(f"{name} has no rows; pass at least one sample")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(f"{name} contains {bad} NaN/inf values; drop or impute those samples before fitting a head")
    if n_features is not None and arr.shape[1] != n_features:
        raise DataError(
            f"{name} has {arr.shape[1]} features but the head was fitted on {n_features}; "
            "use features from the same backbone and pooling"
        )
    return arr


def check_labels(y: object, n_samples: int, task: str, name: str = "y") -> np.ndarray:
    """Return ``y`` as a 1-D array that fits ``task``, or raise DataError naming ``name``."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} has shape {arr.shape}; pass a 1-D array of labels")
    if arr.shape[0] != n_samples:
        raise DataError(f"{name} has {arr.shape[0]} labels for {n_samples} feature rows; pass one label per row")
    if task == "regression":
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{name} is not numeric (dtype {arr.dtype}); regression needs float targets")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{name} contains NaN/inf targets; drop those samples")
        return arr
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(
                f"{name} holds non-integer floats; classification needs class ids, "
                "use task='regression' for real-valued targets"
            )
        arr = arr.astype(np.int64)
    return arr


def check_train_val(
    X_train: object, y_train: object, X_val: object, y_val: object, task: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check a train/validation pair together: finite features, same width, labels that fit ``task``."""
    Xtr = check_features(X_train, "X_train")
    Xva = check_features(X_val, "X_val")
    if Xva.shape[1] != Xtr.shape[1]:
        raise DataError(
            f"X_val has {Xva.shape[1]} features but X_train has {Xtr.shape[1]}; "
            "extract both splits with the same backbone and pooling"
        )
    ytr = check_labels(y_train, Xtr.shape[0], task, "y_train")
    yva = check_labels(y_val, Xva.shape[0], task, "y_val")
    if task == "classification":
        check_two_classes(ytr, "y_train")
    return Xtr, ytr, Xva, yva


def check_two_classes(y: np.ndarray, name: str = "y_train") -> None:
    """Raise DataError when ``y`` holds a single class: no classifier can be fitted on it."""
    classes = np.unique(y)
    if classes.size < 2:
        raise DataError(
            f"{name} holds a single class ({classes[0].tolist()!r}); a classifier needs at least two, "
            "add samples of the other classes"
        )
