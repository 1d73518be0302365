"""The network a fine-tuning run trains: a backbone's pooled features followed by a new linear head.

Strategies decide which parameters train: `head` (backbone frozen), `full`, `last-k` (the last k
blocks the backbone exposes), `gradual` (head first, then one more block every `unfreeze_every`
epochs, as ULMFiT / fastai do) and `lora` (low-rank adapters, see `lora.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.finetune.config import FinetuneConfig, FinetuneError


class TransferModel(nn.Module):
    """backbone.encode(model, batch) → standardise → Linear head. `n_outputs`: class count (1 for regression).

    The head sees features centred with the pretrained backbone's per-dimension mean on the training
    data and divided by their average standard deviation (fixed buffers), so one head learning rate works
    for raw CNN features and unit-norm sentence embeddings alike. Random-init backbones skip this.
    """

    def __init__(self, backbone: Backbone, n_outputs: int) -> None:
        super().__init__()
        self.backbone = backbone.model
        self.head = nn.Linear(backbone.feature_dim, n_outputs)
        self.register_buffer("feature_mean", torch.zeros(backbone.feature_dim))
        self.register_buffer("feature_scale", torch.ones(backbone.feature_dim))
        self._encode = backbone.encode

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled backbone features (N, D)."""
        return self._encode(self.backbone, batch)

    def forward(self, batch: dict[str, torch.Tensor],
                with_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Head outputs; with_features: also the standardised features the head reads (domain losses use them)."""
        z = (self.features(batch).float() - self.feature_mean) / self.feature_scale
        return (self.head(z), z) if with_features else self.head(z)

    @torch.no_grad()
    def calibrate(self, features: torch.Tensor) -> None:
        """Set the standardisation from features (N, D) of training items."""
        f = features.float()
        self.feature_mean.copy_(f.mean(0))
        # one scale for all dimensions (their mean std): a per-dimension scale would blow up near-constant
        # (dead) units on new items or once training moves them
        self.feature_scale.fill_(float(f.std(0, unbiased=False).mean()) + 1e-12)


def init_head(head: nn.Linear, seed: int) -> None:
    """Seeded head initialisation: small normal weights, zero bias (independent of the global RNG)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()


def block_index(backbone: Backbone) -> dict[str, int]:
    """Backbone parameter name → index of its block (0 = nearest the input); unlisted names get 0."""
    index = {n: 0 for n, _ in backbone.model.named_parameters()}
    for i, block in enumerate(backbone.blocks):
        for n in block.param_names:
            index[n] = i
    return index


def n_blocks(backbone: Backbone) -> int:
    """How many blocks the backbone exposes (at least 1)."""
    return max(1, len(backbone.blocks))


def trainable_blocks(config: FinetuneConfig, n: int, epoch: int) -> int:
    """How many of the last blocks train in `epoch` (0 = head only, n = everything)."""
    if config.strategy in ("full", "contrastive"):  # contrastive tunes the whole body on pairs (contrastive.py)
        return n
    if config.strategy == "last-k":
        return min(config.last_k, n)
    if config.strategy == "gradual":
        return min(n, epoch // config.unfreeze_every)
    return 0  # head, lora: the backbone's own weights stay frozen


def ever_trained(config: FinetuneConfig, n: int) -> int:
    """The most blocks that will train at any epoch of this run."""
    return max(trainable_blocks(config, n, e) for e in range(config.epochs))


def check_strategy(config: FinetuneConfig, backbone: Backbone) -> None:
    """Refuse strategies the backbone cannot support, with the reason."""
    if config.strategy in ("last-k", "gradual") and not backbone.blocks:
        raise FinetuneError(f"{backbone.spec} exposes no blocks, so '{config.strategy}' cannot unfreeze part of "
                            "it: use the full, head or lora strategy")


def set_trainable(model: TransferModel, backbone: Backbone, config: FinetuneConfig, k: int) -> list[str]:
    """Make the head (+ LoRA adapters) and the last `k` blocks trainable, everything else frozen.

    Returns the model-level names of the backbone parameters that train now. Batch-norm layers
    whose parameters are all frozen are put in eval mode by `frozen_norm_eval` so their running
    statistics stay what they were.
    """
    index = block_index(backbone)
    first = n_blocks(backbone) - k
    unused = {id(p) for p in backbone.source_head.parameters()} if backbone.source_head is not None else set()
    training = []
    for name, p in model.named_parameters():
        if name.startswith("head."):
            p.requires_grad_(True)
        elif id(p) in unused:  # the source task's classifier: not part of the features, never trained
            p.requires_grad_(False)
        elif "lora_" in name:
            p.requires_grad_(config.strategy == "lora")
        else:
            inner = _inner_name(name)
            on = k > 0 and (index.get(inner, 0) >= first or config.strategy == "full")
            p.requires_grad_(on)
            if on:
                training.append(name)
    return training


def _inner_name(name: str) -> str:
    """Backbone parameter name from a model-level one; LoRA wrapping adds `.base_layer` to wrapped layers."""
    return name.removeprefix("backbone.").replace(".base_layer.", ".")


def frozen_norm_eval(model: nn.Module, all_norms: bool = False) -> None:
    """Put batch-norm layers in eval mode (running statistics fixed): all of them, or those fully frozen."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            params = list(m.parameters(recurse=False))
            if all_norms or not params or not any(p.requires_grad for p in params):
                m.eval()


def enable_grad_checkpointing(backbone: Backbone) -> None:
    """Turn on activation checkpointing through the library's own switch (transformers, timm)."""
    m = backbone.model
    if hasattr(m, "gradient_checkpointing_enable"):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(m, "config"):
            m.config.use_cache = False
    elif hasattr(m, "set_grad_checkpointing"):
        m.set_grad_checkpointing(True)
    else:
        raise FinetuneError(f"{backbone.spec} has no gradient-checkpointing switch: turn grad_checkpointing off")


def count_parameters(model: nn.Module, names: set[str] | None = None) -> int:
    """Number of parameters that require gradients (or those in `names`)."""
    if names is not None:
        return sum(p.numel() for n, p in model.named_parameters() if n in names)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unused_parameters(model: TransferModel, batch: dict[str, torch.Tensor]) -> set[str]:
    """Names of parameters the outputs do not depend on (BERT's pooler under mean pooling, a source classifier).

    They are left out of training and of the parameter counts: counting them would overstate the
    model, and DDP refuses parameters that never receive a gradient.
    """
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    with torch.enable_grad():
        model(batch).float().sum().backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None}
    model.zero_grad(set_to_none=True)
    for n, p in model.named_parameters():
        p.requires_grad_(flags[n])
    model.train(was_training)
    return unused


@torch.no_grad()
def precise_bn(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> bool:
    """Recompute batch-norm running statistics as exact averages over `batches` (precise BN, as in pycls).

    Slow-momentum statistics (EfficientNet's 0.01) lag far behind weights that train from scratch;
    an average over fresh batches makes eval-mode outputs match the trained network. Other layers run
    in eval mode (no dropout), so the pass draws no random numbers. Returns False if there is no BN.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or not batches:
        return False
    was_training = model.training
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for batch in batches:
        model(batch)
    for m, mom in zip(norms, saved):
        m.momentum = mom
        m.eval()
    model.train(was_training)
    return True
