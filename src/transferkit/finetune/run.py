"""A finished run folder, rebuilt from its files alone: predict with it, or use it as the next task's backbone.

The backbone is rebuilt from its spec (with the same pooling, image size and max length), checked
against the recorded digest of its pretrained weights when the run only saved what it changed,
LoRA adapters are re-injected, and the saved weights are loaded. No pickles are read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.backbones.base import Backbone
from transferkit.data.dataset import Dataset
from transferkit.errors import DataError
from transferkit.finetune.checkpoint import RunFolder, load_model_tensors, load_tensors
from transferkit.finetune.config import FinetuneConfig, FinetuneError
from transferkit.finetune.model import TransferModel


@dataclass
class FineTunedModel:
    """A trained TransferModel with its labels: `predict`, `predict_proba`, `outputs`, `as_backbone`."""

    folder: RunFolder
    info: dict
    backbone: Backbone
    model: TransferModel

    @property
    def task(self) -> str:
        return self.info["task"]

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def precision(self) -> str:
        """The precision the run trained and validated in ("bf16" or "fp32"), which prediction uses too."""
        return "bf16" if self.info.get("precision") == "bf16" else "fp32"  # earlier versions wrote "no" for fp32

    def outputs(self, data: Dataset | Any, batch_size: int = 64, precision: str | None = None) -> np.ndarray:
        """Raw outputs for raw items or a Dataset: logits (classification) or values (regression), computed in
        the run's precision unless `precision` says otherwise."""
        from transferkit.finetune.loop import predict_outputs
        from transferkit.runtime import autocast

        ds = data if isinstance(data, Dataset) else _as_dataset(data, self.backbone.modality)
        device = next(self.model.parameters()).device
        out = predict_outputs(self.model, ds, self.backbone.collate, batch_size=batch_size, device=device,
                              autocast=lambda: autocast(device, precision or self.precision))
        if self.task == "regression":
            scale = self.info["target_scale"]
            return out[:, 0] * scale["std"] + scale["mean"]
        return out

    def predict_proba(self, data: Dataset | Any, batch_size: int = 64, precision: str | None = None) -> np.ndarray:
        """Class probabilities (N, C) in the order of `class_names`."""
        if self.task != "classification":
            raise FinetuneError("predict_proba needs a classification run; this run is a regression")
        from transferkit.heads.softmax import probabilities

        return probabilities(self.outputs(data, batch_size, precision).astype(np.float64))

    def predict(self, data: Dataset | Any, batch_size: int = 64) -> np.ndarray:
        """Class indices (classification) or values (regression)."""
        out = self.outputs(data, batch_size)
        return out.argmax(1) if self.task == "classification" else out

    def as_backbone(self) -> Backbone:
        """The fine-tuned network as a Backbone (LoRA merged in): the starting point of the next task.

        Its source head is this run's head, so LEEP/NCE can score it like any ImageNet classifier.
        """
        from transferkit.finetune import lora

        net = lora.merge(self.model.backbone) if self.info.get("lora_modules") else self.model.backbone
        return replace(self.backbone, spec=f"run:{self.folder.path.resolve()}", model=net, _digest=None,
                       pretrained=True, build={"spec": f"run:{self.folder.path.resolve()}"},
                       source_head=self.model.head if self.task == "classification" else None,
                       source_classes=self.class_names or None,
                       info={**self.backbone.info, "run": str(self.folder.path.resolve()), "base": self.backbone.spec})


class FinetunePredictor:
    """A fine-tuned (or end-to-end / source-free adapted) network as a model folder's predictor."""

    has_proba = True

    def __init__(self, run: FineTunedModel, precision: str) -> None:
        self.run, self.precision = run, precision

    def _data(self, items: Any) -> Dataset:
        # raw items as they come (no fingerprint: prediction needs none, and hashing every file costs)
        return Dataset(list(items), None, (), self.run.backbone.modality, name="predict", fingerprint="-")

    def outputs(self, items: Any, batch_size: int = 64) -> np.ndarray:
        if self.run.task == "classification":
            return self.run.predict_proba(self._data(items), batch_size, self.precision)
        return self.run.outputs(self._data(items), batch_size, self.precision)

    def embed(self, items: Any, batch_size: int = 64) -> np.ndarray:
        """The backbone's pooled features (before the head's standardisation), in the run's precision."""
        import torch

        from transferkit.runtime import autocast

        model, collate = self.run.model, self.run.backbone.collate
        device = next(model.parameters()).device
        items = list(items)
        out = []
        with torch.inference_mode(), autocast(device, self.precision):
            for s in range(0, len(items), batch_size):
                batch = {k: v.to(device) for k, v in collate(items[s: s + batch_size]).items()}
                out.append(model.features(batch).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.run.backbone.feature_dim), np.float32)


