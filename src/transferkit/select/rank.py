"""Rank candidate backbones for a labelled data set by transferability scores, before any training.

Each candidate runs once over the data (features go to the feature store, so probing the winner
afterwards costs no model work); the scores are computed on those cached features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.backbones.registry import load_backbone
from transferkit.data.dataset import Dataset
from transferkit.data.loaders import load_data
from transferkit.data.splits import stratified_sample
from transferkit.errors import DataError, TransferkitError
from transferkit.features.extract import extract_features
from transferkit.features.store import FeatureStore
from transferkit.select.hscore import hscore
from transferkit.select.leep import leep, source_head_unavailable, source_probabilities
from transferkit.select.logme import logme
from transferkit.select.nce import nce

METRICS = ("logme", "leep", "nce", "hscore")
#: metrics that need class labels (LogME also scores real-valued targets)
CLASS_ONLY = ("leep", "nce", "hscore")
#: metrics computed from the backbone's source-task probabilities
NEED_SOURCE = ("leep", "nce")


class UnknownMetricError(TransferkitError):
    """The metric name is not one of the transferability scores."""


def metrics_for(metric: str) -> list[str]:
    """The scores `metric` asks for ("all" is every one); UnknownMetricError otherwise."""
    if metric == "all":
        return list(METRICS)
    if metric not in METRICS:
        raise UnknownMetricError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)} or all")
    return [metric]


def _check_task(data: Dataset, wanted: list[str], metric: str) -> list[str]:
    """Validate the labels for the scores; for regression, "all" keeps LogME only, a single class score errors."""
    if data.task == "unlabelled":
        raise DataError(f"data set {data.name!r} has no labels: give a label column (--label-column) to rank")
    if data.task == "regression":
        bad = [m for m in wanted if m in CLASS_ONLY]
        if bad and metric != "all":
            raise DataError(f"{metric} needs class labels but data set {data.name!r} has real-valued targets: "
                            "use --metric logme")
        return [m for m in wanted if m not in CLASS_ONLY]
    n_classes = len(np.unique(data.labels))
    if n_classes < 2:
        raise DataError(f"all {len(data)} items of data set {data.name!r} have one class: "
                        "ranking needs at least two classes")
    return wanted


def _label(bb: Backbone) -> str:
    return bb.spec + ("" if bb.pretrained else " (random init)")


def _score(name: str, bb: Backbone, X: np.ndarray, y: np.ndarray, regression: bool,
           cache: dict[str, Any]) -> float:
    """One score on cached features; source probabilities are computed once for LEEP and NCE."""
    if name == "logme":
        return logme(X, y, regression=regression)
    if name == "hscore":
        return hscore(X, y)
    if "probs" not in cache:
        cache["probs"] = source_probabilities(bb, X)
    return leep(cache["probs"], y) if name == "leep" else nce(cache["probs"], y)


def rank(
    models: Sequence[str | Backbone | nn.Module],
    data: Dataset | str | Path,
    *,
    metric: str = "logme",
    sample: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    max_length: int | None = None,
    pooling: str = "default",
    pretrained: bool = True,
    store: FeatureStore | None = None,
    device: str | None = None,
    precision: str = "auto",
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Score each candidate backbone on `data` and rank them by `metric` (descending), best first.

    models: spec strings (`effnet:lite0`, `st:all-MiniLM-L6-v2`, …; built with `image_size` (image models) or
    `max_length` (text models) on `device`, default cpu), Backbones (any pooling; used as they are, moved only
    when `device` is given) or modules. precision: of the extraction (see `transferkit.runtime`).
    metric: logme, leep, nce, hscore, or all (ranked by LogME). sample: score on a stratified subset of
    that many items (seeded). Features go through `store` (default cache). A candidate that cannot be
    loaded, or cannot give a score (no source classifier for LEEP/NCE), keeps a row with a `note`.
    Rows: model, spec, pooling, pretrained, n_items, feature_dim, the scores, load_s, extract_s, cached,
    score_s, rank, note, features (the cached feature folder, for `transferkit probe`).
    trust_pickle / trust_remote_code: as in `load_backbone`; off.
    """
    wanted = metrics_for(metric)
    if not models:
        raise DataError("no models to rank: give at least one backbone spec")
    if sample is not None and sample < 2:
        raise DataError(f"sample={sample} is too small: sample at least two items (or omit it to use all)")
    ds = data if isinstance(data, Dataset) else load_data(data)
    wanted = _check_task(ds, wanted, metric)
    skipped = [m for m in metrics_for(metric) if m not in wanted]
    if sample is not None and sample < len(ds):
        idx = stratified_sample(ds.labels, sample, seed=seed, classes=ds.task == "classification")
        ds = ds.subset(idx, f"{ds.name}-sample{sample}-seed{seed}")
    store = store or FeatureStore()
    primary = "logme" if metric == "all" else metric
    build = {"image_size": image_size, "max_length": max_length, "trust_pickle": trust_pickle,
             "trust_remote_code": trust_remote_code, "pretrained": pretrained, "pooling": pooling}
    rows = [_candidate(m, ds, wanted, skipped, build, store, device, precision, progress, log) for m in models]
    ranked = sorted((r for r in rows if _finite(r.get(primary))), key=lambda r: -r[primary])
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return ranked + [r for r in rows if r["rank"] is None]


