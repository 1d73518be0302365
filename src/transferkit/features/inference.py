"""How a frozen backbone runs fast for inference: memory layout, graph capture, no autograd.

The precision it runs in is decided by `transferkit.runtime` (the one device/precision policy).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

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
#: how much faster a path must measure before it replaces the default one (timing noise on a shared machine
#: is about 5 %)
MIN_GAIN = 1.1


class _Encoder(nn.Module):
    """The backbone's pooled forward on a pixel tensor, as a module that TorchScript/Inductor can capture."""

    def __init__(self, backbone: Backbone, model: nn.Module) -> None:
        super().__init__()
        self.model = model  # the backbone's model, or the copy the runner runs (bf16)
        self.encode = backbone.encode

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode(self.model, {"pixel_values": pixel_values})


def choose_optimization(optimize: str, backbone: Backbone, precision: str = "fp32") -> str:
    """"auto" -> a frozen TorchScript graph ("jit") for a convolutional image backbone on CPU where that pays on
    this machine, else "none" (eager).

    The graph folds batch norms into convolutions and fuses the rest, but whether that is faster depends on the
    architecture, the precision and the CPU: measured here, resnet50 ran 1.23–1.32× eager in bf16 and 1.17–1.32×
    in fp32, EfficientNet-Lite0 1.32–1.39× in bf16 but 0.86–0.91× in fp32, timm's efficientnet_b0 1.03× in bf16
    and 0.65–0.81× in fp32. So the first use of an architecture in a precision times both paths on a synthetic
    batch (`graph_speedup`, about a second, cached per machine) and takes the graph only when it was at least
    `MIN_GAIN` as fast. The choice does not depend on how many items there are: a model folder predicting a few
    items computes their features the way the extraction it was trained on did (in bf16 the two paths round
    differently). Inductor ("compile": 20–60 s to build on 2 cores, a C++ compiler) is only used when asked for.
    Transformers stay eager; their attention and linear layers take the faster kernels instead (`InferenceRunner`).
    """
    if optimize not in OPTIMIZATIONS:
        raise TransferkitError(f"optimize {optimize!r} is not one of {', '.join(OPTIMIZATIONS)}")
    if optimize != "auto":
        return "none" if precision == "int8" else optimize
    layer_hook = backbone.pooling.startswith("layer:")
    if (backbone.modality != "image" or backbone.device.type != "cpu" or layer_hook or precision == "int8"
            or not is_cnn(backbone.model)):
        return "none"
    return "jit" if graph_speedup(backbone, precision) >= MIN_GAIN else "none"


def graph_speedup(backbone: Backbone, precision: str) -> float:
    """Eager time / frozen-graph time of `backbone` in `precision` on this machine (`runtime.measured`: once per
    architecture, input size, pooling and precision)."""
    from transferkit.runtime import measured

    # "frozen-graph", not the "graph" of earlier versions: their entries timed the graph before it could run fused
    # (`onednn_fusion_pays`): on a 2-core EPYC efficientnet_b0's fp32 graph went from 0.82x eager to 1.53x
    return measured("frozen-graph", _graph_what(backbone, precision),
                    lambda: _time_graph(backbone, precision))


def onednn_fusion_pays(backbone: Backbone, precision: str) -> bool:
    """Whether the frozen graph of `backbone` runs faster here with oneDNN Graph fusion (TorchScript's LLGA fuser:
    convolutions fused with their activations and element-wise neighbours into oneDNN partitions) than through
    `torch.jit.optimize_for_inference` (prepacked oneDNN convolutions, no such fusion).

    It depends on the architecture and the CPU: measured in one run on a 2-core AMD EPYC (AVX512-BF16, no AMX), bf16,
    16 images at 224 px (`runtime.json`): timm efficientnet_b0 1.22× (its SiLU and squeeze-excite multiplications
    run as separate passes otherwise), EfficientNet-Lite0 1.29×, ResNet-50 1.13×; in fp32 1.60×, 1.65×, 1.05×.
    A comparison of the two graphs on a synthetic batch (`fusion_speedup`, about a second, cached per machine,
    architecture and precision) decides, with the same `MIN_GAIN` as the graph itself; only on the CPU."""
    if backbone.device.type != "cpu" or precision not in ("fp32", "bf16") or not _llga_available():
        return False
    from transferkit.runtime import measured

    return measured("graph-fusion", _graph_what(backbone, precision),
                    lambda: fusion_speedup(backbone, precision)) >= MIN_GAIN


