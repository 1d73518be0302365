"""Extraction throughput against the loops a user writes by hand, in one run, with the machine's matrix roof.

Per image model (random weights: speed only; the same weights in every loop), images/s of:

- naive hand loop: timm model, fp32, `torch.no_grad`, batch 32, fed already-preprocessed tensors;
- best hand loop: `torch.inference_mode`, channels-last for CNNs, bf16 autocast where the runtime policy picks
  bf16 (else fp32), batch 32, fed already-preprocessed tensors;
- ours: `extract_features` from raw uint8 images (preprocessing, batching, the store's writes included) with
  the defaults (`precision="auto"`, `optimize="auto"`), and with fp32 / bf16 forced.

Then our fraction of the machine's matrix roof (a large matmul in the precision used) from the model's FLOPs per
image (`torch.utils.flop_counter`), and, for text, texts/s of the bundled MiniLM against sentence-transformers
`encode` at the same precision on real short texts. The precision `auto` chose, and why, is printed first.

    python benchmarks/extract_throughput.py [--n 256] [--models resnet50,vit_small_patch16_224,efficientnet_b0,lite0]
                                            [--texts 4080] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from transferkit import runtime
from transferkit.backbones import load_backbone
from transferkit.data import Dataset
from transferkit.features import extract_features
from transferkit.features.inference import choose_optimization, explicit_attention_pays


def roof_gflops(bf16: bool, size: int = 1024, reps: int = 5) -> dict:
    """Matrix-multiply GFLOP/s of this machine in fp32 or bf16 (best of `reps`), through both of torch's CPU
    matrix libraries: a (4·size × size) @ (size × size) linear layer (MKL for fp32, oneDNN for bf16) and the same
    product as a 1×1 channels-last convolution (oneDNN). They differ: on AMD CPUs MKL runs its AVX2 code, so an
    fp32 linear layer reaches less than half of oneDNN's rate. The roof is the higher of the two."""
    import torch.nn.functional as F  # noqa: N812

    dtype = torch.bfloat16 if bf16 else torch.float32
    x = torch.randn(4 * size, size, dtype=dtype)
    w = torch.randn(size, size, dtype=dtype)
    img = x.T.reshape(1, size, 64, 4 * size // 64).contiguous(memory_format=torch.channels_last)
    kernel = w.reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    out = {}
    for name, fn in (("linear", lambda: F.linear(x, w)), ("conv1x1", lambda: F.conv2d(img, kernel))):
        with torch.inference_mode():
            fn()
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
        out[name] = 2 * 4 * size**3 / best / 1e9
    out["roof"] = max(out.values())
    return out


def flops_per_item(fn, example: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(example)
    return counter.get_total_flops() / next(iter(example.values())).shape[0]


def hand_loop(module, call, pixels: torch.Tensor, *, best: bool, bf16: bool, cnn: bool, batch: int = 32) -> float:
    """Seconds for one pass of `call` over `pixels`: naive (no_grad, fp32) or best (inference_mode, channels-last
    for CNNs, bf16 autocast)."""
    module.to(memory_format=torch.channels_last if best and cnn else torch.contiguous_format)
    if best and cnn:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    mode = torch.inference_mode() if best else torch.no_grad()
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if best and bf16 else nullcontext()
    with mode, cast:
        call(pixels[:batch])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(pixels), batch):
            call(pixels[i: i + batch])
    return time.perf_counter() - t0


def image_rows(name: str, n: int, auto: str, rounds: int) -> list[dict]:
    import timm

    spec = "effnet:lite0" if name == "lite0" else f"timm:{name}"
    images = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    ours = load_backbone(spec, pretrained=False)
    if name == "lite0":
        from efficientnet_lite_pytorch import EfficientNet

        hand = EfficientNet.from_name("efficientnet-lite0", image_size=224, num_classes=1000)
        hand.load_state_dict(ours.model.state_dict())
        net = lambda x: hand.extract_features(x).mean(dim=(2, 3))  # noqa: E731 — the pooled features we extract
    else:
        hand = timm.create_model(name, pretrained=False, num_classes=0).eval()
        hand.load_state_dict({k: v for k, v in ours.model.state_dict().items() if k in hand.state_dict()})
        net = hand
    hand.eval()
    pixels = ours.collate(list(images))["pixel_values"]
    cnn = name != "vit_small_patch16_224"
    flops = flops_per_item(lambda b: ours.encode(ours.model, b), {"pixel_values": pixels[:2]})
    data = Dataset(images, None, (), "image", f"random-{n}")
    paths = {}
    for precision in ("auto", "fp32", "bf16"):  # the one-off, per-machine measurements are not timed
        prec = runtime.resolve_precision(precision, "cpu")
        paths[precision] = {"graph": choose_optimization("auto", ours, prec),
                            "explicit_attention": explicit_attention_pays(ours.device, prec)}

    def ours_s(precision: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            extract_features(ours, data, out=Path(tmp) / "f", batch_size=32, precision=precision, progress=False)
            return time.perf_counter() - t0

    variants = {"naive hand loop (fp32, no_grad)": ("fp32", lambda: hand_loop(hand, net, pixels, best=False,
                                                                              bf16=False, cnn=cnn)),
                f"best hand loop ({auto}, inference_mode, channels-last)": (auto, lambda: hand_loop(
                    hand, net, pixels, best=True, bf16=auto == "bf16", cnn=cnn)),
                "ours (auto) = defaults": ("auto", lambda: ours_s("auto")),
                "ours (fp32)": ("fp32", lambda: ours_s("fp32")),
                "ours (bf16)": ("bf16", lambda: ours_s("bf16"))}
    for label, (_, fn) in variants.items():  # ours builds its graph once per process, as the hand loops warm up
        if label.startswith("ours"):
            fn()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):  # interleaved rounds, best of each: the machine's speed drifts between minutes
        for label, (_, fn) in variants.items():
            best[label] = min(best[label], fn())
    rows = []
    for label, (precision, _) in variants.items():
        prec = runtime.resolve_precision(precision, "cpu")
        row = {"model": name, "variant": label, "img_s": n / best[label], "precision": prec, "n": n,
               "gflop_per_item": flops / 1e9}
        if label.startswith("ours"):
            row.update(paths[precision])
        rows.append(row)
    for r in rows:
        r["vs_best_hand"] = r["img_s"] / rows[1]["img_s"]
        r["vs_naive_hand"] = r["img_s"] / rows[0]["img_s"]
    return rows


def text_rows(n: int, auto: str, rounds: int) -> list[dict]:
    from sentence_transformers import SentenceTransformer

    from transferkit import datasets

    texts = [t for name in ("sentiment-tweets", "sentiment-movies") for t in datasets.load(name).items][:n]
    bb = load_backbone("st:all-MiniLM-L6-v2")
    ref = SentenceTransformer(bb.info["folder"], device="cpu")
    data = Dataset(texts, None, (), "text", f"texts-{n}")

    def st_s(precision: str) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext():
            ref.encode(texts[:64], batch_size=64)
            t0 = time.perf_counter()
            ref.encode(texts, batch_size=64)
            return time.perf_counter() - t0

    def ours_s(precision: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            extract_features(bb, data, out=Path(tmp) / "f", batch_size=64, precision=precision, progress=False)
            return time.perf_counter() - t0

    rows = []
    for precision in ("fp32", "bf16"):
        st_best = ours_best = float("inf")
        st_error = None
        for _ in range(rounds):
            try:
                st_best = min(st_best, st_s(precision))
            except RuntimeError as e:  # e.g. torch's fused bf16 attention on an AMX CPU capped at AVX2
                st_error = f"{type(e).__name__}: {e}"
            ours_best = min(ours_best, ours_s(precision))
        rows.append({"model": "st:all-MiniLM-L6-v2", "precision": precision, "n": n,
                     "sentence_transformers_texts_s": None if st_error else n / st_best,
                     "sentence_transformers_error": st_error, "ours_texts_s": n / ours_best,
                     "ratio": None if st_error else st_best / ours_best, "auto": auto,
                     "explicit_attention": explicit_attention_pays(bb.device, precision)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="images per model")
    ap.add_argument("--models", default="resnet50,vit_small_patch16_224,efficientnet_b0,lite0")
    ap.add_argument("--texts", type=int, default=4080)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each variant counts")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default="benchmarks/results/extract_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    auto, why = runtime.precision_decision("cpu")
    print(f"precision auto = {auto}: {why}; allocator: {runtime.tune_allocator()}", flush=True)
    measured = {"fp32": roof_gflops(False), "bf16": roof_gflops(True)}
    roofs = {p: m["roof"] for p, m in measured.items()}
    print("matrix roof (GFLOP/s, " + f"{args.threads} threads): " + "; ".join(
        f"{p} {m['roof']:.0f} (linear {m['linear']:.0f}, 1×1 conv {m['conv1x1']:.0f})" for p, m in measured.items()),
        flush=True)
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        rows += image_rows(name, args.n, auto, args.rounds)
        for r in rows[-5:]:
            r["roof_fraction"] = r["gflop_per_item"] * r["img_s"] / roofs[r["precision"]]
            print(f"{r['model']:24s} {r['variant']:52s} {r['img_s']:8.1f} img/s  {r['vs_best_hand']:5.2f}× best  "
                  f"{r['vs_naive_hand']:5.2f}× naive  {100 * r['roof_fraction']:5.1f}% of the {r['precision']} roof",
                  flush=True)
    texts = text_rows(args.texts, auto, args.rounds) if args.texts else []
    for r in texts:
        theirs = (f"failed ({r['sentence_transformers_error']})" if r["sentence_transformers_error"] else
                  f"{r['sentence_transformers_texts_s']:.0f} texts/s ({r['ratio']:.2f}×)")
        print(f"{r['model']} {r['precision']}: ours {r['ours_texts_s']:.0f} texts/s, sentence-transformers {theirs}",
              flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
           "cpu": runtime.cpu_bf16_hardware()[1], "kernels": runtime.kernel_capability(), "auto": auto,
           "auto_why": why, "roof_gflops": measured}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "extract_throughput", "env": env, "images": rows,
                                          "texts": texts}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