def load_predictor(folder: Path, info: Any, *, device: Any, precision: str, trust_pickle: bool,
                   trust_remote_code: bool = False) -> FinetunePredictor:
    """The loader of the finetune, adapt-e2e and source-free kinds (see `transferkit.model.folder.LOADERS`)."""
    return FinetunePredictor(load_run(folder, device=device, trust_pickle=trust_pickle,
                                      trust_remote_code=trust_remote_code), precision)


def run_backbone(path: str, *, trust_pickle: bool = False) -> Backbone:
    """The `run:PATH` backbone source: a finished run's network as a Backbone (see `FineTunedModel.as_backbone`)."""
    return load_run(path, trust_pickle=trust_pickle).as_backbone()


def _as_dataset(items: Any, modality: str) -> Dataset:
    from transferkit.data.loaders import from_arrays

    ds = from_arrays(items)
    if ds.modality != modality:
        raise DataError(f"the run's backbone takes {modality} items, got {ds.modality} items")
    return ds


def load_run(path: str | Path, *, device: str = "cpu", backbone: Backbone | None = None,
             trust_pickle: bool = False, trust_remote_code: bool = False) -> FineTunedModel:
    """Rebuild a finished run from its folder. `backbone` overrides the rebuild (runs on in-process modules).

    trust_pickle is never read from the folder: a run handed over by someone else cannot opt itself in.
    """
    from transferkit.backbones.registry import BUILD_OPTIONS, build_options
    from transferkit.finetune import lora

    folder = RunFolder(path)
    info = folder.read()
    if info.get("kind") != "finetune":
        raise FinetuneError(f"{folder.path} holds a {info.get('kind')!r} run, not a fine-tuning run")
    if info.get("status") != "complete":
        raise FinetuneError(f"{folder.path} holds an unfinished run: finish it with `transferkit finetune ... "
                            f"--out {folder.path} --resume` first")
    spec = info["backbone"]["spec"]
    if backbone is None:
        if spec.startswith("module:"):
            raise FinetuneError(f"{folder.path} was trained on an in-process module ({spec}): pass backbone= "
                                "to load_run with the same module")
        from transferkit.model import rebuild_backbone

        b = info["backbone"]
        record = {"spec": spec, "build": build_options(**{k: b.get(k) for k in BUILD_OPTIONS if k in b}),
                  "preprocessing": b.get("preprocessing")}
        backbone = rebuild_backbone(record, device="cpu", trust_pickle=trust_pickle,
                                    trust_remote_code=trust_remote_code, check_digest=False, where=str(folder.path))
    saved = set(info["saved_parameters"])
    config = FinetuneConfig.from_dict(info["config"])
    base_digest = backbone.weights_digest()
    if info.get("lora_modules"):
        lora.inject(backbone, replace(config, lora_targets=",".join(info["lora_modules"])))
    model = TransferModel(backbone, len(info["class_names"]) or 1)
    everything = {n for n, _ in model.named_parameters()}
    if not everything <= saved:  # part of the network comes from the pretrained weights: they must be the same
        if base_digest != info["backbone"]["base_digest"]:
            raise FinetuneError(f"the weights {spec} loads now differ from those {folder.path} was trained on "
                                "(digest mismatch): use the same weights version")
    load_model_tensors(model, load_tensors(folder.model_file), folder.model_file)
    from transferkit.runtime import resolve_device

    model.to(resolve_device(device)).eval()
    return FineTunedModel(folder, info, backbone, model)
