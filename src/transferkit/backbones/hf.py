"""Hugging Face transformers backbones (`hf:ID_OR_PATH`), text and vision.

Weights load through `from_pretrained` (hub id, or a local folder), so online users get the real
model and offline users a local copy. `trust_remote_code` stays off unless asked for.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.backbones.base import (
    Backbone,
    LayerCapture,
    check_pooling,
    infer_feature_dim,
    largest_layer_stack,
    layered_blocks,
    pool_tensor,
)
from transferkit.backbones.checkpoint import pickle_only_folder, refuse_pickle
from transferkit.backbones.preprocess import TextCollate, image_collate
from transferkit.errors import WeightsNotFoundError

TEXT_POOLINGS = ["mean", "cls", "pooler"]


def _load_error(spec: str, what: str, e: Exception) -> WeightsNotFoundError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    hint = ("offline (HF_HUB_OFFLINE=1): pass a local folder, e.g. hf:/path/to/model" if offline
            else "check the model id or give a local folder")
    return WeightsNotFoundError(f"cannot load {what} of {spec}: {first[:200]} — {hint}")


@contextmanager
def _no_weight_loading_bars() -> Iterator[None]:
    """Hide transformers' per-tensor "Loading weights" bars (our own bars show progress), then restore."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    was_on, hub_was_on = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns the hub's bars off
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        (enable_progress_bars if hub_was_on else disable_progress_bars)()


