"""GPU check: transferkit's extraction and fine-tuning speed on a CUDA machine, in one table (issue 13).

- extraction images/s through `extract_features` (raw uint8 224 px images in memory: preprocessing, batching and the
  store's writes included) in fp32 and bf16, for EfficientNet-Lite0 (bundled weights), timm resnet50 and
  vit_small_patch16_224 (random weights: speed only); beside them a hand loop over already-preprocessed tensors on
  the device in fp32, contiguous and (CNNs) channels-last: channels-last is not a transferkit option
  (`InferenceRunner` applies it to every CNN), so the hand loop shows what it buys and the model-only ceiling;
- fine-tuning samples/s (the second of two epochs, the first warms up; validation excluded) and peak GPU memory
  (`torch.cuda.max_memory_allocated`, reset before each run) of full fine-tuning vs LoRA through `finetune`, at
  `precision="auto"`, on the bundled MiniLM (real tweets) and EfficientNet-Lite0 (real digits at 224 px);
- with more than one GPU: `torchrun --nproc_per_node G -m transferkit extract` (as `python -m torch.distributed.run`)
  on a generated JPEG folder against one process on one GPU, images/s from the feature set's recorded model time.

HF_HUB_OFFLINE=1 is set: nothing is downloaded. `--device cpu --quick` is a smoke run of every path (tiny sizes).

    python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--out benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub: never touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from transferkit import datasets, runtime  # noqa: E402
from transferkit.backbones import load_backbone  # noqa: E402
from transferkit.data import Dataset, stratified_sample  # noqa: E402
from transferkit.errors import TransferkitError  # noqa: E402
from transferkit.features import extract_features  # noqa: E402
from transferkit.features.inference import choose_optimization, is_cnn  # noqa: E402
from transferkit.finetune import FinetuneConfig, finetune  # noqa: E402
from transferkit.finetune.config import DEFAULT_LR  # noqa: E402

EXTRACT_MODELS = ("effnet:lite0", "timm:resnet50", "timm:vit_small_patch16_224")
FINETUNE_TASKS = (("st:all-MiniLM-L6-v2", "sentiment-tweets", {}), ("effnet:lite0", "digits", {"image_size": 224}))
#: n: images per extraction row; size: input resolution (None: the model's own, 224); ft_steps per epoch; optimize:
#: extraction's graph rule ("auto" is "none" on CUDA; the quick CPU run skips building TorchScript graphs)
SIZES = {"full": dict(n=2048, batch=128, size=None, optimize="auto", ft_batch=64, ft_steps=20, ft_size=224,
                      dp_images=4096, dp_shard=256),
         "quick": dict(n=8, batch=4, size=32, optimize="none", ft_batch=8, ft_steps=2, ft_size=32, dp_images=64,
                   dp_shard=16)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def row(part: str, model: str, variant: str, precision: str, value: float | None, unit: str, note: str,
        peak_mb: float | None = None) -> dict:
    return {"part": part, "model": model, "variant": variant, "precision": precision, "throughput": value,
            "unit": unit, "peak_memory_mb": peak_mb, "note": note}


def hand_loop(bb, pixels: torch.Tensor, batch: int, channels_last: bool) -> float:
    """images/s of the backbone's own encode over tensors already on its device, fp32, inference_mode."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    bb.model.to(memory_format=fmt).eval()  # InferenceRunner left CNNs in channels-last
    x = pixels.to(bb.device).contiguous(memory_format=fmt)
    with torch.inference_mode():
        bb.encode(bb.model, {"pixel_values": x[:batch]})  # warm-up
        sync(bb.device)
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            bb.encode(bb.model, {"pixel_values": x[i: i + batch]})
        sync(bb.device)
    return len(x) / (time.perf_counter() - t0)


