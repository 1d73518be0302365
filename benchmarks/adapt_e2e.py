"""Benchmark: end-to-end domain adaptation through the fine-tuning loop, MNIST → UCI 8×8 digits (small, for CPU time).

Fine-tunes EfficientNet-Lite0 (ImageNet, 64 px, strategy full, 3 epochs, batch 32, seed 0) on a stratified 600
MNIST digits, source-only and with each end-to-end domain loss (DANN, CDAN, MMD; `transferkit adapt --method
dann-e2e|cdan-e2e|mmd-e2e`) on 600 unlabelled UCI digits, and prints target accuracy (labels used for scoring only),
source test accuracy and wall time of each vs the source-only run with the same settings (the bn-frozen source
run of benchmarks/adapt_source_free.py). Also adapts that source-only run without source data with SHOT (frozen head,
information maximisation + pseudo labels, 3 epochs; `transferkit adapt --method shot --source-run RUN`).

Run: ``python benchmarks/adapt_e2e.py [--tradeoff 1.0 0.3 ...] [--methods dann-e2e ... shot]``;
writes benchmarks/results/adapt_e2e.txt (+ .json).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

try:
    import transferkit.adapt  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
from adapt_source_free import IMAGE_SIZE, N, mnist_to_digits, write_results  # same task, same results format

from transferkit.adapt.end_to_end import adapt_end_to_end
from transferkit.adapt.source_free import adapt_run
from transferkit.backbones import load_backbone
from transferkit.finetune import FinetuneConfig, finetune
from transferkit.finetune.run import load_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tradeoff", type=float, nargs="+", default=[1.0], help="domain_tradeoff values to run")
    ap.add_argument("--methods", nargs="+", default=["dann-e2e", "cdan-e2e", "mmd-e2e", "shot"])
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    mnist, digits, yt = mnist_to_digits()
    base = dict(strategy="full", epochs=3, batch_size=32, seed=0)
    opts = {"image_size": IMAGE_SIZE}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = finetune(load_backbone("effnet:lite0", image_size=IMAGE_SIZE), mnist, Path(tmp) / "source",
                       FinetuneConfig(**base), backbone_options=opts, progress=False)
        wall = time.perf_counter() - t0
        acc0 = float((load_run(res.out).predict(digits) == yt).mean())
        rows.append({"method": "source-only (fine-tuned)", "target_acc": acc0,
                     "source_test_acc": res.metrics["test"]["accuracy"], "wall_s": wall})
        print(rows[-1], flush=True)
        if "shot" in args.methods:
            rec = adapt_run("shot", res.out, digits, Path(tmp) / "shot", target_labels=yt)
            rows.append({"method": "shot (from the source-only run)", "target_acc": rec["metrics"]["target_accuracy"],
                         "source_test_acc": float("nan"), "wall_s": wall + rec["fit_s"]})
            print(rows[-1], flush=True)
        for lam in args.tradeoff:
            for method in (m for m in args.methods if m != "shot"):
                t0 = time.perf_counter()
                res = adapt_end_to_end(method, load_backbone("effnet:lite0", image_size=IMAGE_SIZE), mnist, digits,
                                       Path(tmp) / f"{method}-{lam}", FinetuneConfig(**base), tradeoff=lam,
                                       target_labels=yt, backbone_options=opts, progress=False)
                rows.append({"method": f"{method}, tradeoff {lam:g}",
                             "target_acc": res.info["adaptation"]["metrics"]["target_accuracy"],
                             "source_test_acc": res.metrics["test"]["accuracy"],
                             "wall_s": time.perf_counter() - t0})
                print(rows[-1], flush=True)
    lines = [f"# benchmarks/adapt_e2e.py on {platform.machine()} {platform.python_version()}, "
             f"{time.strftime('%Y-%m-%d %H:%M')} (shared 2-core machine: wall times are noisy)",
             f"MNIST[{N}] → UCI digits[{N}], EfficientNet-Lite0 {IMAGE_SIZE} px, fine-tuned full 3 epochs, batch 32, "
             "seed 0; the target's labels score the written model and nothing else",
             f"{'method':<32} {'target_acc':>10} {'vs_source_only':>14} {'source_test_acc':>15} {'wall_s':>8}"]
    for r in rows:
        src = "-" if np.isnan(r["source_test_acc"]) else f"{r['source_test_acc']:.4f}"
        lines.append(f"{r['method']:<32} {r['target_acc']:>10.4f} {r['target_acc'] - acc0:>+14.4f} "
                     f"{src:>15} {r['wall_s']:>8.1f}")
    lines.append("shot's wall_s includes the source-only fine-tune it starts from; the *-e2e rows train on source + "
                 "target batches (twice the images per step)")
    write_results("adapt_e2e", lines, rows)


if __name__ == "__main__":
    main()
