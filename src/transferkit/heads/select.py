"""Head registry and validation-based selection: ``make_head(name, task)`` and ``fit_head(...)``.

Every family searches its grid on the validation split and keeps the model of the best grid point,
which was trained on the train split only (selection on val, final model on train; the caller
measures test). ``auto`` fits every family valid for the task and keeps the best validation score;
ties go to the simpler/faster family, in the order of ``FAMILIES``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferkit.errors import HeadError
from transferkit.heads.base import FittedHead, GridResult, Timer, best_index
from transferkit.heads.knn import fit_knn
from transferkit.heads.linear import fit_linear_svm, fit_ridge
from transferkit.heads.logreg import fit_logreg
from transferkit.heads.metrics import PRIMARY_METRIC, check_task
from transferkit.heads.rbf import fit_rbf_svm
from transferkit.heads.validate import check_train_val

BOTH = ("classification", "regression")
CLASSIFICATION = ("classification",)


@dataclass(frozen=True)
class Family:
    """A head family: its name, the tasks it can do, and its grid-search fitter."""

    name: str
    tasks: tuple[str, ...]
    fit: Callable[..., GridResult]
    takes_task: bool

    def option_names(self) -> list[str]:
        """Grid overrides the fitter accepts (keyword arguments after ``seed``)."""
        params = list(inspect.signature(self.fit).parameters)
        return params[params.index("seed") + 1 :]


#: Families in order of simplicity/speed; ``auto`` breaks validation ties towards the earlier one.
FAMILIES: dict[str, Family] = {
    "ridge": Family("ridge", BOTH, fit_ridge, True),
    "logreg": Family("logreg", CLASSIFICATION, fit_logreg, False),
    "svm": Family("svm", CLASSIFICATION, fit_linear_svm, False),
    "knn": Family("knn", BOTH, fit_knn, True),
    "rbf-svm": Family("rbf-svm", CLASSIFICATION, fit_rbf_svm, False),
}
HEAD_NAMES: tuple[str, ...] = ("logreg", "svm", "rbf-svm", "ridge", "knn", "auto")


def heads_for(task: str) -> list[str]:
    """Names of the families that can do ``task``, simplest first."""
    check_task(task)
    return [f.name for f in FAMILIES.values() if task in f.tasks]


@dataclass(frozen=True)
class HeadSpec:
    """An unfitted head: a family (or ``auto``), a task and optional grid overrides."""

    name: str
    task: str
    options: dict[str, Any] = field(default_factory=dict)

    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any, seed: int = 0) -> FittedHead:
        """Search the grid on the validation split and return the head trained on the train split."""
        Xtr, ytr, Xva, yva = check_train_val(X_train, y_train, X_val, y_val, self.task)
        if self.name != "auto":
            return _fit_family(FAMILIES[self.name], Xtr, ytr, Xva, yva, self.task, seed, self.options)
        with Timer() as total:
            fitted = [_fit_family(FAMILIES[n], Xtr, ytr, Xva, yva, self.task, seed, {}) for n in heads_for(self.task)]
        winner = fitted[best_index([f.val_score for f in fitted])]
        winner.requested = "auto"
        winner.candidates = [
            {"name": f.name, "params": f.params, "val_score": f.val_score, "fit_time_s": f.fit_time_s} for f in fitted
        ]
        winner.fit_time_s = total.seconds
        return winner


def _fit_family(
    family: Family,
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xva: np.ndarray,
    yva: np.ndarray,
    task: str,
    seed: int,
    options: dict[str, Any],
) -> FittedHead:
    with Timer() as t:
        if family.takes_task:
            result = family.fit(Xtr, ytr, Xva, yva, task, seed, **options)
        else:
            result = family.fit(Xtr, ytr, Xva, yva, seed, **options)
    return fitted_head(family.name, task, result, t.seconds)


def fitted_head(name: str, task: str, result: GridResult, seconds: float) -> FittedHead:
    """The `FittedHead` of family `name` from its search record (in memory or over a feature store's shards)."""
    return FittedHead(
        name=name,
        task=task,
        predictor=result.predictor,
        params=result.params,
        val_score=float(result.val_score),
        metric=PRIMARY_METRIC[task],
        val_scores=result.val_scores,
        fit_time_s=seconds,
    )


def make_head(name: str, task: str = "classification", **options: Any) -> HeadSpec:
    """An unfitted head by name (``logreg``, ``svm``, ``rbf-svm``, ``ridge``, ``knn`` or ``auto``).

    ``options`` override a family's grid, e.g. ``make_head("knn", ks=(1, 5))``; unknown names, tasks the
    head cannot do and unknown options raise HeadError naming the valid choices.
    """
    check_task(task)
    if name not in HEAD_NAMES:
        raise HeadError(f"unknown head {name!r}; use one of: {', '.join(HEAD_NAMES)}")
    valid = heads_for(task)
    if name != "auto" and name not in valid:
        raise HeadError(
            f"head {name!r} is classification-only and cannot do {task}; use one of: {', '.join([*valid, 'auto'])}"
        )
    allowed = [] if name == "auto" else FAMILIES[name].option_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise HeadError(
            f"head {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(allowed) if allowed else 'none'}"
        )
    return HeadSpec(name, task, dict(options))


def fit_head(
    name: str,
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    task: str = "classification",
    seed: int = 0,
    **options: Any,
) -> FittedHead:
    """Fit head ``name`` on train with hyperparameters chosen on val; see :func:`make_head` for names/options."""
    return make_head(name, task, **options).fit(X_train, y_train, X_val, y_val, seed=seed)
