"""Any in-process `torch.nn.Module` as a Backbone: the user says how items become tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.backbones.base import Backbone, Modality, largest_layer_stack, layered_blocks, pool_tensor
from transferkit.backbones.preprocess import ImageCollate, image_collate
from transferkit.errors import TransferkitError


def from_module(
    module: nn.Module,
    *,
    modality: Modality = "image",
    collate: Callable[[Sequence[Any]], dict] | None = None,
    image_size: int = 224,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    name: str | None = None,
) -> Backbone:
    """Wrap `module`: its output, averaged over any spatial/token axes, is the feature.

    `collate` turns a list of raw items into a dict of tensors passed to `module(**batch)` (images
    default to an ImageNet-normalised `pixel_values` tensor passed positionally).
    """
    if collate is None:
        if modality != "image":
            raise TransferkitError("a text nn.Module backbone needs a `collate` that tokenises strings")
        collate = image_collate(image_size, mean, std)
    positional = isinstance(collate, ImageCollate)

    def encode(m: nn.Module, batch: dict) -> torch.Tensor:
        out = m(batch["pixel_values"]) if positional else m(**batch)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if hasattr(out, "last_hidden_state"):
            out = out.last_hidden_state
        return pool_tensor(out, batch.get("attention_mask"))

    module.eval()
    sample = [np.zeros((image_size, image_size, 3), np.uint8)] if modality == "image" else ["a probe sentence"]
    with torch.inference_mode():
        dim = int(encode(module, collate(sample)).shape[-1])
    spec = f"module:{name or type(module).__name__}"
    describe = collate.describe() if hasattr(collate, "describe") else {"kind": "custom", "collate": repr(collate)}
    return Backbone(spec=spec, model=module, modality=modality, collate=collate, encode=encode, feature_dim=dim,
                    pooling="mean", blocks=layered_blocks(module, largest_layer_stack(module)), preprocessing=describe)