def extract_rows(spec: str, device: torch.device, z: dict) -> list[dict]:
    # a timm ViT cannot take another size: transferkit's timm source keeps its patch grid (timm_models.py)
    size = None if "vit_" in spec else z["size"]
    bb = load_backbone(spec, pretrained=spec == "effnet:lite0", image_size=size, device=device)
    side = size or 224
    images = np.random.default_rng(0).integers(0, 256, (z["n"], side, side, 3), dtype=np.uint8)
    data, warm = (Dataset(images[:k], None, (), "image", f"random-{k}") for k in (z["n"], 2 * z["batch"]))
    cnn, rows = is_cnn(bb.model), []
    layout = "channels-last (automatic for CNNs)" if cnn else "contiguous (transformer)"
    for precision in ("fp32", "bf16"):
        graph = choose_optimization(z["optimize"], bb, precision)
        how = "autocast over fp32 weights" if device.type == "cuda" else "bf16 weight copy"
        with tempfile.TemporaryDirectory() as tmp:
            extract_features(bb, warm, out=Path(tmp) / "warm", batch_size=z["batch"], precision=precision,
                             optimize=z["optimize"], progress=False)
            sync(device)
            t0 = time.perf_counter()
            extract_features(bb, data, out=Path(tmp) / "f", batch_size=z["batch"], precision=precision,
                             optimize=z["optimize"], progress=False)
            ips = z["n"] / (time.perf_counter() - t0)
        note = f"extract_features; {layout}; graph {graph}" + (f"; {how}" if precision == "bf16" else "")
        rows.append(row("extract", spec, "transferkit", precision, ips, "images/s", note))
    pixels = bb.collate(list(images))["pixel_values"]
    for channels_last in (False, True) if cnn else (False,):
        ips = hand_loop(bb, pixels, z["batch"], channels_last)
        rows.append(row("extract", spec, "hand loop" + (" channels-last" if channels_last else ""), "fp32", ips,
                        "images/s", "model only, preprocessed tensors on the device; " + (
                            "channels-last is not a transferkit option" if channels_last else "contiguous")))
    del bb, pixels
    free(device)
    return rows


