"""How a frozen backbone runs fast for inference: precision choice, memory layout, no autograd."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.errors import TransferkitError

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 matrix work natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch.backends, "cpu", None)
        capability = cpu.get_cpu_capability() if cpu is not None else ""
        amx = getattr(torch._C._cpu, "_is_amx_tile_supported", lambda: False)()
        avx512_bf16 = getattr(torch._C._cpu, "_is_avx512_bf16_supported", lambda: False)()
        return bool(amx or avx512_bf16) and "AVX512" in capability
    return False


def resolve_precision(precision: str, backbone: Backbone) -> str:
    """"auto" -> "bf16" where the hardware runs it natively, else "fp32"."""
    if precision not in PRECISIONS:
        raise TransferkitError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(backbone.device) else "fp32"
    return precision


def is_cnn(model: nn.Module) -> bool:
    """Whether the model is convolutional (channels-last pays off) rather than a transformer."""
    return any(isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and m.groups == 1 for m in model.modules()) and \
        not any(isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention") for m in model.modules())


class InferenceRunner:
    """Callable batch -> float32 numpy features, with the backbone prepared for fast inference."""

    def __init__(self, backbone: Backbone, precision: str) -> None:
        self.backbone = backbone
        self.precision = precision
        backbone.model.eval()
        self.channels_last = backbone.modality == "image" and is_cnn(backbone.model)
        if self.channels_last:
            backbone.model.to(memory_format=torch.channels_last)

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        if self.channels_last and "pixel_values" in batch:
            batch = {**batch, "pixel_values": batch["pixel_values"].contiguous(memory_format=torch.channels_last)}
        dev = self.backbone.device
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            out = self.backbone.forward(batch)
        return out.float().cpu().numpy()
