"""The model folder: one format every route hands over (model.json + model.safetensors + a model card), and the
one way to load it. `predict`, `export`, `serve`, `transferkit.load` and compare/fit's OUT/best/ read only this.

    from transferkit.model import load_model, read_info
    model = load_model("out/best")            # rebuilds the backbone (digest-checked) and the head or network
    model.predict(["a new text"]), model.info.metrics
"""

from transferkit.model.backbone import backbone_record, build_from_identity, rebuild_backbone, record_from_features
from transferkit.model.folder import (
           KINDS,
           LOADERS,
           LoadedModel,
           Predictor,
           is_model_folder,
           load_model,
           read_info,
           write_model,
)
from transferkit.model.info import CARD_FILE, INFO_FILE, WEIGHTS_FILE, ModelFolderError, ModelInfo

__all__ = ["CARD_FILE", "INFO_FILE", "KINDS", "LOADERS", "WEIGHTS_FILE", "LoadedModel", "ModelFolderError",
           "ModelInfo", "Predictor", "backbone_record", "build_from_identity", "is_model_folder", "load_model",
           "read_info", "rebuild_backbone", "record_from_features", "write_model"]
