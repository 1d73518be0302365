"""What a model folder says about its model: `model.json`, one record for every route (probe, fine-tuning,
adaptation, baseline, ensemble), read by `predict`, `export`, `serve`, `transferkit.load` and the model card."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from transferkit.errors import TransferkitError

FORMAT = "transferkit.model"
FORMAT_VERSION = 1
INFO_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
TASKS = ("classification", "regression")


class ModelFolderError(TransferkitError):
    """A folder that is not a model folder, a damaged one, or one of a kind this version cannot read."""


@dataclass
class ModelInfo:
    """The facts of model.json.

    kind: probe | baseline | hybrid | finetune | adapt-features | adapt-e2e | source-free | ensemble.
    backbone: how to rebuild the frozen or starting backbone: spec, build options (pretrained, pooling,
    image_size, max_length), weights digest, modality, feature dimension and preprocessing; None for a model
    without one (the TF-IDF baseline).
    precision: the precision its features/weights were computed in ("fp32" or "bf16"): prediction uses it.
    metrics: {"val": {...}, "test": {...}, "target": {...}} as measured when it was made.
    data: what it was trained on: name, fingerprint, size, where it came from and how it was split.
    cost: wall_time_s, peak_memory_mb, trainable_parameters, total_parameters.
    training: how it was trained (the route's own record: head, fine-tuning config, adaptation method, …).
    """

    kind: str
    task: str
    class_names: list[str]
    backbone: dict | None = None
    precision: str = "fp32"
    modality: str = "image"
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    created: str = ""
    transferkit_version: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelFolderError(f"model task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.precision not in ("fp32", "bf16"):
            raise ModelFolderError(f"model precision {self.precision!r} is neither fp32 nor bf16")
        if not self.created:
            self.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if not self.transferkit_version:
            from transferkit import __version__

            self.transferkit_version = __version__

    def to_json(self) -> dict:
        """The JSON document written to model.json."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, doc: Any, where: str = INFO_FILE) -> ModelInfo:
        """Read model.json's document; a missing field or a newer format is an error naming the file."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ModelFolderError(f"{where} is not a transferkit model description: write the folder again")
        version = doc.get("format_version", 0)
        if not isinstance(version, int):
            raise ModelFolderError(f"{where} has format_version {version!r}, not a number: the model folder is damaged")
        if version > FORMAT_VERSION:
            raise ModelFolderError(f"{where} was written by a newer transferkit (model format "
                                   f"{doc['format_version']}): upgrade transferkit to read it")
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in doc.items() if k in names})
        except TypeError as e:
            raise ModelFolderError(f"{where} lacks a field ({e}): the model folder is damaged") from None

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"
