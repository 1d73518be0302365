"""The probe workflow: cached features -> split -> heads chosen on validation -> test metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.splits import stratified_split
from transferkit.errors import FeatureStoreError
from transferkit.features.store import FeatureSet
from transferkit.heads.base import FittedHead, best_index
from transferkit.heads.persist import save_head
from transferkit.heads.select import fit_head, heads_for, make_head
from transferkit.io import write_json


def _params(head: FittedHead) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in head.params.items())


def fit_and_score(
    head: str, X: np.ndarray, y: np.ndarray, split: Any, task: str, seed: int = 0
) -> tuple[list[dict], FittedHead]:
    """Fit `head` (every family for "auto") on split.train, select on split.val; rows of test metrics + the best."""
    make_head(head, task)  # validates the name for the task before any work
    names = heads_for(task) if head == "auto" else [head]
    fitted = [fit_head(n, X[split.train], y[split.train], X[split.val], y[split.val], task, seed) for n in names]
    rows = []
    for f in fitted:
        rows.append(
            {
                "head": f.name,
                "chosen": _params(f),
                "val_score": f.val_score,
                **f.evaluate(X[split.test], y[split.test]),
                "fit_s": round(f.fit_time_s, 3),
            }
        )
    return rows, fitted[best_index([f.val_score for f in fitted])]


def probe_features(
    features: str | Path | FeatureSet,
    *,
    head: str = "auto",
    seed: int = 0,
    val: float = 0.15,
    test: float = 0.15,
    save: str | Path | None = None,
) -> dict:
    """Probe a feature folder: one row per head with the chosen hyperparameters and test metrics.

    With `save`, the best-by-validation head is written there (safetensors + JSON) with `probe.json`.
    """
    fs = features if isinstance(features, FeatureSet) else FeatureSet.open(features)
    y = fs.labels()
    if y is None or fs.task == "unlabelled":
        raise FeatureStoreError(f"{fs.path} holds unlabelled features: extract with --label-column to probe them")
    X = fs.features()
    split = stratified_split(y, val=val, test=test, seed=seed, class_names=fs.class_names or None)
    rows, best = fit_and_score(head, X, y, split, fs.task, seed)
    report = {
        "features": str(fs.path),
        "backbone": fs.meta["backbone"]["spec"],
        "task": fs.task,
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "seed": seed,
        "metric_names": [k for k in rows[0] if k not in ("head", "chosen", "val_score", "fit_s")],
        "heads": rows,
        "best": best.name,
        "class_names": fs.class_names,
    }
    if save is not None:
        save_head(best, save)
        write_json(Path(save) / "probe.json", report)
    return report
