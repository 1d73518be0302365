"""Extraction throughput: transferkit's `extract_features` vs the loop a user writes by hand.

Same architecture, same weights (random: speed only), same input images. The hand loop is timm fp32,
batch 32, `torch.no_grad`, fed the already-preprocessed tensors (it gets preprocessing for free);
transferkit's time includes its own preprocessing from raw uint8 images, its DataLoader and writing
the feature store. Prints images/s for both, the ratio, and the cosine between our features and the
hand loop's fp32 features.

    python benchmarks/extract_throughput.py [--n 512] [--models resnet50,vit_small_patch16_224]

Ours runs twice: with the default `optimize="auto"` (TorchScript graph for CNNs from 512 items) and
with `optimize="compile"` (Inductor, which auto picks from 20,000 items); one-off graph build times are
inside our time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transferkit.backbones import load_backbone
from transferkit.data import Dataset
from transferkit.features import extract_features


def hand_loop(model: torch.nn.Module, pixels: torch.Tensor, batch: int = 32) -> tuple[np.ndarray, float]:
    """What a user writes: eval mode, no_grad, fp32, fixed batches over preprocessed tensors."""
    out = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            out.append(model(pixels[i : i + batch]))
    return torch.cat(out).numpy(), time.perf_counter() - t0


def run(name: str, n: int, seed: int = 0) -> dict:
    import timm

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    ours = load_backbone(f"timm:{name}", pretrained=False)
    hand = timm.create_model(name, pretrained=False, num_classes=0).eval()
    hand.load_state_dict({k: v for k, v in ours.model.state_dict().items() if k in hand.state_dict()})
    pixels = ours.collate(list(images))["pixel_values"]
    hand_loop(hand, pixels[:32])  # warm-up
    ref, hand_s = hand_loop(hand, pixels)
    data = Dataset(images, None, (), "image", f"random-{n}")
    rows = []
    for optimize in ("auto", "compile"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            fs = extract_features(ours, data, out=Path(tmp) / "f", batch_size=32, optimize=optimize, progress=False)
            ours_s = time.perf_counter() - t0
            feats = fs.features()
        cos = (feats * ref).sum(1) / (np.linalg.norm(feats, axis=1) * np.linalg.norm(ref, axis=1))
        rows.append({"model": name, "optimize": optimize, "n": n, "hand_img_s": n / hand_s, "ours_img_s": n / ours_s,
                     "ratio": hand_s / ours_s, "cosine_min": float(cos.min()), "threads": torch.get_num_threads()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images per model")
    parser.add_argument("--models", default="resnet50,vit_small_patch16_224")
    args = parser.parse_args()
    rows = [r for m in args.models.split(",") for r in run(m, args.n)]
    print(f"{'model':24s} {'optimize':>8s} {'n':>5s} {'hand img/s':>11s} {'ours img/s':>11s} {'ratio':>6s} "
          f"{'cos min':>8s}")
    for r in rows:
        print(f"{r['model']:24s} {r['optimize']:>8s} {r['n']:5d} {r['hand_img_s']:11.2f} {r['ours_img_s']:11.2f} "
              f"{r['ratio']:6.2f} {r['cosine_min']:8.5f}")
    out = Path(__file__).parent / "results" / "extract_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
