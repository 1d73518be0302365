"""Do bf16 (and opt-in int8) features probe as well as fp32 ones? Held-out accuracy on the bundled tasks.

For each bundled task, features are extracted with the bundled backbone (all-MiniLM-L6-v2 for text,
EfficientNet-Lite0 with its ImageNet weights for images) in fp32, bf16 and, for text, int8 (dynamically quantised
linear layers; a CNN's features run through convolutions that int8 leaves as they are, so images skip it), and fp32
features stored in float16 (`--store-dtype float16`, half the disk). Then
our logistic-regression probe (C chosen on the validation split) is fitted on the same seeded 70/15/15 splits for
every precision, and scored on the test split. The paired difference to fp32, per seed, is set against the
spread between seeds: "within noise" means the mean difference is smaller than that spread.

    python benchmarks/precision_accuracy.py [--seeds 0,1,2] [--max-items 3000]
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
from transferkit.features import extract_features
from transferkit.heads.probe import probe_features

TASKS = [("sentiment-movies", "st:all-MiniLM-L6-v2"), ("sentiment-tweets", "st:all-MiniLM-L6-v2"),
         ("sentiment-amazon", "st:all-MiniLM-L6-v2"), ("sentiment-nyt", "st:all-MiniLM-L6-v2"),
         ("sms-spam", "st:all-MiniLM-L6-v2"), ("digits", "effnet:lite0"), ("mnist", "effnet:lite0"),
         ("fashion-mnist", "effnet:lite0")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-items", type=int, default=3000, help="stratified sample of larger tasks")
    ap.add_argument("--tasks", default=",".join(t for t, _ in TASKS))
    ap.add_argument("--out", default="benchmarks/results/precision_accuracy.json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    auto, why = runtime.precision_decision("cpu")
    print(f"precision auto = {auto}: {why}", flush=True)
    rows, summary = [], []
    for name, spec in TASKS:
        if name not in args.tasks.split(","):
            continue
        ds = datasets.load(name)
        if len(ds) > args.max_items:
            ds = ds.subset(stratified_sample(ds.labels, args.max_items, seed=0))
        bb = load_backbone(spec)
        precisions = ("fp32", "bf16", "int8") if bb.modality == "text" else ("fp32", "bf16")
        precisions += ("fp32-store-float16",)
        acc: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for precision in precisions:
                t0 = time.perf_counter()
                compute, _, stored = precision.partition("-store-")
                fs = extract_features(bb, ds, out=Path(tmp) / precision, precision=compute, progress=False,
                                      store_dtype=stored or "float32")
                seconds = time.perf_counter() - t0
                acc[precision] = [probe_features(fs, head="logreg", seed=s)["heads"][0]["accuracy"] for s in seeds]
                rows.append({"task": name, "backbone": spec, "n": len(ds), "precision": precision,
                             "extract_s": seconds, "items_per_s": len(ds) / seconds, "accuracy_by_seed": acc[precision],
                             "accuracy": float(np.mean(acc[precision]))})
        base = np.array(acc["fp32"])
        s = {"task": name, "backbone": spec, "n": len(ds), "fp32": base.mean(), "seed_sd_fp32": base.std(ddof=1)}
        for precision in precisions[1:]:
            diff = np.array(acc[precision]) - base
            s[precision] = float(np.mean(acc[precision]))
            s[f"{precision}_minus_fp32"] = diff.mean()
            s[f"{precision}_minus_fp32_by_seed"] = diff.tolist()
            s[f"{precision}_within_noise"] = bool(abs(diff.mean()) <= max(base.std(ddof=1), 1.0 / (0.15 * len(ds))))
        summary.append(s)
        print(f"{name:18s} n={len(ds):5d} fp32 {s['fp32']:.4f} (seed sd {s['seed_sd_fp32']:.4f})  "
              + "  ".join(f"{p} {s[p]:.4f} ({s[p + '_minus_fp32']:+.4f}{'' if s[p + '_within_noise'] else ' !'})"
                          for p in precisions[1:]), flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": runtime.cpu_bf16_hardware()[1], "int8_hardware": runtime.cpu_int8_hardware()[1], "auto": auto}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "precision_accuracy", "env": env, "args": vars(args),
                                          "rows": rows, "summary": summary}, indent=2, default=float) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
