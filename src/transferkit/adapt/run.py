"""Run folders of feature-level adaptation: `run.json` (what was done, how to rebuild the backbone, metrics) and
`model.safetensors` (classifier arrays, plus CORAL/subspace transforms for the record). No pickles.

`load_run(path)` gives back an `AdaptRun` whose `predict_proba(features)` reads features extracted with the
backbone that `backbone_spec` / `backbone` describe (e.g. `load_backbone(run.backbone_spec, **run.backbone_options)`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.adapt.model import FeatureClassifier
from transferkit.errors import AdaptError
from transferkit.io import read_arrays, read_json, write_arrays, write_json

KIND = "adapt-features"
FORMAT_VERSION = 1
RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"


def backbone_record(backbone: Any) -> dict:
    """What someone needs to rebuild the backbone: spec, pooling, image_size, pretrained (+ its identity)."""
    ident = backbone.identity()
    pre = ident.get("preprocessing") or {}
    return {"spec": ident["spec"], "pooling": ident["pooling"], "pretrained": ident["pretrained"],
            "image_size": pre.get("image_size") or pre.get("size"), "feature_dim": ident["feature_dim"],
            "weights": ident["weights"], "preprocessing": pre}


@dataclass
class AdaptRun:
    """A loaded run: the classifier, its class names, and how to rebuild the backbone that feeds it."""

    path: Path
    meta: dict
    model: FeatureClassifier

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def backbone(self) -> dict:
        """The backbone record of run.json (spec, pooling, image_size, pretrained, feature_dim, weights)."""
        return dict(self.meta["backbone"])

    @property
    def backbone_spec(self) -> str:
        return self.meta["backbone"]["spec"]

    @property
    def backbone_options(self) -> dict:
        """Keyword arguments for `load_backbone(run.backbone_spec, **run.backbone_options)`."""
        b = self.meta["backbone"]
        pooling = b.get("pooling") or "default"
        if "+" in pooling:  # a derived name such as st's "mean+normalize" is what "default" builds
            pooling = "default"
        opts = {"pooling": pooling, "pretrained": bool(b.get("pretrained", True))}
        if b.get("image_size"):
            opts["image_size"] = int(b["image_size"])
        return opts

    @property
    def method(self) -> str:
        return self.meta["method"]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) for target-domain features from the run's backbone."""
        return self.model.predict_proba(features)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class ids (N,)."""
        return self.model.predict(features)


def save_run(path: str | Path, model: FeatureClassifier, *, backbone: dict, method: str,
             hyperparameters: dict, metrics: dict, extra: dict | None = None) -> Path:
    """Write run.json + model.safetensors into folder `path` (created if missing); returns the folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise AdaptError(f"--out {folder} is a file: give a folder for the run")
    arrays = {f"model.{k}": np.asarray(v, np.float32) for k, v in model.arrays.items()}
    arrays.update({f"extra.{k}": np.asarray(v, np.float32) for k, v in model.extra.items()})
    write_arrays(folder / MODEL_FILE, arrays, metadata={"format": "transferkit.adapt-features"})
    doc = {"kind": KIND, "format_version": FORMAT_VERSION, "backbone": backbone, "class_names": model.class_names,
           "method": method, "hyperparameters": hyperparameters, "metrics": metrics, "predictor": model.kind,
           **(extra or {})}
    write_json(folder / RUN_FILE, doc)
    return folder


def load_run(path: str | Path) -> AdaptRun:
    """Load a run folder written by `save_run` / `transferkit adapt --out` (safetensors + JSON only)."""
    folder = Path(path)
    if not (folder / RUN_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise AdaptError(f"{folder} is not an adaptation run folder: it needs {RUN_FILE} and {MODEL_FILE} "
                         "(written by `transferkit adapt --out`)")
    try:
        meta = read_json(folder / RUN_FILE)
    except json.JSONDecodeError as e:
        raise AdaptError(f"{folder / RUN_FILE} is not valid JSON ({e}): rerun `transferkit adapt --out`") from None
    if meta.get("kind") != KIND:
        raise AdaptError(f"{folder / RUN_FILE} has kind {meta.get('kind')!r}, not {KIND!r}: not a feature-level "
                         "adaptation run")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise AdaptError(f"{folder} was written by a newer transferkit (format {meta['format_version']}): upgrade")
    try:
        arrays = read_arrays(folder / MODEL_FILE)
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise AdaptError(f"{folder / MODEL_FILE} cannot be read ({e}): rerun `transferkit adapt --out`") from None
    model_arrays = {k.removeprefix("model."): v for k, v in arrays.items() if k.startswith("model.")}
    extra = {k.removeprefix("extra."): v for k, v in arrays.items() if k.startswith("extra.")}
    model = FeatureClassifier(meta.get("predictor", ""), model_arrays, list(meta["class_names"]), extra)
    return AdaptRun(folder, meta, model)
