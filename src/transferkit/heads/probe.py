"""The probe workflow: cached features -> split -> heads chosen on validation -> test metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.splits import stratified_split
from transferkit.errors import FeatureStoreError
from transferkit.features.store import FeatureSet
from transferkit.heads.base import FittedHead, best_index
from transferkit.heads.select import fit_head, heads_for, make_head
from transferkit.runtime import peak_rss_mb


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

    With `save`, the best-by-validation head is written there as a model folder (the backbone the features
    came from, by reference, + the head): `transferkit predict`, `export`, `serve` and `transferkit.load` read it.
    """
    fs = features if isinstance(features, FeatureSet) else FeatureSet.open(features)
    y = fs.labels()
    if y is None or fs.task == "unlabelled":
        raise FeatureStoreError(f"{fs.path} holds unlabelled features: extract them again with labels "
                                "(`transferkit extract … --label-column NAME`) to probe them")
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
        save_probe_of(fs, best, rows, split, save, seed=seed, val=val, test=test)
        report["model"] = str(save)
    return report


def save_probe_of(fs: FeatureSet, best: FittedHead, rows: list[dict], split: Any, folder: str | Path, *, seed: int,
                  val: float, test: float, training: dict | None = None, metrics_extra: dict | None = None,
                  source: dict | None = None) -> Path:
    """Write the probe model of `best` (fitted on feature set `fs`, scored in `rows`) into `folder`.

    source: where the data came from ({"source": spec, "sample": n, "text_column", "label_column"}) when the
    feature set's own record does not say (a comparison's sampled data)."""
    from transferkit.heads.probe_model import fit_temperature, save_probe
    from transferkit.model import record_from_features

    row = next(r for r in rows if r["head"] == best.name)
    test_scores = {k: v for k, v in row.items() if k not in ("head", "chosen", "val_score", "fit_s")}
    data = fs.meta["data"]
    where = {**(data.get("meta") or {}), **({"spec": source["source"]} if source else {}), **(source or {})}
    training = dict(training or {})
    if best.task == "classification" and not best.has_proba and len(split.val):
        X, y = fs.features(), fs.labels()  # probabilities for a margin head: its temperature, on validation
        ids = np.searchsorted(np.asarray(best.classes_), y[split.val])
        training["temperature"] = fit_temperature(best.class_scores(X[split.val]), ids)
    return save_probe(
        folder, best, backbone=record_from_features(fs.meta), precision=fs.meta.get("precision", "fp32"),
        class_names=fs.class_names,
        metrics={"val": {best.metric: best.val_score}, "test": test_scores, **(metrics_extra or {})},
        data={"name": data.get("name"), "fingerprint": data.get("fingerprint"), "n": fs.n_items,
              "source": where.get("spec") or where.get("path") or where.get("root"),
              "text_column": where.get("text_column"), "label_column": where.get("label_column"),
              "sample": where.get("sample"),
              "split": {"train": len(split.train), "val": len(split.val), "test": len(split.test), "seed": seed,
                        "val_fraction": val, "test_fraction": test}},
        cost={"wall_time_s": round(float(best.fit_time_s) + float(fs.meta.get("extract_seconds") or 0.0), 3),
              "fit_time_s": round(float(best.fit_time_s), 3), "extract_time_s": fs.meta.get("extract_seconds"),
              "peak_memory_mb": round(peak_rss_mb(), 1)},
        training={"chosen": row["chosen"], **training})
