"""The feature route's model: a frozen backbone (by reference) and a head fitted on its features, as a model
folder — what `probe --out`, compare's probe strategies and `fit` hand over.

model.safetensors holds the head's arrays ("head." + name); model.json holds the backbone reference, the head's
description and the scores. Prediction computes features exactly as extraction did (the same precision, layout
and batching: `embed_items`) and applies the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.features.extract import embed_items
from transferkit.heads.base import FittedHead
from transferkit.heads.persist import head_from_state, head_state
from transferkit.io import read_arrays
from transferkit.model import ModelFolderError, ModelInfo, rebuild_backbone, write_model

PREFIX = "head."

#: arrays a head stores but does not fit: input statistics, class ids, remembered training data
NOT_FITTED = {"scaler_mean", "scaler_scale", "classes", "X_fit", "y_fit", "support_vectors", "n_support"}


def save_probe(folder: str | Path, head: FittedHead, *, backbone: dict, precision: str, class_names: list[str],
               metrics: dict, data: dict, cost: dict | None = None, training: dict | None = None) -> Path:
    """Write a probe model folder: `backbone` is a backbone record (`transferkit.model.backbone_record`)."""
    arrays, doc = head_state(head)
    fitted = sum(int(np.asarray(v).size) for k, v in arrays.items() if k not in NOT_FITTED)
    info = ModelInfo(kind="probe", task=head.task, class_names=list(class_names), backbone=backbone,
                     precision=precision, modality=backbone.get("modality") or "image", metrics=metrics, data=data,
                     cost={"trainable_parameters": fitted, **(cost or {})},
                     training={"head": head.name, "params": head.params, **(training or {}), "head_state": doc})
    return write_model(folder, info, {PREFIX + k: v for k, v in arrays.items()})


def fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """The temperature T that makes softmax(scores / T) the most likely on held-out items (temperature scaling,
    Guo et al. 2017): calibrated probabilities for a head without them, with the same arg-max."""
    from scipy.optimize import minimize_scalar

    from transferkit.heads.softmax import probabilities

    def nll(log_t: float) -> float:
        p = probabilities(scores / np.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(y_index)), y_index], 1e-12, None)).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded").x))


class ProbePredictor:
    """Raw items → the backbone's features (as extraction computes them) → the fitted head.

    A head without probabilities (SVM, ridge, RBF-SVM) gives them through its validation-fitted `temperature`
    when it has one (the arg-max stays the head's prediction), else decision scores."""

    def __init__(self, backbone: Any, head: FittedHead, precision: str, n_classes: int,
                 temperature: float | None = None) -> None:
        self.backbone, self.head, self.precision, self.n_classes = backbone, head, precision, n_classes
        self.temperature = temperature
        self.has_proba = head.has_proba or head.task == "regression" or temperature is not None

    def embed(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        return embed_items(self.backbone, items, batch_size=batch_size, precision=self.precision)

    def outputs(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        return head_outputs(self.head, self.embed(items, batch_size), self.n_classes, self.temperature)


def head_outputs(head: FittedHead, X: np.ndarray, n_classes: int, temperature: float | None = None) -> np.ndarray:
    """What a probe model gives for features `X`: values (regression), probabilities over all `n_classes` (a head
    with them, or a margin head with its temperature), else decision scores."""
    if head.task == "regression":
        return np.asarray(head.predict(X), dtype=np.float64)
    if head.has_proba:
        cols, fill = head.predict_proba(X), 0.0
    elif temperature is not None:
        from transferkit.heads.softmax import probabilities

        cols, fill = probabilities(head.class_scores(X) / temperature), 0.0
    else:
        cols, fill = head.class_scores(X), -np.inf
    ids = np.asarray(head.classes_, dtype=np.int64)
    if len(ids) == n_classes and (ids == np.arange(n_classes)).all():
        return cols
    out = np.full((len(cols), n_classes), fill)  # a class the head never saw gets no mass
    out[:, ids] = cols
    return out


def load_head_of(folder: Path, info: ModelInfo) -> FittedHead:
    """The fitted head of a probe model folder (or of an earlier version's saved head folder)."""
    doc = info.training.get("head_state")
    if doc is None:
        raise ModelFolderError(f"{folder / 'model.json'} describes no head: the probe model folder is damaged")
    old = info.training.get("weights_file")
    try:
        arrays = read_arrays(folder / (old or "model.safetensors"))
    except Exception as e:  # noqa: BLE001 — safetensors raises its own types for a bad file
        raise ModelFolderError(f"cannot read the head's arrays in {folder} ({e}): the model folder is damaged") \
            from None
    if not old:
        arrays = {k.removeprefix(PREFIX): v for k, v in arrays.items() if k.startswith(PREFIX)}
    return head_from_state(arrays, doc, str(folder))


def load_predictor(folder: Path, info: ModelInfo, *, device: Any, precision: str, trust_pickle: bool,
                   trust_remote_code: bool = False) -> ProbePredictor:
    """The `probe` kind's loader (see `transferkit.model.folder.LOADERS`)."""
    head = load_head_of(folder, info)
    backbone = rebuild_backbone(info.backbone or {}, device=device, trust_pickle=trust_pickle,
                                trust_remote_code=trust_remote_code, where=str(folder))
    return ProbePredictor(backbone, head, precision, len(info.class_names), info.training.get("temperature"))
