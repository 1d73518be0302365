"""The `Backbone` interface: one pretrained model seen the same way whatever library it comes from.

A backbone knows how to turn raw items (images or strings) into a batch (`collate`), how to run that
batch to one pooled vector per item (`forward`), its feature dimension, and its trainable blocks from
input to output (so fine-tuning can unfreeze "the last k"). Adapters per source live beside this file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from transferkit.errors import TransferkitError

Modality = Literal["image", "text"]
Batch = dict[str, torch.Tensor]


@dataclass
class Backbone:
    """A pretrained model with its preprocessing, pooling and ordered blocks.

    spec: the canonical spec string (`timm:resnet50`, `st:all-MiniLM-L6-v2`, …).
    model: the torch module that `forward` runs.
    collate: raw items -> batch of tensors (runs on CPU, possibly in DataLoader workers).
    encode: (model, batch) -> pooled features (N, D); differentiable, so fine-tuning can reuse it.
    blocks: ordered parameter groups from input to output (`Block`), for unfreezing the last k.
    preprocessing: JSON-able description of `collate` (part of the feature-cache key).
    source_head: the layer that maps features to the source task's classes, when the model has one.
    build: how `load_backbone` built it (spec and the options that differ from their defaults: pretrained,
    pooling, image_size, max_length), so a model folder can build the same backbone again; empty for a module.
    """

    spec: str
    model: nn.Module
    modality: Modality
    collate: Callable[[Sequence[Any]], Batch]
    encode: Callable[[nn.Module, Batch], torch.Tensor]
    feature_dim: int
    pooling: str
    blocks: list[Block]
    preprocessing: dict
    pretrained: bool = True
    source_head: nn.Module | None = None
    source_classes: list[str] | None = None
    info: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    _digest: str | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live."""
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> Backbone:
        """Move the model to `device` (in place) and return self."""
        self.model.to(device)
        if self.source_head is not None:
            self.source_head.to(device)
        return self

    def forward(self, batch: Batch) -> torch.Tensor:
        """Pooled features (N, D) for a collated batch, on the model's device."""
        dev = self.device
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        return self.encode(self.model, batch)

    def embed(self, items: Sequence[Any], batch_size: int = 32, precision: str = "auto") -> np.ndarray:
        """Features (N, D) as float32 numpy for a list of raw items; eval mode, no gradients.

        precision: "fp32", "bf16" or "auto" (decided by `transferkit.runtime`, as extraction decides it)."""
        from transferkit.runtime import autocast, resolve_precision

        self.model.eval()
        out = []
        with torch.inference_mode(), autocast(self.device, resolve_precision(precision, self.device)):
            for start in range(0, len(items), batch_size):
                out.append(self.forward(self.collate(items[start : start + batch_size])).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(out)

    def weights_digest(self) -> str:
        """A sha256 over every parameter and buffer (names, shapes, dtypes, values): the weights' identity."""
        if self._digest is None:
            h = hashlib.sha256()
            for name, t in self.model.state_dict().items():
                t = t.detach().cpu().contiguous()
                h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
                if t.dtype == torch.bfloat16:
                    t = t.view(torch.int16)
                h.update(t.numpy().tobytes())
            self._digest = h.hexdigest()[:32]
        return self._digest

    def identity(self) -> dict:
        """JSON-able identity of what `forward` computes: spec, weights, preprocessing, pooling."""
        return {**self.identity_fields(), "weights": self.weights_digest()}

    def identity_fields(self) -> dict:
        """The identity less the weights digest (which costs a pass over every weight)."""
        return {"spec": self.spec, "pretrained": self.pretrained, "preprocessing": self.preprocessing,
                "pooling": self.pooling, "feature_dim": self.feature_dim}

    def block_parameters(self, block: Block | int) -> list[nn.Parameter]:
        """The parameters of one block (by `Block` or index; negative indices count from the output)."""
        if isinstance(block, int):
            block = self.blocks[block]
        params = dict(self.model.named_parameters())
        return [params[n] for n in block.param_names]

    def trainable_parameters(self) -> int:
        """Number of parameters that currently require gradients."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def total_parameters(self) -> int:
        """Number of parameters in the model."""
        return sum(p.numel() for p in self.model.parameters())


def check_pooling(spec: str, pooling: str, allowed: Sequence[str]) -> str:
    """Validate a pooling name for a backbone; `layer:NAME` is always allowed."""
    if pooling == "default" or pooling in allowed or pooling.startswith("layer:"):
        return pooling
    raise TransferkitError(
        f"pooling {pooling!r} is not available for {spec}: use one of "
        + ", ".join(["default", *allowed, "layer:<module name>"])
    )


class LayerCapture:
    """Captures the output of a named submodule during forward (for `layer:NAME` pooling)."""

    def __init__(self, model: nn.Module, spec: str, name: str) -> None:
        modules = dict(model.named_modules())
        if name not in modules:
            near = [n for n in modules if n and (name in n or n in name)][:8]
            hint = f" (close names: {', '.join(near)})" if near else " (list names with `model.named_modules()`)"
            raise TransferkitError(f"{spec} has no layer named {name!r}{hint}")
        self.name = name
        self.output: Any = None
        modules[name].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.output = output[0] if isinstance(output, tuple) else output

    def take(self) -> torch.Tensor:
        """The captured tensor (clears it)."""
        out, self.output = self.output, None
        if not isinstance(out, torch.Tensor):
            raise TransferkitError(f"layer {self.name!r} did not produce a tensor; choose another layer")
        return out


def pool_tensor(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average a feature map to (N, C): over H×W for (N, C, H, W), over tokens (masked) for (N, T, C)."""
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        if mask is not None and mask.shape[:2] == x.shape[:2]:
            # in fp32 whatever x's dtype (bf16 counts tokens exactly only up to 256), and returned in fp32
            m = mask.to(torch.float32).unsqueeze(-1)
            return (x.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return x.mean(1)
    if x.dim() == 2:
        return x
    return x.flatten(1)


def infer_feature_dim(model: nn.Module, collate: Callable, encode: Callable, sample: Sequence[Any]) -> int:
    """Run one tiny batch to learn the pooled feature dimension."""
    model.eval()
    with torch.inference_mode():
        return int(encode(model, collate(sample)).shape[-1])


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last `nn.Linear` in module order: the classifier of most torchvision/timm models."""
    found = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            found = (name, m)
    return found


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@dataclass(frozen=True)
class Block:
    """One trainable block: a name and the names of its parameters in `Backbone.model`."""

    name: str
    param_names: tuple[str, ...]


def blocks_from_prefixes(model: nn.Module, groups: Sequence[tuple[str, Sequence[str]]]) -> list[Block]:
    """Blocks whose parameters are those whose names start with one of the group's module prefixes."""
    names = [n for n, _ in model.named_parameters()]
    blocks = []
    for block_name, prefixes in groups:
        pre = tuple(prefixes)
        owned = tuple(n for n in names if any(n == p or n.startswith(p + ".") for p in pre))
        if owned:
            blocks.append(Block(block_name, owned))
    return blocks


def layered_blocks(model: nn.Module, layers_path: str | None) -> list[Block]:
    """Blocks for a stack of layers at `layers_path`: what comes before, each layer, what comes after.

    Without a stack, each top-level child that holds parameters is a block.
    """
    if not layers_path:
        return blocks_from_prefixes(model, [(n, [n]) for n, _ in model.named_children()])
    layers = model.get_submodule(layers_path)
    groups: list[tuple[str, list[str]]] = []
    before, after, seen = [], [], False
    for name, _ in model.named_parameters():
        if name.startswith(layers_path + "."):
            seen = True
            continue
        (after if seen else before).append(name)
    if before:
        groups.append(("embeddings", before))
    groups += [(f"{layers_path}.{i}", [f"{layers_path}.{i}"]) for i in range(len(layers))]
    if after:
        groups.append(("final", after))
    return blocks_from_prefixes(model, groups)


def largest_layer_stack(model: nn.Module) -> str | None:
    """Dotted path of the ModuleList/Sequential of ≥ 2 same-type children holding most parameters."""
    best, best_n = None, 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) >= 2 and name:
            kinds = {type(c) for c in m}
            if len(kinds) != 1:
                continue
            n = sum(p.numel() for p in m.parameters())
            if n > best_n:
                best, best_n = name, n
    return best
