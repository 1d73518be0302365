"""Benchmark: every transfer route on one real task — frozen-feature probe vs head vs last-k vs full vs LoRA.

Task: the bundled VADER tweets (positive/negative, |score| ≥ 0.5), a stratified `--n` items, one seeded
70/15/15 split shared by every route; backbone all-MiniLM-L6-v2 (bundled). The probe is our logistic
regression on cached features with C chosen on the validation split; the fine-tuning strategies run
`--epochs` epochs with AdamW and keep their best validation epoch. Prints test accuracy, wall time and
trainable parameters for each; writes benchmarks/results/finetune_strategies.json.

Run: ``python benchmarks/finetune_strategies.py [--n 1200] [--epochs 3] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from transferkit import datasets
from transferkit.backbones import load_backbone
from transferkit.data import stratified_sample, stratified_split
from transferkit.features import extract_features
from transferkit.finetune import FinetuneConfig, finetune
from transferkit.heads import fit_head

MODEL = "st:all-MiniLM-L6-v2"
RECIPES = {
    "head": dict(strategy="head", lr=1e-3),
    "last-k": dict(strategy="last-k", last_k=2, lr=1e-4),
    "full": dict(strategy="full", lr=5e-5),
    "lora": dict(strategy="lora", lr=5e-4, lora_r=8),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = datasets.load("sentiment-tweets")
    data = ds.subset(stratified_sample(ds.labels, args.n, seed=args.seed))
    split = stratified_split(data.labels, val=0.15, test=0.15, seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        bb = load_backbone(MODEL)
        fs = extract_features(bb, data, out=Path(tmp) / "feats", progress=False)
        X, y = fs.features(), fs.labels()
        head = fit_head("logreg", X[split.train], y[split.train], X[split.val], y[split.val])
        acc = head.evaluate(X[split.test], y[split.test])["accuracy"]
        rows.append({"route": "probe:logreg", "test_accuracy": acc, "wall_s": time.perf_counter() - t,
                     "trainable": X.shape[1] * 2 + 2})  # binary logistic regression: one weight row + bias per class
        for name, recipe in RECIPES.items():
            cfg = FinetuneConfig(epochs=args.epochs, batch_size=32, seed=args.seed, checkpoint_every=10**6, **recipe)
            t = time.perf_counter()
            r = finetune(load_backbone(MODEL), data, Path(tmp) / name, cfg, progress=False)
            rows.append({"route": f"finetune:{name}", "test_accuracy": r.metrics["test"]["accuracy"],
                         "wall_s": time.perf_counter() - t, "trainable": r.trainable_parameters,
                         "peak_memory_mb": r.peak_memory_mb, "best_epoch": r.best_epoch})
            print(rows[-1], flush=True)
    print(f"\n{MODEL} on {args.n} real tweets (test {len(split.test)}), {args.epochs} epochs, {args.threads} threads")
    print(f"{'route':18} {'test acc':>8} {'wall s':>8} {'trainable':>12}")
    for r in rows:
        print(f"{r['route']:18} {r['test_accuracy']:8.4f} {r['wall_s']:8.1f} {r['trainable']:12,}")
    out = Path(__file__).parent / "results" / "finetune_strategies.json"
    out.write_text(json.dumps({"model": MODEL, "n": args.n, "epochs": args.epochs, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
