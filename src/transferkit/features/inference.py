"""How a frozen backbone runs fast for inference: memory layout, graph capture, no autograd.

The precision it runs in is decided by `transferkit.runtime` (the one device/precision policy).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.errors import TransferkitError


def is_cnn(model: nn.Module) -> bool:
    """Whether the model is convolutional (channels-last pays off) rather than a transformer."""
    return any(isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and m.groups == 1 for m in model.modules()) and \
        not any(isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention") for m in model.modules())


OPTIMIZATIONS = ("auto", "none", "jit", "compile")
#: below this many items a one-off graph optimisation (a few seconds) does not pay for itself
JIT_MIN_ITEMS = 512
#: torch.compile costs 20–60 s on 2 cores; from this many items on it pays (measured on resnet50 here)
COMPILE_MIN_ITEMS = 20_000


class _Encoder(nn.Module):
    """The backbone's pooled forward on a pixel tensor, as a module that TorchScript/Inductor can capture."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.model = backbone.model
        self.encode = backbone.encode

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode(self.model, {"pixel_values": pixel_values})


def choose_optimization(optimize: str, backbone: Backbone, n_items: int) -> str:
    """"auto" -> a captured graph for convolutional image backbones on CPU over enough items, else "none".

    A frozen graph folds batch norms into convolutions and fuses the rest: TorchScript ("jit", ~3 s to
    build) measured 1.8× the eager hand loop on resnet50 here, Inductor ("compile", 20–60 s to build,
    needs a C++ compiler) 2.1×. Transformers gain nothing on this CPU, so they stay eager.
    """
    if optimize not in OPTIMIZATIONS:
        raise TransferkitError(f"optimize {optimize!r} is not one of {', '.join(OPTIMIZATIONS)}")
    if optimize != "auto":
        return optimize
    layer_hook = backbone.pooling.startswith("layer:")
    if backbone.modality != "image" or backbone.device.type != "cpu" or layer_hook or not is_cnn(backbone.model):
        return "none"
    if n_items >= COMPILE_MIN_ITEMS and (shutil.which("c++") or shutil.which("g++")):
        return "compile"
    return "jit" if n_items >= JIT_MIN_ITEMS else "none"


class InferenceRunner:
    """Callable batch -> float32 numpy features, with the backbone prepared for fast inference.

    With a captured graph ("jit"/"compile") the pixel batch runs through it; any failure to build the
    graph falls back to eager execution, which is always correct. Compiled graphs see one batch shape
    only: a short last batch is padded, so nothing recompiles.
    """

    def __init__(self, backbone: Backbone, precision: str, optimize: str = "none") -> None:
        self.backbone = backbone
        self.precision = precision
        self.optimize = optimize
        backbone.model.eval()
        self.channels_last = backbone.modality == "image" and is_cnn(backbone.model)
        if self.channels_last:
            backbone.model.to(memory_format=torch.channels_last)
        self._graph: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._batch = 0

    def _build(self, pixels: torch.Tensor) -> None:
        encoder = _Encoder(self.backbone).eval()
        try:
            if self.optimize == "jit":
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still the fastest here
                    graph = torch.jit.trace(encoder, pixels[:2], check_trace=False)
                    self._graph = torch.jit.optimize_for_inference(torch.jit.freeze(graph))
            else:
                import torch._inductor.config as inductor_config

                compiled = torch.compile(encoder, dynamic=False)
                with inductor_config.patch(freezing=True):
                    compiled(pixels)  # compiles now, with weights frozen into the graph
                self._graph, self._batch = compiled, len(pixels)
        except Exception:  # noqa: BLE001 — a model that cannot be captured simply runs eagerly
            self.optimize, self._graph = "none", None

    def _run_graph(self, pixels: torch.Tensor) -> torch.Tensor:
        n = len(pixels)
        if self.optimize != "compile":
            return self._graph(pixels)
        if n < self._batch:
            pad = pixels.new_zeros((self._batch - n, *pixels.shape[1:]))
            pixels = torch.cat([pixels, pad]).contiguous(memory_format=torch.channels_last)
        import torch._inductor.config as inductor_config

        # every call under the settings the graph was built with: a call outside them recompiles it without
        # frozen weights, and that graph gave wrong rows for a padded batch (Inductor at ATEN_CPU_CAPABILITY=avx2)
        with inductor_config.patch(freezing=True):
            return self._graph(pixels)[:n]

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        if self.channels_last and "pixel_values" in batch:
            batch = {**batch, "pixel_values": batch["pixel_values"].contiguous(memory_format=torch.channels_last)}
        dev = self.backbone.device
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            if self.optimize in ("jit", "compile"):
                pixels = batch["pixel_values"].to(dev)
                if self._graph is None:
                    self._build(pixels)
            if self._graph is not None:
                out = self._run_graph(pixels)
            else:
                out = self.backbone.forward(batch)
        return out.float().cpu().numpy()
