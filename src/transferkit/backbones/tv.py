"""torchvision backbones (`tv:NAME`): `torchvision.models.get_model` with its DEFAULT weights.

Features are the input of the last linear layer (the pre-logits), so the same code serves ResNets,
MobileNets, EfficientNets, ConvNeXts, ViTs and VGGs.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.backbones.base import (
    Backbone,
    LayerCapture,
    blocks_from_prefixes,
    check_pooling,
    infer_feature_dim,
    last_linear,
    pool_tensor,
    set_submodule,
)
from transferkit.backbones.preprocess import image_collate
from transferkit.errors import UnknownBackboneError, WeightsNotFoundError


def load(name: str, *, pretrained: bool = True, pooling: str = "default", image_size: int | None = None) -> Backbone:
    """Build torchvision model `name`; pre-logits features (the classifier is kept as the source head)."""
    import torchvision

    spec = f"tv:{name}"
    pooling = check_pooling(spec, pooling, [])
    if name not in torchvision.models.list_models():
        raise UnknownBackboneError(f"unknown backbone {spec}: see torchvision.models.list_models()")
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
        raise WeightsNotFoundError(f"cannot download weights for {spec} ({type(e).__name__}); offline, use "
                                   "--random-init or a bundled model (effnet:lite0)") from e
    model.eval()
    head = last_linear(model)
    if head is None:
        raise UnknownBackboneError(f"{spec} has no linear classifier to take pre-logits features from")
    head_name, head_module = head
    set_submodule(model, head_name, nn.Identity())
    if weights is not None:
        tf = weights.transforms()
        size, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
        mean, std = tf.mean, tf.std
    else:
        size, resize, mean, std = 224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    if image_size:
        size, resize = int(image_size), int(image_size)
    collate = image_collate(size, mean, std, crop_pct=size / resize)
    capture = LayerCapture(model, spec, pooling[6:]) if pooling.startswith("layer:") else None

    def encode(m: nn.Module, batch: dict) -> torch.Tensor:
        out = m(batch["pixel_values"])
        return pool_tensor(capture.take()) if capture is not None else out.flatten(1)

    dim = infer_feature_dim(model, collate, encode, [torch.zeros(size, size, 3).numpy()])
    body = model.get_submodule("features") if hasattr(model, "features") else model
    prefix = "features." if body is not model else ""
    groups = [(f"{prefix}{n}", [f"{prefix}{n}"]) for n, c in body.named_children()
              if any(True for _ in c.parameters())]
    if body is not model:
        groups += [(n, [n]) for n, c in model.named_children() if n != "features" and any(True for _ in c.parameters())]
    return Backbone(
        spec=spec, model=model, modality="image", collate=collate, encode=encode, feature_dim=dim,
        pooling="default" if capture is None else pooling, blocks=blocks_from_prefixes(model, groups),
        preprocessing=collate.describe(), pretrained=pretrained, source_head=head_module,
        source_classes=list(weights.meta.get("categories", [])) or None if weights is not None else None,
        info={"architecture": name},
    )
