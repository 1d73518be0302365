"""Fine-tuning in fp32 and in bf16 autocast: training samples/s and held-out accuracy, on bundled tasks.

`--precision auto` fine-tunes in bf16 where the CPU runs it natively and faster (the same rule as extraction,
`transferkit.runtime`). This runs the same recipe in both precisions on real data, with the same seeds:

- text: all-MiniLM-L6-v2 (bundled), full fine-tuning, on `--n` stratified VADER movie-review snippets;
- image: EfficientNet-Lite0 (bundled ImageNet weights) at 64 px, full fine-tuning, on UCI digits (1,797 images).

Each run is `finetune(...)` with a seeded 70/15/15 split and keeps its best validation epoch; the accuracy is on
its test split, which no run sees before the end. Samples/s counts training items per second of the training
epochs (evaluation excluded). Several seeds give the spread against which "agree within noise" is read.

    python benchmarks/finetune_precision.py [--seeds 0,1] [--epochs 2] [--n 1200]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transferkit import datasets, runtime
from transferkit.backbones import load_backbone
from transferkit.data import stratified_sample
from transferkit.finetune import FinetuneConfig, finetune

TASKS = {
    "text": dict(spec="st:all-MiniLM-L6-v2", data="sentiment-movies", build={}, lr=5e-5, batch=32),
    "image": dict(spec="effnet:lite0", data="digits", build={"image_size": 64}, lr=1e-3, batch=32),
}


def run(task: str, precision: str, seed: int, epochs: int, n: int) -> dict:
    t = TASKS[task]
    ds = datasets.load(t["data"])
    if len(ds) > n:
        ds = ds.subset(stratified_sample(ds.labels, n, seed=0))  # the same items for every run
    bb = load_backbone(t["spec"], **t["build"])
    config = FinetuneConfig(strategy="full", epochs=epochs, batch_size=t["batch"], lr=t["lr"], precision=precision,
                            seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = finetune(bb, ds, Path(tmp) / "run", config, progress=False)
        wall = time.perf_counter() - t0
    speeds = [h["train_items_per_s"] for h in res.history]
    return {"task": task, "model": t["spec"], "data": t["data"], "n": len(ds), "precision": precision,
            "resolved": res.info.get("precision", precision), "seed": seed, "epochs": epochs,
            "test_accuracy": res.metrics["test"]["accuracy"], "samples_per_s": float(np.mean(speeds)),
            "wall_s": wall, "peak_memory_mb": res.peak_memory_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n", type=int, default=1200, help="items of the text task")
    ap.add_argument("--tasks", default="text,image")
    ap.add_argument("--out", default="benchmarks/results/finetune_precision.json")
    args = ap.parse_args()
    auto, why = runtime.precision_decision("cpu")
    print(f"precision auto = {auto}: {why}", flush=True)
    rows = []
    for task in args.tasks.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for precision in ("fp32", "bf16"):  # interleaved, so a drift of the machine's speed hits both
                r = run(task, precision, seed, args.epochs, args.n)
                rows.append(r)
                print(f"{task:5s} {precision} seed {seed}: test accuracy {r['test_accuracy']:.4f}, "
                      f"{r['samples_per_s']:.1f} samples/s, {r['wall_s']:.0f} s", flush=True)
    summary = []
    for task in args.tasks.split(","):
        by = {p: [r for r in rows if r["task"] == task and r["precision"] == p] for p in ("fp32", "bf16")}
        acc = {p: np.array([r["test_accuracy"] for r in v]) for p, v in by.items()}
        sps = {p: np.array([r["samples_per_s"] for r in v]) for p, v in by.items()}
        diff = acc["bf16"] - acc["fp32"]  # paired by seed
        s = {"task": task, "fp32_accuracy": acc["fp32"].mean(), "bf16_accuracy": acc["bf16"].mean(),
             "accuracy_difference_mean": diff.mean(), "accuracy_difference_by_seed": diff.tolist(),
             "accuracy_seed_sd_fp32": acc["fp32"].std(ddof=1) if len(acc["fp32"]) > 1 else None,
             "fp32_samples_per_s": sps["fp32"].mean(), "bf16_samples_per_s": sps["bf16"].mean(),
             "bf16_speedup": sps["bf16"].mean() / sps["fp32"].mean()}
        summary.append(s)
        print(f"{task}: accuracy fp32 {s['fp32_accuracy']:.4f} vs bf16 {s['bf16_accuracy']:.4f} (paired difference "
              f"{s['accuracy_difference_mean']:+.4f}; seeds {', '.join(f'{d:+.4f}' for d in diff)}), samples/s fp32 "
              f"{s['fp32_samples_per_s']:.1f} vs bf16 {s['bf16_samples_per_s']:.1f} ({s['bf16_speedup']:.2f}×)",
              flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": runtime.cpu_bf16_hardware()[1], "auto": auto}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "finetune_precision", "env": env, "args": vars(args),
                                          "runs": rows, "summary": summary}, indent=2, default=float) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