def _options_for(model: str | nn.Module, build: dict) -> dict:
    """The build options that apply to a candidate: the image size to image models, the token limit to text
    models (one `rank` call can hold both kinds; an option that applies to neither source is dropped)."""
    if not isinstance(model, str) or ":" not in model:
        return {k: v for k, v in build.items() if k == "image_size" and v is not None}
    from transferkit.backbones.registry import source

    try:
        takes = source(model.partition(":")[0]).options
    except TransferkitError:
        return {}
    return {k: v for k, v in build.items() if k in takes and (v or k == "pretrained") and v != "default"}


def _finite(v: object) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _candidate(model: str | Backbone | nn.Module, ds: Dataset, wanted: list[str], skipped: list[str], build: dict,
               store: FeatureStore, device: str | None, precision: str, progress: bool,
               log: Callable[[str], None] | None) -> dict:
    """Load, extract (or reuse cached features), score: one row."""
    name = model if isinstance(model, str) else getattr(model, "spec", type(model).__name__)
    row: dict[str, Any] = {"model": str(name), "spec": str(name), "pooling": None, "pretrained": None,
                           "n_items": len(ds), "feature_dim": None, **dict.fromkeys(wanted),
                           "load_s": None, "extract_s": None, "cached": None, "score_s": None, "rank": None,
                           "note": "", "features": None}
    notes = [f"{', '.join(skipped)}: need class labels"] if skipped else []
    t0 = time.perf_counter()
    try:
        if isinstance(model, Backbone):
            bb = model if device is None else model.to(device)
        else:
            bb = load_backbone(model, device=device or "cpu", **_options_for(model, build))
    except TransferkitError as e:
        row["note"] = f"cannot load: {e}"
        return row
    row.update(model=_label(bb), spec=bb.spec, pooling=bb.pooling, pretrained=bb.pretrained,
               feature_dim=bb.feature_dim, load_s=round(time.perf_counter() - t0, 3))
    if bb.modality != ds.modality:
        row["note"] = f"reads {bb.modality} but the data holds {ds.modality}"
        return row
    if log is not None:
        log(f"extracting {row['model']} ({bb.pooling}) on {len(ds)} items")
    computed: list[int] = []
    t0 = time.perf_counter()
    try:
        fs = extract_features(bb, ds, store=store, precision=precision, progress=progress, on_shard=computed.append)
    except TransferkitError as e:  # e.g. NaN features from one model: the others are still ranked
        row["note"] = f"cannot extract: {e}"
        return row
    row.update(extract_s=round(time.perf_counter() - t0, 3), cached=not computed, features=str(fs.path))
    X, y = fs.features(), fs.labels()
    regression = ds.task == "regression"
    no_source = source_head_unavailable(bb) if any(m in NEED_SOURCE for m in wanted) else None
    cache: dict[str, Any] = {}
    t0 = time.perf_counter()
    for m in wanted:
        if m in NEED_SOURCE and no_source is not None:
            continue
        row[m] = _score(m, bb, X, y, regression, cache)
    row["score_s"] = round(time.perf_counter() - t0, 4)
    if no_source is not None:
        notes.append(f"{'/'.join(m for m in wanted if m in NEED_SOURCE)} unavailable: {no_source}")
    row["note"] = "; ".join(notes)
    return row