def _from_pretrained(spec: str, ident: str, *, pretrained: bool, trust_remote_code: bool,
                     trust_pickle: bool = False) -> tuple[Any, nn.Module]:
    """(config, model) for a hub id or folder; a random-init model when `pretrained` is False.

    Weights load from safetensors only, unless `trust_pickle` lets a folder or repo without them fall back
    to its pickle-based `pytorch_model.bin` (read by transformers with weights_only loading).
    """
    from transformers import AutoConfig, AutoModel

    pickles = pickle_only_folder(Path(ident)) if pretrained else []
    if pickles and not trust_pickle:
        raise refuse_pickle(pickles[0], f"the weights of {spec}")

    try:
        config = AutoConfig.from_pretrained(ident, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(spec, "the config", e) from e
    try:
        if pretrained:
            with _no_weight_loading_bars():
                model = AutoModel.from_pretrained(ident, trust_remote_code=trust_remote_code,
                                                  use_safetensors=None if trust_pickle else True)
        else:
            model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except pickle.UnpicklingError as e:  # trusted pickle, but it holds more than tensors: weights_only stops it
        raise WeightsNotFoundError(f"cannot load the weights of {spec}: the pickle holds objects other than tensors, "
                                   "which weights_only loading refuses to build; convert it to safetensors") from e
    except (OSError, ValueError) as e:
        err = _load_error(spec, "the weights", e)
        if not trust_pickle and "safetensors" in str(e):
            err = WeightsNotFoundError(f"{err} (only .safetensors weights load by default; a pickle-only model "
                                       "needs --trust-pickle, or convert it to safetensors)")
        raise err from e
    return config, model.eval()


def _blocks(model: nn.Module) -> list:
    return layered_blocks(model, largest_layer_stack(model))


def text_backbone(spec: str, ident: str, *, pretrained: bool = True, pooling: str = "default",
                  max_length: int | None = None, normalize: bool = False, default_pooling: str = "mean",
                  trust_remote_code: bool = False, info: dict | None = None, trust_pickle: bool = False) -> Backbone:
    """A text encoder: tokenizer + AutoModel, pooled by masked mean, CLS, the pooler, or a named layer."""
    from transformers import AutoTokenizer

    pooling = check_pooling(spec, pooling, TEXT_POOLINGS)
    config, model = _from_pretrained(spec, ident, pretrained=pretrained, trust_remote_code=trust_remote_code,
                                     trust_pickle=trust_pickle)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ident, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error(spec, "the tokenizer", e) from e
    limit = getattr(config, "max_position_embeddings", 512) or 512
    max_length = int(min(max_length or limit, limit))
    collate = TextCollate(tokenizer, max_length, name=str(getattr(tokenizer, "name_or_path", ident)))
    mode = default_pooling if pooling == "default" else pooling
    capture = LayerCapture(model, spec, mode[6:]) if mode.startswith("layer:") else None
    do_norm = normalize and pooling == "default"

    def encode(m: nn.Module, batch: dict) -> torch.Tensor:
        out = m(**batch)
        mask = batch.get("attention_mask")
        if capture is not None:
            x = pool_tensor(capture.take(), mask)
        elif mode == "cls":
            x = out.last_hidden_state[:, 0]
        elif mode == "pooler":
            x = out.pooler_output
        else:
            x = pool_tensor(out.last_hidden_state, mask)
        return nn.functional.normalize(x.float(), dim=-1) if do_norm else x  # unit length in fp32, also in bf16

    dim = infer_feature_dim(model, collate, encode, ["a short probe sentence"])
    return Backbone(
        spec=spec, model=model, modality="text", collate=collate, encode=encode, feature_dim=dim,
        pooling=mode + ("+normalize" if do_norm else ""), blocks=_blocks(model),
        preprocessing=collate.describe(), pretrained=pretrained,
        info={"architecture": type(model).__name__, **(info or {})},
    )


def vision_backbone(spec: str, ident: str, *, pretrained: bool = True, pooling: str = "default",
                    image_size: int | None = None, trust_remote_code: bool = False,
                    trust_pickle: bool = False) -> Backbone:
    """A vision model (ViT, ConvNeXt, ResNet, … in transformers) with its image processor's normalisation."""
    from transformers import AutoImageProcessor

    pooling = check_pooling(spec, pooling, ["mean", "cls", "pooler"])
    config, model = _from_pretrained(spec, ident, pretrained=pretrained, trust_remote_code=trust_remote_code,
                                     trust_pickle=trust_pickle)
    try:
        proc = AutoImageProcessor.from_pretrained(ident, trust_remote_code=trust_remote_code)
        mean, std = list(proc.image_mean), list(proc.image_std)
        size_cfg = getattr(proc, "crop_size", None) or getattr(proc, "size", None) or {}
    except (OSError, ValueError):
        mean, std, size_cfg = [0.5] * 3, [0.5] * 3, {}
    size_cfg = dict(size_cfg) if not isinstance(size_cfg, int) else {"height": size_cfg}
    native = size_cfg.get("height") or size_cfg.get("shortest_edge") or getattr(config, "image_size", 224)
    size = int(image_size or native)
    collate = image_collate(size, mean, std, crop_pct=1.0)
    mode = pooling
    if mode == "default":
        probe = model(pixel_values=torch.zeros(1, 3, size, size)).last_hidden_state
        mode = "cls" if probe.dim() == 3 else "mean"
    capture = LayerCapture(model, spec, mode[6:]) if mode.startswith("layer:") else None

    def encode(m: nn.Module, batch: dict) -> torch.Tensor:
        out = m(pixel_values=batch["pixel_values"])
        if capture is not None:
            return pool_tensor(capture.take())
        if mode == "cls":
            return out.last_hidden_state[:, 0]
        if mode == "pooler":
            return out.pooler_output.flatten(1)
        return pool_tensor(out.last_hidden_state)

    dim = infer_feature_dim(model, collate, encode, [torch.zeros(size, size, 3).numpy()])
    return Backbone(
        spec=spec, model=model, modality="image", collate=collate, encode=encode, feature_dim=dim,
        pooling=mode, blocks=_blocks(model), preprocessing=collate.describe(), pretrained=pretrained,
        info={"architecture": type(model).__name__},
    )


def is_vision(ident: str, trust_remote_code: bool = False) -> bool:
    """Whether the config at `ident` describes a vision model (has an image size / pixel inputs)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ident, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError):
        return False
    return hasattr(config, "image_size") or getattr(config, "num_channels", None) is not None


def load(ident: str, *, pretrained: bool = True, pooling: str = "default", image_size: int | None = None,
         max_length: int | None = None, trust_remote_code: bool = False, trust_pickle: bool = False) -> Backbone:
    """`hf:ID_OR_PATH`: a vision backbone when the config says so, else a text encoder.

    trust_remote_code (off): run model code from the repository; trust_pickle (off): accept pickle-only weights.
    """
    spec = f"hf:{ident}"
    if Path(ident).expanduser().exists():
        ident = str(Path(ident).expanduser())
    if is_vision(ident, trust_remote_code):
        return vision_backbone(spec, ident, pretrained=pretrained, pooling=pooling, image_size=image_size,
                               trust_remote_code=trust_remote_code, trust_pickle=trust_pickle)
    return text_backbone(spec, ident, pretrained=pretrained, pooling=pooling, max_length=max_length,
                         trust_remote_code=trust_remote_code, trust_pickle=trust_pickle)
