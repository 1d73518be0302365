"""Predict with any run folder: a fine-tuning run (`finetune`/`pretrain`) or a feature-level adaptation run.

Both kinds rebuild their backbone from the spec and options in run.json and refuse to run if the
rebuilt weights differ from the ones the run was trained on. No pickles are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.dataset import Dataset
from transferkit.errors import TransferkitError
from transferkit.io import read_json


@dataclass
class AdaptedModel:
    """A feature-level adaptation run with its rebuilt backbone: raw items in, class probabilities out."""

    run: Any
    backbone: Any
    task: str = "classification"

    @property
    def class_names(self) -> list[str]:
        return self.run.class_names

    def predict_proba(self, data: Dataset, batch_size: int = 64) -> np.ndarray:
        from transferkit.features import embed_items

        return self.run.predict_proba(embed_items(self.backbone, list(data.items), batch_size=batch_size,
                                                  precision=self.run.meta.get("precision", "fp32")))

    def predict(self, data: Dataset, batch_size: int = 64) -> np.ndarray:
        return self.predict_proba(data, batch_size).argmax(1)


def load_any_run(path: str | Path, *, device: str = "cpu", trust_pickle: bool = False) -> Any:
    """The model of a run folder, whatever wrote it: `FineTunedModel` or `AdaptedModel`."""
    folder = Path(path).expanduser()
    run_file = folder / "run.json"
    if not run_file.is_file():
        raise TransferkitError(f"{folder} is not a transferkit run folder (no run.json): give the --out folder of "
                               "`transferkit finetune`, `pretrain` or `adapt`")
    try:
        kind = read_json(run_file).get("kind")
    except (ValueError, AttributeError) as e:
        raise TransferkitError(f"{run_file} is not a JSON object ({e}); the run folder is damaged") from e
    if kind == "finetune":
        from transferkit.finetune import load_run

        return load_run(folder, device=device, trust_pickle=trust_pickle)
    if kind == "adapt-features":
        from transferkit.adapt import load_run as load_adapt_run
        from transferkit.backbones import load_backbone

        run = load_adapt_run(folder)
        backbone = load_backbone(run.backbone_spec, device=device, trust_pickle=trust_pickle, **run.backbone_options)
        recorded = run.backbone.get("weights")
        if recorded and backbone.weights_digest() != recorded:
            raise TransferkitError(f"the weights {run.backbone_spec} loads now differ from those {folder} was "
                                   "adapted on (digest mismatch): use the same weights version")
        return AdaptedModel(run, backbone)
    raise TransferkitError(f"{run_file} has kind {kind!r}: this version predicts with 'finetune' and "
                           "'adapt-features' runs")