def finetune_rows(spec: str, data_name: str, build: dict, device: torch.device, z: dict) -> list[dict]:
    ds = datasets.load(data_name)
    ds = ds.subset(stratified_sample(ds.labels, z["ft_batch"] * z["ft_steps"], seed=0))
    build = {k: (z["ft_size"] if k == "image_size" else v) for k, v in build.items()}
    rows = []
    for strategy in ("full", "lora"):
        bb = load_backbone(spec, device=device, **build)
        config = FinetuneConfig(strategy=strategy, epochs=2, batch_size=z["ft_batch"], lr=DEFAULT_LR[strategy],
                                val=0.0, test=0.0, warmup=0.0, checkpoint_every=10**9, precision="auto", seed=0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # finetune's own figure never resets it (loop.py)
        with tempfile.TemporaryDirectory() as tmp:
            res = finetune(bb, ds, Path(tmp) / "run", config, progress=False, device=device.type)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else res.peak_memory_mb
        what = "peak GPU memory allocated" if device.type == "cuda" else "peak RSS of this process so far"
        size = f", {build['image_size']} px" if "image_size" in build else ""
        rows.append(row("finetune", spec, strategy, res.info.get("precision", "?"),
                        res.history[-1]["train_items_per_s"], "samples/s",
                        f"{data_name}{size}, batch {z['ft_batch']}, {res.trainable_parameters:,} trainable; {what}",
                        peak))
        del bb, res
        free(device)
    return rows


def write_images(folder: Path, n: int, side: int = 224) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(sub / f"{i:06d}.jpg", quality=90)


def gpus_in_use(stop: threading.Event, seen: set[int]) -> None:
    """Poll every GPU's used memory while the command runs; a GPU whose use rose by 256 MB ran a process."""
    base = [torch.cuda.mem_get_info(i) for i in range(torch.cuda.device_count())]
    while not stop.wait(0.2):
        for i, (free0, _) in enumerate(base):
            if free0 - torch.cuda.mem_get_info(i)[0] > 256 * 2**20:
                seen.add(i)


def data_parallel_rows(device: torch.device, z: dict, procs: int) -> list[dict]:
    """`transferkit extract` in one process, then under torchrun in `procs` (one per GPU)."""
    if procs < 2:
        why = "--device cpu" if device.type == "cpu" else f"only {procs} GPU visible"
        return [row("data-parallel", "effnet:lite0", "torchrun", "auto", None, "images/s",
                    f"not measured: {why}; it needs torch.cuda.device_count() > 1")]
    rows, single = [], None
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp) / "images", max(z["dp_images"], 4 * z["dp_shard"] * procs))
        for n in (1, procs):
            launch = [sys.executable, "-m"] + (["transferkit"] if n == 1 else
                                               ["torch.distributed.run", "--nproc_per_node", str(n), "-m",
                                                "transferkit"])
            out = Path(tmp) / f"feats-{n}"
            cmd = launch + ["extract", "--data", str(Path(tmp) / "images"), "--out", str(out), "--model",
                            "effnet:lite0", "--device", device.type, "--batch-size", str(z["batch"]),
                            "--shard-size", str(z["dp_shard"])]
            stop, seen = threading.Event(), set()
            poll = threading.Thread(target=gpus_in_use, args=(stop, seen), daemon=True)
            if device.type == "cuda":
                poll.start()
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            wall = time.perf_counter() - t0
            stop.set()
            if device.type == "cuda":
                poll.join()
            if done.returncode != 0:  # said in the table (the rows above stay), the whole error on stderr
                print(done.stderr[-5000:], file=sys.stderr)
                last = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
                rows.append(row("data-parallel", "effnet:lite0", f"{n} process{'es' * (n > 1)}", "auto", None,
                                "images/s", f"not measured: {'torchrun' if n > 1 else 'one'} `transferkit extract` "
                                f"exited {done.returncode}: {last}"))
                break
            meta = json.loads((out / "meta.json").read_text())
            ips = meta["n_items"] / meta["extract_seconds"]
            single = single or ips
            rows.append(row("data-parallel", "effnet:lite0", f"{n} process{'es' * (n > 1)}", meta["precision"],
                            ips, "images/s", f"{meta['n_items']} JPEGs, model time (whole command "
                            f"{meta['n_items'] / wall:.0f}/s); {ips / single:.2f}× one process"
                            + (f"; GPUs in use {sorted(seen)}" if device.type == "cuda" else "")))
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ("part", "model", "variant", "precision", "throughput", "unit", "peak MB", "note")
    cells = [[r["part"], r["model"], r["variant"], r["precision"],
              "-" if r["throughput"] is None else f"{r['throughput']:.1f}", r["unit"],
              "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}", r["note"]] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols[:-1])]
    for line in [cols, *cells]:
        print("  ".join(f"{v:>{w}}" if i in (4, 6) else f"{v:<{w}}" for i, (v, w) in enumerate(zip(line, widths)))
              + "  " + line[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every path")
    ap.add_argument("--out", help="write the rows as JSON here (e.g. benchmarks/results/gpu_check.json)")
    args = ap.parse_args()
    try:
        device = runtime.resolve_device(args.device)
    except TransferkitError:  # one line, no traceback
        sys.exit(f"gpu_check: --device {args.device}, but torch {torch.__version__} (CUDA build {torch.version.cuda})"
                 " sees no CUDA GPU here: run it on a GPU machine, or --device cpu for a smoke run")
    z = SIZES["quick" if args.quick else "full"]
    auto, why = runtime.precision_decision(device)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "auto_precision": auto, "auto_why": why, "quick": args.quick}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   gpus=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version())
        print(f"GPU: {props.name}, {env['gpu_memory_gb']} GB (×{env['gpus']}); torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, cuDNN {env['cudnn']}")
    else:
        print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"precision auto = {auto}: {why}; fine-tuning runs at auto, extraction rows force fp32 / bf16", flush=True)
    rows = []
    for spec in EXTRACT_MODELS:
        rows += extract_rows(spec, device, z)
    for spec, data_name, build in FINETUNE_TASKS:
        rows += finetune_rows(spec, data_name, build, device, z)
    rows += data_parallel_rows(device, z, torch.cuda.device_count() if device.type == "cuda" else 0)
    print_table(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "gpu_check", "env": env, "sizes": z, "rows": rows},
                                             indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
