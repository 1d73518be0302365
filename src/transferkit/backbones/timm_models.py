"""timm backbones (`timm:NAME`, also `timm:hf-hub:ORG/NAME`): pretrained weights through timm's own loading."""

from __future__ import annotations

import torch
from torch import nn

from transferkit.backbones.base import Backbone, Block, LayerCapture, check_pooling, infer_feature_dim, pool_tensor
from transferkit.backbones.checkpoint import read_state_dict
from transferkit.backbones.preprocess import image_collate
from transferkit.errors import UnknownBackboneError, WeightsNotFoundError


def _blocks(model: nn.Module) -> list[Block]:
    """timm's own fine-grained parameter groups (stem, each block, final norm), classifier excluded."""
    from timm.models import group_parameters

    try:
        groups = group_parameters(model, model.group_matcher(coarse=False))
    except (AttributeError, NotImplementedError):
        groups = {i: [n] for i, (n, _) in enumerate(model.named_parameters())}
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_params = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
    params = dict(model.named_parameters())
    blocks = []
    for gid in sorted(groups):
        names = tuple(n for n in groups[gid] if id(params[n]) not in head_params)
        if names:
            blocks.append(Block(_group_name(names), names))
    return blocks


def _group_name(names: tuple[str, ...]) -> str:
    """A readable block name from its parameter names: `layer1.0`, `blocks.11+norm`, `cls_token+patch_embed`."""
    keys: list[str] = []
    for n in names:
        parts = n.split(".")[:-1] or n.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit()]
        key = ".".join(parts[: digits[-1] + 1]) if digits else parts[0]
        if not any(key == k or key.startswith(k + ".") for k in keys):
            keys.append(key)
    return "+".join(keys)


def load(name: str, *, pretrained: bool = True, pooling: str = "default", image_size: int | None = None,
         weights: str | None = None, trust_pickle: bool = False) -> Backbone:
    """Create timm model `name` (pretrained unless told otherwise); features are its pre-logits.

    weights: a local weight file for the architecture. A .safetensors file loads as is; a pickle-based file
    (.pt/.pth/.bin/.ckpt) is refused unless `trust_pickle`, and even then is read with weights_only loading.
    """
    import timm

    spec = f"timm:{name}"
    pooling = check_pooling(spec, pooling, ["mean", "cls", "avg"])
    if not name.startswith("hf-hub:") and not timm.list_models(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:6]
        raise UnknownBackboneError(f"unknown backbone {spec}: timm has no such model" +
                                   (f" (close: {', '.join(close)})" if close else ""))
    kwargs = {}
    if weights:  # read here, safely, and hand timm the tensors: timm never unpickles the user's file
        state = read_state_dict(weights, trust_pickle=trust_pickle)
        kwargs["pretrained_cfg_overlay"] = {"state_dict": state, "source": "state_dict"}
    try:
        model = None
        if image_size:  # a transformer is built for its input size (its position embeddings resampled to it)
            try:
                model = timm.create_model(name, pretrained=pretrained or bool(weights), img_size=image_size, **kwargs)
            except TypeError:  # no fixed input size (a CNN): it takes any size as it is
                model = None
        if model is None:
            model = timm.create_model(name, pretrained=pretrained or bool(weights), **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if weights:
            raise WeightsNotFoundError(f"weights file {weights} does not fit {spec}: {first}") from e
        raise WeightsNotFoundError(f"cannot load pretrained weights for {spec}: {first} — offline, use "
                                   "--random-init or a bundled model (effnet:lite0)") from e
    model.eval()
    cfg = timm.data.resolve_model_data_config(model)
    size = int(image_size or cfg["input_size"][-1])
    collate = image_collate(size, cfg["mean"], cfg["std"], crop_pct=cfg.get("crop_pct", 1.0) if not image_size else 1.0,
                            interpolation=cfg.get("interpolation", "bilinear") if cfg.get("interpolation") in
                            ("bilinear", "bicubic", "nearest") else "bilinear")
    capture = LayerCapture(model, spec, pooling[6:]) if pooling.startswith("layer:") else None
    prefix = getattr(model, "num_prefix_tokens", 1)

    def encode(m: nn.Module, batch: dict) -> torch.Tensor:
        feats = m.forward_features(batch["pixel_values"])
        if capture is not None:
            return pool_tensor(capture.take())
        if pooling == "default":
            return m.forward_head(feats, pre_logits=True)
        if feats.dim() == 3:
            return feats[:, 0] if pooling == "cls" else feats[:, prefix:].mean(1)
        return pool_tensor(feats)

    dim = infer_feature_dim(model, collate, encode, [torch.zeros(size, size, 3).numpy()])
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    return Backbone(
        spec=spec, model=model, modality="image", collate=collate, encode=encode, feature_dim=dim,
        pooling=pooling, blocks=_blocks(model), preprocessing=collate.describe(),
        pretrained=pretrained or bool(weights),
        source_head=classifier if isinstance(classifier, nn.Linear) else None,
        info={"architecture": name},
    )
