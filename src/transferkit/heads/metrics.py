"""Scores for heads: accuracy and macro-F1 for classification, R² and MAE for regression."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score

from transferkit.errors import HeadError

TASKS = ("classification", "regression")

#: The score that selection maximises, per task.
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2"}


def check_task(task: str) -> str:
    """Return ``task`` if it is a known task, else raise a HeadError that lists the valid ones."""
    if task not in TASKS:
        raise HeadError(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")
    return task


def score_all(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All scores of ``task`` for one set of predictions, as plain floats (JSON-able)."""
    check_task(task)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if task == "classification":
        return {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }
    return {"r2": float(r2_score(y_true, y_pred)), "mae": float(mean_absolute_error(y_true, y_pred))}


def primary_score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The one score selection maximises: accuracy (classification) or R² (regression)."""
    return score_all(task, y_true, y_pred)[PRIMARY_METRIC[check_task(task)]]
