"""Write, read and load model folders: `model.json` + `model.safetensors` + a model card, for every route.

Loading goes through a table of kinds whose loaders are named "module:function" and imported when called, so
this layer knows no route: each route registers how its models are rebuilt. Folders written by earlier versions
(a fine-tuning run's run.json, a feature-adaptation run, a saved probe head) are read as they are (migrated in
memory), never refused.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from transferkit.io import atomic_write, read_json, write_json
from transferkit.model.card import render_card
from transferkit.model.info import CARD_FILE, INFO_FILE, WEIGHTS_FILE, ModelFolderError, ModelInfo

#: kind -> the "module:function" that rebuilds its predictor: f(folder, info, *, device, precision, trust_pickle)
LOADERS = {
    "probe": "transferkit.heads.probe_model:load_predictor",
    "baseline": "transferkit.baselines.model:load_predictor",
    "hybrid": "transferkit.baselines.model:load_predictor",
    "finetune": "transferkit.finetune.run:load_predictor",
    "adapt-e2e": "transferkit.finetune.run:load_predictor",
    "source-free": "transferkit.finetune.run:load_predictor",
    "adapt-features": "transferkit.adapt.run:load_predictor",
    "ensemble": "transferkit.model.ensemble:load_predictor",
}
KINDS = tuple(LOADERS)
#: the kinds whose backbone runs through the feature extractor's inference runner, which has an int8 path
INT8_KINDS = ("probe", "adapt-features")


class Predictor(Protocol):
    """What a kind's loader returns: raw items in, outputs out."""

    has_proba: bool

    def outputs(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """(N, C) probabilities (or decision scores when `has_proba` is False) for a classifier, (N,) values for a
        regressor."""
        ...

    def embed(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """(N, D) features: the representation the model's last layer reads."""
        ...


def write_model(folder: str | Path, info: ModelInfo, weights: dict[str, Any] | None = None) -> Path:
    """Write model.json and the model card into `folder` (and `weights` as model.safetensors when given: numpy
    arrays or torch tensors). The weights go first and model.json last, so a folder with a model.json is whole."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ModelFolderError(f"{folder} is a file: give a folder for the model")
    folder.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        _write_weights(folder / WEIGHTS_FILE, weights)
    card = render_card(info, folder.name)
    atomic_write(folder / CARD_FILE, lambda p: p.write_text(card, encoding="utf-8"))
    write_json(folder / INFO_FILE, info.to_json())
    return folder


def _write_weights(path: Path, weights: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    clean = {k: (v.detach().cpu().contiguous().clone() if isinstance(v, torch.Tensor)
                 else torch.from_numpy(np.ascontiguousarray(v))) for k, v in weights.items()}
    atomic_write(path, lambda p: save_file(clean, str(p), metadata={"format": "transferkit.model"}))


def is_model_folder(folder: str | Path) -> bool:
    """Whether `folder` holds a model (model.json, or a finished run of an earlier version)."""
    try:
        read_info(folder)
        return True
    except ModelFolderError:
        return False


def read_info(folder: str | Path) -> ModelInfo:
    """The ModelInfo of a model folder (model.json, or migrated from an earlier version's files)."""
    folder = Path(folder).expanduser()
    if (folder / INFO_FILE).is_file():
        try:
            doc = read_json(folder / INFO_FILE)
        except ValueError as e:
            raise ModelFolderError(f"{folder / INFO_FILE} is not valid JSON ({e}): the model folder is damaged") \
                from None
        return ModelInfo.from_json(doc, str(folder / INFO_FILE))
    from transferkit.model.migrate import migrate

    info = migrate(folder)
    if info is None:
        if not folder.exists():
            raise ModelFolderError(f"{folder} does not exist: give a model folder (the --out of probe, finetune, "
                                   "pretrain or adapt, or compare's OUT/best)")
        raise ModelFolderError(f"{folder} is not a model folder (no {INFO_FILE}): give the --out folder of probe, "
                               "finetune, pretrain or adapt, or compare's OUT/best")
    return info


@dataclass
class LoadedModel:
    """A model folder, loaded: its facts (`info`) and the predictor its kind rebuilt."""

    path: Path
    info: ModelInfo
    predictor: Predictor

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def modality(self) -> str:
        return self.info.modality

    @property
    def has_proba(self) -> bool:
        return self.info.is_classifier and self.predictor.has_proba

    def outputs(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Probabilities (or scores) per class, or values (see `Predictor.outputs`)."""
        return self.predictor.outputs(list(items), batch_size)

    def predict_proba(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """(N, C) class probabilities, columns in `class_names` order."""
        if not self.info.is_classifier:
            raise ModelFolderError(f"{self.path} is a regression model: it predicts values, not probabilities")
        if not self.predictor.has_proba:
            raise ModelFolderError(f"{self.path} ({self.info.kind}, {self.info.training.get('head', '')}) gives "
                                   "decision scores, not probabilities: use predict, or a logreg/knn head")
        return self.outputs(items, batch_size)

    def predict(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Class indices (into `class_names`) for a classifier, values for a regressor."""
        out = self.outputs(items, batch_size)
        return out.argmax(1) if self.info.is_classifier else out

    def embed(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """The features the model's last layer reads, for raw items."""
        return self.predictor.embed(list(items), batch_size)


def load_model(folder: str | Path, *, device: Any = "auto", precision: str = "auto", trust_pickle: bool = False,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load the model folder at `folder` for prediction on `device`.

    precision "auto" is the precision the model was made in (model.json); "fp32"/"bf16" override it; "int8"
    (CPU) quantises the backbone's linear layers for the feature-route kinds (probe, adapt-features), whose heads
    read features (`features.inference.quantised_linear`).
    trust_pickle and trust_remote_code are never read from the folder: a model handed over by someone else
    cannot opt itself in.
    """
    from transferkit.runtime import INFERENCE_PRECISIONS

    folder = Path(folder).expanduser()
    info = read_info(folder)
    if precision not in INFERENCE_PRECISIONS:
        raise ModelFolderError(f"--precision {precision!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    if precision == "int8" and info.kind not in INT8_KINDS:
        raise ModelFolderError(f"--precision int8 quantises feature-route models ({', '.join(INT8_KINDS)}); this is a "
                               f"{info.kind} model: use `transferkit export --int8` for an int8 ONNX copy of it")
    loader = LOADERS.get(info.kind)
    if loader is None:
        raise ModelFolderError(f"{folder / INFO_FILE} has kind {info.kind!r}: this version reads "
                               f"{', '.join(KINDS)}; upgrade transferkit")
    from transferkit.runtime import resolve_device, tune_allocator

    if resolve_device(device).type == "cpu":
        tune_allocator()
    module, _, function = loader.partition(":")
    predictor = getattr(importlib.import_module(module), function)(
        folder, info, device=device, precision=info.precision if precision == "auto" else precision,
        trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    return LoadedModel(folder, info, predictor)
