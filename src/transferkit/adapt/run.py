"""Model folders of feature-level adaptation: model.json (kind adapt-features: how to rebuild the backbone, the
method, the scores) and model.safetensors (the classifier's arrays, plus CORAL/subspace transforms for the
record). No pickles. Folders written before model.json (run.json + model.safetensors) load the same way.

`load_run(path)` gives back an `AdaptRun` whose `predict_proba(features)` reads features extracted with the
backbone the folder names; `transferkit.model.load_model(path)` gives a model that reads raw items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.adapt.model import FeatureClassifier
from transferkit.backbones.registry import BUILD_OPTIONS, build_options
from transferkit.errors import AdaptError
from transferkit.io import read_arrays
from transferkit.model import ModelFolderError, ModelInfo, backbone_record, read_info, rebuild_backbone, write_model
from transferkit.model.migrate import adapt_metrics
from transferkit.runtime import peak_rss_mb

KIND = "adapt-features"
MODEL_FILE = "model.safetensors"

__all__ = ["KIND", "AdaptRun", "backbone_record", "load_predictor", "load_run", "save_run"]


@dataclass
class AdaptRun:
    """A loaded adaptation model: the classifier, its class names, and how to rebuild the backbone that feeds it."""

    path: Path
    info: ModelInfo
    model: FeatureClassifier

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def backbone(self) -> dict:
        """The backbone record (spec, build options, weights digest, feature_dim, preprocessing)."""
        return dict(self.info.backbone or {})

    @property
    def backbone_spec(self) -> str:
        return self.backbone["spec"]

    @property
    def backbone_options(self) -> dict:
        """Keyword arguments for `load_backbone(run.backbone_spec, **run.backbone_options)`."""
        return dict(self.backbone.get("build") or {})

    @property
    def method(self) -> str:
        return self.info.training["method"]

    @property
    def meta(self) -> dict:
        """model.json as a dict (the facts of `info`)."""
        return self.info.to_json()

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) for target-domain features from the run's backbone."""
        return self.model.predict_proba(features)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class ids (N,)."""
        return self.model.predict(features)


def _record(backbone: dict) -> dict:
    """A backbone record in the model-folder shape (earlier callers passed spec/pooling/image_size/pretrained)."""
    if "build" in backbone:
        return dict(backbone)
    return {**backbone, "build": build_options(**{k: backbone[k] for k in BUILD_OPTIONS if k in backbone})}


def save_run(path: str | Path, model: FeatureClassifier, *, backbone: dict, method: str,
             hyperparameters: dict, metrics: dict, extra: dict | None = None, precision: str = "fp32",
             data: dict | None = None, cost: dict | None = None) -> Path:
    """Write the model folder of an adapted classifier into `path` (created if missing); returns the folder.

    backbone: `transferkit.model.backbone_record(backbone)`; precision: that of the features it was fitted on."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise AdaptError(f"--out {folder} is a file: give a folder for the model")
    arrays = {f"model.{k}": np.asarray(v, np.float32) for k, v in model.arrays.items()}
    arrays.update({f"extra.{k}": np.asarray(v, np.float32) for k, v in model.extra.items()})
    scores, selection = adapt_metrics(metrics)
    record = _record(backbone)
    extra = dict(extra or {})
    modality = record.get("modality") or (record.get("preprocessing") or {}).get("kind", "image")
    info = ModelInfo(
        kind=KIND, task="classification", class_names=list(model.class_names), backbone=record,
        precision=precision, modality=modality,
        metrics=scores, data=data or {"name": extra.pop("source", None), "target": extra.pop("target", None)},
        cost={"trainable_parameters": int(sum(np.asarray(v).size for k, v in model.arrays.items()
                                              if k not in ("mean", "std"))),
              "peak_memory_mb": round(peak_rss_mb(), 1), **(cost or {})},
        training={"method": method, "hyperparameters": hyperparameters, "predictor": model.kind, **selection,
                  **extra})
    return write_model(folder, info, arrays)


def load_run(path: str | Path) -> AdaptRun:
    """Load an adaptation model folder (written by `save_run` / `transferkit adapt --out`, or an earlier version)."""
    folder = Path(path)
    try:
        info = read_info(folder)
    except ModelFolderError as e:
        raise AdaptError(f"{folder} is not an adaptation run folder ({e})") from None
    if info.kind != KIND:
        raise AdaptError(f"{folder} holds a model of kind {info.kind!r}, not {KIND!r}: not a feature-level "
                         "adaptation run")
    try:
        arrays = read_arrays(folder / MODEL_FILE)
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise AdaptError(f"{folder / MODEL_FILE} cannot be read ({e}): rerun `transferkit adapt --out`") from None
    model_arrays = {k.removeprefix("model."): v for k, v in arrays.items() if k.startswith("model.")}
    extra = {k.removeprefix("extra."): v for k, v in arrays.items() if k.startswith("extra.")}
    model = FeatureClassifier(info.training.get("predictor", ""), model_arrays, list(info.class_names), extra)
    return AdaptRun(folder, info, model)


class AdaptPredictor:
    """Raw items → the backbone's features (as extraction computes them) → the adapted classifier."""

    has_proba = True

    def __init__(self, backbone: Any, model: FeatureClassifier, precision: str) -> None:
        self.backbone, self.model, self.precision = backbone, model, precision

    def _features(self, items: Sequence[Any], batch_size: int) -> np.ndarray:
        from transferkit.features import embed_items

        return embed_items(self.backbone, items, batch_size=batch_size, precision=self.precision)

    def outputs(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        return self.model.predict_proba(self._features(items, batch_size))

    def embed(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """What the classifier reads: standardised (projected, bottleneck) features."""
        return self.model.embed(self._features(items, batch_size))


def load_predictor(folder: Path, info: ModelInfo, *, device: Any, precision: str, trust_pickle: bool,
                   trust_remote_code: bool = False) -> AdaptPredictor:
    """The adapt-features kind's loader (see `transferkit.model.folder.LOADERS`)."""
    run = load_run(folder)
    bb = rebuild_backbone(info.backbone or {}, device=device, trust_pickle=trust_pickle,
                          trust_remote_code=trust_remote_code, where=str(folder))
    return AdaptPredictor(bb, run.model, precision)
