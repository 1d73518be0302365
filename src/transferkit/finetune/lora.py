"""LoRA through PEFT, injected in place so the backbone keeps its own class and `encode` still works.

Targets: `auto` = the linear layers of attention blocks for transformers, or the ungrouped
convolutions + linear layers for CNNs (PEFT cannot merge grouped/depthwise convolutions, nor build
adapters for Conv2d subclasses other than 1×1 ones, which are converted to plain Conv2d);
`all-linear`; or a comma-separated list of module-name suffixes passed to PEFT as is. The backbone's
source-task classifier is never a target.
"""

from __future__ import annotations

from torch import nn

from transferkit.backbones.base import Backbone, set_submodule
from transferkit.finetune.config import FinetuneConfig, FinetuneError

_ATTENTION_WORDS = ("attn", "attention")


def _excluded(backbone: Backbone) -> set[int]:
    return {id(backbone.source_head)} if backbone.source_head is not None else set()


def _pointwise_as_plain_conv(model: nn.Module) -> None:
    """Replace 1×1, stride-1, ungrouped Conv2d subclasses (e.g. EfficientNet's static-same-padding convs, whose
    padding is zero at 1×1) by plain `nn.Conv2d` with the same weights: PEFT builds adapters only for the plain
    class. Parameter names and outputs are unchanged."""
    for name, m in list(model.named_modules()):
        if (isinstance(m, nn.Conv2d) and type(m) is not nn.Conv2d and m.kernel_size == (1, 1)
                and m.stride == (1, 1) and m.groups == 1 and m.dilation == (1, 1) and m.padding in ((0, 0), 0)
                and type(getattr(m, "static_padding", nn.Identity())).__name__ == "Identity"):
            plain = nn.Conv2d(m.in_channels, m.out_channels, 1, bias=m.bias is not None)
            plain.weight = m.weight
            if m.bias is not None:
                plain.bias = m.bias
            set_submodule(model, name, plain)


def target_modules(backbone: Backbone, targets: str) -> list[str]:
    """Full module names (in backbone.model) that get adapters."""
    _pointwise_as_plain_conv(backbone.model)
    skip = _excluded(backbone)
    modules = [(n, m) for n, m in backbone.model.named_modules() if n and id(m) not in skip]
    linear = [n for n, m in modules if isinstance(m, nn.Linear)]
    if targets == "all-linear":
        found = linear
    elif targets == "auto":
        found = [n for n in linear if any(w in part.lower() for part in n.split(".")[:-1] for w in _ATTENTION_WORDS)]
        if not found:
            convs = [n for n, m in modules if type(m) is nn.Conv2d and m.groups == 1]
            found = convs + linear
    else:
        wanted = [t.strip() for t in targets.split(",") if t.strip()]
        names = [n for n, _ in modules]
        found = [n for n in names if any(n == w or n.endswith("." + w) for w in wanted)]
        missing = [w for w in wanted if not any(n == w or n.endswith("." + w) for n in names)]
        if missing:
            raise FinetuneError(f"lora_targets names {missing} that {backbone.spec} does not have; list module "
                                "names with model.named_modules(), or use auto / all-linear")
    if not found:
        raise FinetuneError(f"found no layers LoRA can adapt in {backbone.spec} for targets={targets!r}: "
                            "set lora_targets to module names, or use another strategy")
    return found


def inject(backbone: Backbone, config: FinetuneConfig) -> list[str]:
    """Add LoRA adapters to backbone.model in place (seeded init); return the adapted module names."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    names = target_modules(backbone, config.lora_targets)
    lcfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=names, bias="none")
    state = torch.random.get_rng_state()
    torch.manual_seed(config.seed + 1)
    try:
        inject_adapter_in_model(lcfg, backbone.model)
    finally:
        torch.random.set_rng_state(state)
    return names


def merge(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and remove the adapter modules (W ← W + s·B·A)."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(model.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge()
            set_submodule(model, name, m.get_base_layer())
    return model