def _graph_what(backbone: Backbone, precision: str) -> str:
    """What a graph decision is cached under: the architecture, input size, pooling and the precision path."""
    size = (backbone.preprocessing or {}).get("size")
    path = "bf16-weights" if native_bf16(backbone.device, precision) else precision
    return f"{backbone.spec}|{size}px|{backbone.pooling}|{path}"


def _llga_available() -> bool:
    return callable(getattr(torch.jit, "enable_onednn_fusion", None)) and torch.backends.mkldnn.is_available()


def fusion_speedup(backbone: Backbone, precision: str, batch: int = 16, reps: int = 3) -> float:
    """Time of the `optimize_for_inference` graph / time of the oneDNN-fused graph of `backbone` in `precision` on
    this machine; 0.0 where the fused graph cannot be built or run."""
    size = int((backbone.preprocessing or {}).get("size") or 224)
    runner = InferenceRunner(backbone, precision, "none")  # the model copy and layout the graphs run on
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    pixels = runner.prepare({"pixel_values": pixels})["pixel_values"]
    encoder = _Encoder(backbone, runner._model).eval()
    try:
        graphs = (_frozen_graph(encoder, pixels, fuse=False), _frozen_graph(encoder, pixels, fuse=True))
        with torch.inference_mode():
            for graph in graphs:  # the profiling runs, after which TorchScript optimises (and fuses)
                graph(pixels)
            t_plain, t_fused = _best_times(tuple(functools.partial(g, pixels) for g in graphs), reps)
    except Exception:  # noqa: BLE001 — no fuser in this build, or a partition it cannot run: keep the plain graph
        return 0.0
    return t_plain / t_fused


#: held by a fused graph's call: the fusion switch is global to the process, and a fused graph runs at its speed only
#: while the switch is on (measured: 0.17 s against 0.20 s a batch with it off, the same bytes)
_FUSION_SWITCH = threading.Lock()


class _FusedGraph:
    """A frozen TorchScript graph run through oneDNN Graph fusion, the same way whatever ran before.

    TorchScript optimises (and fuses) a graph for an input shape on the call after it profiled that shape, and only
    while oneDNN fusion is switched on (a switch global to the process); the profiling call itself runs unfused, and
    in bf16 the fused and unfused graphs round differently. So each shape is run once before its first result is
    used, and every call runs under the switch: every result comes from the fused graph, whatever the process ran
    before (a test runs twenty batch sizes in two orders). The switch is put back as it was after each call, under
    one lock for all fused graphs, so that calls from several threads do not switch it off under each other.

    A batch is padded with zero rows to the next power of two (rows do not interact in inference), so that a server
    seeing every batch size pays that extra run about a dozen times, not once per size, and the graph stays within
    TorchScript's budget of specialisations (2 static and 10 dynamic by default), beyond which it would run new
    shapes unoptimised."""

    def __init__(self, graph: torch.jit.ScriptModule) -> None:
        self.graph = graph
        self._ready: set[tuple] = set()

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = len(pixels)
        bucket = 1 << max(n - 1, 0).bit_length()
        if bucket != n:
            layout = torch.channels_last if pixels.is_contiguous(memory_format=torch.channels_last) and \
                not pixels.is_contiguous() else torch.contiguous_format
            pad = pixels.new_zeros((bucket - n, *pixels.shape[1:]))
            pixels = torch.cat([pixels, pad]).contiguous(memory_format=layout)
        shape = (tuple(pixels.shape), pixels.stride(), pixels.dtype)
        with _FUSION_SWITCH:
            before = torch.jit.onednn_fusion_enabled()
            torch.jit.enable_onednn_fusion(True)
            try:
                if shape not in self._ready:
                    self.graph(pixels)  # the profiling run; the next call of this shape runs fused
                    self._ready.add(shape)
                return self.graph(pixels)[:n]
            finally:
                torch.jit.enable_onednn_fusion(before)


