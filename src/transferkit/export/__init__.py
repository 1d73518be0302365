"""Export a model folder for serving without transferkit: ONNX (fp32, optionally int8) + its preprocessing."""

from transferkit.export.networks import ExportError, model_network
from transferkit.export.onnx import FORMATS, export_onnx

__all__ = ["FORMATS", "ExportError", "export_onnx", "model_network"]
