"""The probe workflow: cached features -> split -> heads chosen on validation -> test metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.splits import stratified_split
from transferkit.errors import FeatureStoreError, HeadError
from transferkit.features.store import FeatureSet
from transferkit.heads.base import FittedHead, GridResult, Timer, best_index
from transferkit.heads.select import fit_head, fitted_head, heads_for, make_head
from transferkit.heads.streamed import (
    ShardRows,
    evaluate_rows,
    fit_linear_svm_streamed,
    fit_logreg_streamed,
    fit_ridge_streamed,
)
from transferkit.runtime import memory_budget, peak_rss_mb


def _params(head: FittedHead) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in head.params.items())


def _row(f: FittedHead, test_scores: dict[str, float]) -> dict:
    return {"head": f.name, "chosen": _params(f), "val_score": f.val_score, **test_scores,
            "fit_s": round(f.fit_time_s, 3)}


def fit_and_score(
    head: str, X: np.ndarray, y: np.ndarray, split: Any, task: str, seed: int = 0
) -> tuple[list[dict], FittedHead]:
    """Fit `head` (every family for "auto") on split.train, select on split.val; rows of test metrics + the best."""
    make_head(head, task)  # validates the name for the task before any work
    names = heads_for(task) if head == "auto" else [head]
    fitted = [fit_head(n, X[split.train], y[split.train], X[split.val], y[split.val], task, seed) for n in names]
    rows = [_row(f, f.evaluate(X[split.test], y[split.test])) for f in fitted]
    return rows, fitted[best_index([f.val_score for f in fitted])]


#: heads that fit over a feature store's shards without loading it (`heads.streamed`), by name
STREAMED_HEADS: dict[str, Callable[..., GridResult]] = {
    "ridge": lambda fs, split, task, seed, cache: fit_ridge_streamed(fs, split.train, split.val, task),
    "logreg": lambda fs, split, task, seed, cache: fit_logreg_streamed(fs, split.train, split.val, seed,
                                                                      cache_bytes=cache),
    "svm": lambda fs, split, task, seed, cache: fit_linear_svm_streamed(fs, split.train, split.val, seed,
                                                                       cache_bytes=cache),
}
#: memory an in-memory fit takes, as a multiple of the float32 features it reads: the matrix, its train and
#: validation copies, their float64 copies, the standardised float64 training matrix and its float32 copy
IN_MEMORY_FACTOR = 6


def in_memory_bytes(fs: FeatureSet) -> int:
    """About how much memory fitting heads on `fs` in memory takes (see IN_MEMORY_FACTOR)."""
    return IN_MEMORY_FACTOR * fs.n_items * fs.feature_dim * 4


def fit_and_score_streamed(head: str, fs: FeatureSet, split: Any, task: str, seed: int = 0,
                           cache_bytes: int = 0) -> tuple[list[dict], FittedHead]:
    """`fit_and_score` over the shards of `fs` (ridge, logreg and svm; "auto" tries those the task allows), never
    holding the features; `cache_bytes`: memory logreg and svm may keep prepared training rows in."""
    make_head(head, task)
    names = [n for n in heads_for(task) if n in STREAMED_HEADS] if head == "auto" else [head]
    if any(n not in STREAMED_HEADS for n in names):
        raise HeadError(f"head {head!r} needs every feature in memory ({in_memory_bytes(fs) / 2**20:,.0f} MB for "
                        f"{fs.path}), which is more than --max-memory allows: use {', '.join(STREAMED_HEADS)} or auto "
                        "(they fit shard by shard), or raise --max-memory")
    fitted = []
    for name in names:
        with Timer() as t:
            result = STREAMED_HEADS[name](fs, split, task, seed, cache_bytes)
        fitted.append(fitted_head(name, task, result, t.seconds))
    rows = [_row(f, evaluate_rows(f.predictor, fs, split.test, task)) for f in fitted]
    return rows, fitted[best_index([f.val_score for f in fitted])]


def probe_features(
    features: str | Path | FeatureSet,
    *,
    head: str = "auto",
    seed: int = 0,
    val: float = 0.15,
    test: float = 0.15,
    save: str | Path | None = None,
    max_memory: int | str | None = "auto",
) -> dict:
    """Probe a feature folder: one row per head with the chosen hyperparameters and test metrics.

    With `save`, the best-by-validation head is written there as a model folder (the backbone the features
    came from, by reference, + the head): `transferkit predict`, `export`, `serve` and `transferkit.load` read it.
    max_memory: when fitting in memory would take more than this (`runtime.memory_budget`: e.g. "2GB"; "auto" is
    half this machine's memory), the heads are fitted shard by shard instead (`fit_and_score_streamed`: ridge,
    logreg and svm), keeping prepared training rows in at most a quarter of it.
    """
    fs = features if isinstance(features, FeatureSet) else FeatureSet.open(features)
    y = fs.labels()
    if y is None or fs.task == "unlabelled":
        raise FeatureStoreError(f"{fs.path} holds unlabelled features: extract them again with labels "
                                "(`transferkit extract … --label-column NAME`) to probe them")
    budget = memory_budget(max_memory)
    streamed = in_memory_bytes(fs) > budget
    split = stratified_split(y, val=val, test=test, seed=seed, class_names=fs.class_names or None)
    if streamed:
        rows, best = fit_and_score_streamed(head, fs, split, fs.task, seed, cache_bytes=budget // 4)
    else:
        rows, best = fit_and_score(head, fs.features(), y, split, fs.task, seed)
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
        "streamed": streamed,  # fitted shard by shard: in memory it would have taken more than max_memory
        "in_memory_mb": round(in_memory_bytes(fs) / 2**20, 1),
        "max_memory_mb": round(budget / 2**20, 1),
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
        # probabilities for a margin head: its temperature, on the validation rows, read shard by shard (as stored,
        # in the split's order: the numbers an in-memory fit gets)
        val_rows = np.asarray(split.val)
        stored = ShardRows(fs, val_rows)
        X = np.concatenate([X for _, X in stored.chunks()]).astype(np.float32)[np.searchsorted(stored.rows, val_rows)]
        ids = np.searchsorted(np.asarray(best.classes_), fs.labels()[val_rows])
        training["temperature"] = fit_temperature(best.class_scores(X), ids)
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