def _frozen_graph(encoder: nn.Module, pixels: torch.Tensor, *, fuse: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The traced, frozen graph of `encoder`: run through oneDNN Graph fusion (`fuse`, see `onednn_fusion_pays`) or
    optimised for inference (prepacked oneDNN convolutions)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still the fastest here
        graph = torch.jit.freeze(torch.jit.trace(encoder, pixels[:2], check_trace=False))
        return _FusedGraph(graph) if fuse else torch.jit.optimize_for_inference(graph)


def _time_graph(backbone: Backbone, precision: str, batch: int = 16, reps: int = 2) -> float:
    size = int((backbone.preprocessing or {}).get("size") or 224)
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    eager, graph = InferenceRunner(backbone, precision, "none"), InferenceRunner(backbone, precision, "jit")
    best = {"none": float("inf"), "jit": float("inf")}
    for runner in (eager, graph, graph):
        runner({"pixel_values": pixels})  # warm-up: the graph's build, then TorchScript's profiling run
    if graph.optimize != "jit":  # could not be captured
        return 0.0
    for _ in range(reps):
        for name, runner in (("none", eager), ("jit", graph)):
            t0 = time.perf_counter()
            runner({"pixel_values": pixels})
            best[name] = min(best[name], time.perf_counter() - t0)
    return best["none"] / best["jit"]


def explicit_attention_pays(device: torch.device, precision: str) -> bool:
    """Whether attention runs faster here as matmul, softmax, matmul than through PyTorch's fused kernel.

    On CPU in bf16 the fused (flash) kernel is the slower one: measured with the models themselves, ViT-S/16 ran
    1.26× as fast with the explicit path, DeiT-Tiny 1.36×, MiniLM-L6 1.25×, while in fp32 the fused kernel was
    3–15 % faster. A micro-check of one attention layer (`attention_speedup`, cached per machine) decides."""
    if device.type != "cpu" or precision != "bf16":
        return False
    from transferkit.runtime import measured

    return measured("attention", "bf16", attention_speedup) >= MIN_GAIN


def attention_speedup(batch: int = 16, heads: int = 6, tokens: int = 197, dim: int = 64, reps: int = 3) -> float:
    """Fused time / explicit time of one bf16 attention layer (ViT-S/16's shape) on the CPU; 1e9 where the
    fused bf16 kernel fails, which leaves the explicit path as the only one (torch 2.14 on an AMX CPU whose kernels
    are capped with ATEN_CPU_CAPABILITY=avx2: "pack_vnni2 is only supported when avx512 is supported")."""
    import torch.nn.functional as F  # noqa: N812

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, tokens, dim, generator=g) for _ in range(3))

    def explicit() -> torch.Tensor:
        return ((q * dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v

    def fused() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)

    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        try:
            fused()
        except RuntimeError:
            return 1e9  # finite, so that runtime.json stays strict JSON
        t_explicit, t_fused = _best_times((explicit, fused), reps)
    return t_fused / t_explicit


def _best_times(fns: tuple, reps: int) -> list[float]:
    """The best wall time of each of `fns` over `reps` interleaved rounds, after one warm-up call each."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def onednn_linear_pays(device: torch.device, precision: str) -> bool:
    """Whether fp32 linear layers run faster here through oneDNN than through torch's default (MKL).

    On AMD CPUs MKL runs its AVX2 code: an fp32 linear layer reached 207 GFLOP/s on this 2-core EPYC against 374–408
    through oneDNN for MiniLM's feed-forward shapes (oneDNN already runs bf16 and convolutions). A micro-check of
    those shapes (`onednn_linear_speedup`, cached per machine) decides; on CPUs where MKL is at its best it stays."""
    if device.type != "cpu" or precision != "fp32" or not torch.backends.mkldnn.is_available():
        return False
    from transferkit.runtime import measured

    return measured("onednn-linear", "fp32", onednn_linear_speedup) >= MIN_GAIN


def onednn_linear_speedup(rows: int = 2048, width: int = 384, reps: int = 3) -> float:
    """MKL time / oneDNN time of a transformer feed-forward pair (width -> 4·width -> width) in fp32."""
    g = torch.Generator().manual_seed(0)
    layers = [nn.Linear(width, 4 * width), nn.Linear(4 * width, width)]
    x = torch.randn(rows, width, generator=g)
    packed = [_packed(m) for m in layers]

    def mkl() -> torch.Tensor:
        return layers[1](layers[0](x))

    def onednn() -> torch.Tensor:
        return _onednn_linear(packed[1], _onednn_linear(packed[0], x))

    with torch.inference_mode():
        t_mkl, t_onednn = _best_times((mkl, onednn), reps)
    return t_mkl / t_onednn


def _packed(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear layer's weight and bias in oneDNN's layout, packed once while the weights stay unchanged."""
    def pack() -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            weight = layer.weight.detach().float().to_mkldnn()
            bias = layer.bias.detach().float().to_mkldnn() if layer.bias is not None else None
        return weight, bias

    return _per_weights(_PACKED, layer, pack)


def _onednn_linear(packed: tuple[torch.Tensor, torch.Tensor | None], x: torch.Tensor) -> torch.Tensor:
    weight, bias = packed
    shape = x.shape
    y = torch._C._nn.mkldnn_linear(x.reshape(-1, shape[-1]).contiguous().to_mkldnn(), weight, bias)
    return y.to_dense().reshape(*shape[:-1], -1)


class _OneDnnLinear:
    """Runs a model's `nn.Linear` layers through oneDNN for the duration of a `with` block (see
    `onednn_linear_pays`); their weights are packed once and their own `forward` is back afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if type(m) is nn.Linear]

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        for m in self.layers:
            m.forward = functools.partial(_onednn_linear, _packed(m))
        try:
            yield
        finally:
            for m in self.layers:
                m.__dict__.pop("forward", None)


class _AttentionPath:
    """Switches a model's attention between PyTorch's fused kernel and the explicit matmul-softmax-matmul path,
    for the duration of a `with` block: timm attention modules through their `fused_attn` flag, Hugging Face
    models through `set_attn_implementation` ("sdpa" <-> "eager"). Models with neither are left alone."""

    def __init__(self, model: nn.Module) -> None:
        self.timm = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
        config = getattr(model, "config", None)
        self.hf = model if (callable(getattr(model, "set_attn_implementation", None))
                            and getattr(config, "_attn_implementation", None) == "sdpa") else None

    @contextlib.contextmanager
    def explicit(self) -> Iterator[None]:
        for m in self.timm:
            m.fused_attn = False
        if self.hf is not None:
            self.hf.set_attn_implementation("eager")
        try:
            yield
        finally:
            for m in self.timm:
                m.fused_attn = True
            if self.hf is not None:
                self.hf.set_attn_implementation("sdpa")


#: per model: its int8 copy, its bf16 copy, and its captured graphs (by path, precision, input shape), each with
#: the weights' version it was made from, so that extracting several data sets with one backbone builds them once
_QUANTISED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BF16: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: per linear layer: its weights in oneDNN's layout (see `onednn_linear_pays`)
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_version(model: nn.Module) -> int:
    """Changes whenever a parameter or buffer of `model` is modified in place (their version counters) or replaced
    (their storage)."""
    return hash(tuple((t._version, t.data_ptr()) for t in (*model.parameters(), *model.buffers())))


def quantised_linear(model: nn.Module) -> nn.Module:
    """A copy of `model` whose linear layers are dynamically quantised to int8 (weights to int8 per output channel
    once, activations per batch; `torch.ao.quantization.quantize_dynamic`), the rest left in fp32.

    Kept per model while its weights are unchanged (their version counters), so repeated predictions do not
    quantise again. Only linear layers: a transformer's time is almost all in them; a CNN's is in convolutions,
    which this leaves as they are (dynamic int8 convolutions measured slower than fp32, see `export`)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    def quantise() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
            # per output channel: MiniLM's features kept a cosine of 0.972 (mean) to fp32, against 0.934 per tensor
            return quantize_dynamic(_copy_keeping_hooks(model), {nn.Linear: per_channel_dynamic_qconfig},
                                    dtype=torch.qint8, inplace=True).eval()

    return _per_weights(_QUANTISED, model, quantise)


def _per_weights(cache: weakref.WeakKeyDictionary, model: nn.Module, make: Callable[[], Any]) -> Any:
    """`make()`'s result for `model` (a copy, packed weights), kept in `cache` while the model's weights are
    unchanged (their version counters), made again once they change."""
    version = _weights_version(model)
    hit = cache.get(model)
    if hit is None or hit[0] != version:
        hit = cache[model] = (version, make())
    return hit[1]


def native_bf16(device: torch.device, precision: str) -> bool:
    """Whether bf16 inference on `device` runs a bf16 copy of the model (weights and activations in bf16) rather
    than fp32 weights under autocast: on the CPU, where autocast converts every weight on every call and runs
    layer norms, softmax and residual sums in fp32 between bf16 matrix products, each one a conversion pass over
    the activations. Measured on a 2-core Xeon with AMX (32 images at 224 px, `benchmarks/extract_throughput.py`
    for the whole table): ViT-S/16 1.11× the autocast path, timm efficientnet_b0 1.38× (frozen graph), ResNet-50
    and EfficientNet-Lite0 about 1.0×. CPU reductions and norms still accumulate in fp32 inside each kernel; what
    changes is that their results are rounded to bf16 (the probe accuracy is in
    `benchmarks/results/precision_accuracy.json`). On CUDA autocast stays: that path is untested here."""
    return precision == "bf16" and device.type == "cpu"


def _copy_keeping_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose forward hooks are the model's own hook objects, not copies: a hook reports to
    what it was made for (e.g. the `LayerCapture` of `layer:NAME` pooling, which the backbone's encode reads), so
    the copy's forward reports there as the model's does."""
    import copy

    memo = {id(h): h for m in model.modules() for hooks in (m._forward_hooks, m._forward_pre_hooks)
            for h in hooks.values()}
    return copy.deepcopy(model, memo)


def bf16_copy(model: nn.Module) -> nn.Module:
    """A bf16 copy of `model` for inference (its memory layout kept), made once per model while its weights are
    unchanged (their version counters)."""
    def copy() -> nn.Module:
        clone = _copy_keeping_hooks(model).to(torch.bfloat16).eval()
        for p in clone.parameters():
            p.requires_grad_(False)
        return clone

    return _per_weights(_BF16, model, copy)


class InferenceRunner:
    """Callable batch -> float32 numpy features, with the backbone prepared for fast inference.

    With a captured graph ("jit"/"compile") the pixel batch runs through it; any failure to build the
    graph falls back to eager execution, which is always correct. Compiled graphs see one batch shape
    only: a short last batch is padded, so nothing recompiles. Eager attention takes the explicit path where
    that is faster (`explicit_attention_pays`), during each call only. Precision "int8" runs a copy with
    dynamically quantised linear layers (`quantised_linear`), eagerly; "bf16" on the CPU runs a bf16 copy
    (`native_bf16`), elsewhere fp32 weights under autocast.
    """

    def __init__(self, backbone: Backbone, precision: str, optimize: str = "none") -> None:
        self.backbone = backbone
        self.precision = precision
        self.optimize = "none" if precision == "int8" else optimize
        backbone.model.eval()
        self.channels_last = backbone.modality == "image" and is_cnn(backbone.model)
        if self.channels_last:
            backbone.model.to(memory_format=torch.channels_last)
        self._graph: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._batch = 0
        self._fuse: bool | None = None  # the frozen graph through oneDNN Graph fusion: decided at its build
        self.native = native_bf16(backbone.device, precision)
        self._model = (quantised_linear(backbone.model) if precision == "int8" else
                       bf16_copy(backbone.model) if self.native else backbone.model)
        attention = _AttentionPath(self._model)
        explicit = (attention.timm or attention.hf is not None) and explicit_attention_pays(backbone.device, precision)
        self._attention = attention.explicit if explicit else contextlib.nullcontext
        onednn = _OneDnnLinear(self._model)
        use_onednn = bool(onednn.layers) and precision == "fp32" and onednn_linear_pays(backbone.device, precision)
        self._linear = onednn.active if use_onednn else contextlib.nullcontext

    def _build(self, pixels: torch.Tensor) -> None:
        model = self.backbone.model
        if self.optimize == "jit" and self._fuse is None:
            self._fuse = onednn_fusion_pays(self.backbone, self.precision)
        key = (self.optimize, self.precision, id(self.backbone.encode), tuple(pixels.shape[1:]),
               len(pixels) if self.optimize == "compile" else 0, self._fuse)
        built = _GRAPHS.setdefault(model, {}).get(key)
        if built is not None and built[0] == _weights_version(model):
            self._graph, self._batch = built[1], built[2]
            return
        encoder = _Encoder(self.backbone, self._model).eval()
        try:
            if self.optimize == "jit":
                self._graph = _frozen_graph(encoder, pixels, fuse=self._fuse)
            else:
                import torch._inductor.config as inductor_config

                compiled = torch.compile(encoder, dynamic=False)
                with inductor_config.patch(freezing=True):
                    compiled(pixels)  # compiles now, with weights frozen into the graph
                self._graph, self._batch = compiled, len(pixels)
        except Exception:  # noqa: BLE001 — a model that cannot be captured simply runs eagerly
            self.optimize, self._graph = "none", None
            return
        _GRAPHS[model][key] = (_weights_version(model), self._graph, self._batch)

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

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch in the memory layout (channels-last for CNNs) and dtype (bf16 for a bf16 copy) the model runs."""
        if self.channels_last and "pixel_values" in batch:
            batch = {**batch, "pixel_values": batch["pixel_values"].contiguous(memory_format=torch.channels_last)}
        if self.native:
            batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
        return batch

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        batch = self.prepare(batch)
        dev = self.backbone.device
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16" and not self.native), \
                self._attention(), self._linear():
            if self.optimize in ("jit", "compile"):
                pixels = batch["pixel_values"].to(dev)
                if self._graph is None:
                    self._build(pixels)
            if self._graph is not None:
                out = self._run_graph(pixels)
            else:
                out = self.backbone.encode(self._model, {k: v.to(dev, non_blocking=True) for k, v in batch.items()})
        return out.float().cpu().numpy()
