"""Optimiser and learning-rate schedule: discriminative (layer-wise) rates, no decay on biases and norms.

Every parameter that trains at any point of the run is in the optimiser from the start, so its state
has one fixed layout (checkpoints and resume rely on that); a parameter frozen in some epoch simply
has no gradient then, and SGD/AdamW skip it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.finetune.config import FinetuneConfig
from transferkit.finetune.model import _inner_name, block_index, n_blocks


def param_groups(model: nn.Module, backbone: Backbone, config: FinetuneConfig, names: set[str]) -> list[dict]:
    """Groups keyed by (rate, decay): head at head_lr; backbone block i at lr·layer_decay^(n-1-i)."""
    index = block_index(backbone)
    n = n_blocks(backbone)
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in model.named_parameters():
        if name not in names:
            continue
        if name.startswith("head."):
            lr = config.head_rate
        else:
            lr = config.lr * config.layer_decay ** (n - 1 - index.get(_inner_name(name), 0))
        decay = p.ndim > 1 and "lora_" not in name
        key = (lr, decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": lr, "weight_decay": config.weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1]))]


def make_optimizer(groups: list[dict], config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with (Nesterov) momentum over the groups (the names stay in each group for reports)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: FinetuneConfig, step: int, total: int) -> float:
    """Multiplier of each group's base rate after `step` optimizer steps out of `total`."""
    total = max(total, 1)
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "onecycle":
        # one-cycle (Smith): linear warm-up from rate/25 over 30% (or `warmup`), cosine anneal to rate/1e4
        up = max(1, round(total * (config.warmup or 0.3)))
        if step < up:
            return 1 / 25 + (1 - 1 / 25) * step / up
        t = (step - up) / max(1, total - up)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    warm = round(total * config.warmup)
    if step < warm:
        return (step + 1) / (warm + 1)
    t = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def make_scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig,
                   total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`: its whole state is the step count, so resume restores it exactly."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, total))
