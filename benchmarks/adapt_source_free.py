"""Benchmark: source-free adaptation of a fine-tuned CNN, MNIST → UCI 8×8 digits (small, for CPU time).

Fine-tunes EfficientNet-Lite0 (ImageNet, 64 px) on a stratified 600 MNIST digits (strategy full, 3 epochs), once
with batch-norm statistics kept at ImageNet's (--bn-frozen, the default for pretrained backbones) and once
updated on MNIST batches (--bn-train, the setting AdaBN assumes),
then adapts the run to 600 UCI digits without source data: AdaBN (target batch-norm statistics, with and without
re-centring the head's input) and TENT (entropy minimisation of the batch-norm scale/shift, one streaming
pass). Prints target accuracy (labels used for scoring only) and wall time of each vs the source-only run.

Run: ``python benchmarks/adapt_source_free.py``; writes benchmarks/results/adapt_source_free.txt (+ .json).
"""

from __future__ import annotations

import json
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

from transferkit import datasets
from transferkit.adapt.source_free import adapt_run
from transferkit.backbones import load_backbone
from transferkit.data import stratified_sample
from transferkit.finetune import FinetuneConfig, finetune
from transferkit.finetune.run import load_run

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_SIZE, N = 64, 600


def mnist_to_digits() -> tuple[object, object, np.ndarray]:
    """(MNIST[N] source, UCI digits[N] target, target labels): stratified, seed 0 — shared with adapt_e2e.py."""
    mnist = datasets.load("mnist")
    mnist = mnist.subset(stratified_sample(mnist.labels, N, seed=0), name=f"mnist[{N}]")
    digits = datasets.load("digits")
    digits = digits.subset(stratified_sample(digits.labels, N, seed=0), name=f"digits[{N}]")
    return mnist, digits, np.asarray(digits.labels)


def write_results(name: str, lines: list[str], rows: list[dict]) -> None:
    """benchmarks/results/NAME.txt (the printed table) and NAME.json (the rows); prints the table."""
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.txt").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)


def main() -> None:
    warnings.filterwarnings("ignore")
    mnist, digits, yt = mnist_to_digits()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bn_train in (False, True):  # BN statistics kept at ImageNet's (default) / updated on MNIST batches
            tag = "bn-train" if bn_train else "bn-frozen"
            src_run = Path(tmp) / f"source-{tag}"
            t0 = time.perf_counter()
            finetune(load_backbone("effnet:lite0", image_size=IMAGE_SIZE), mnist, src_run,
                     FinetuneConfig(strategy="full", epochs=3, batch_size=32, seed=0, bn_train=bn_train),
                     backbone_options={"image_size": IMAGE_SIZE}, progress=False)
            fit = time.perf_counter() - t0
            acc = float((load_run(src_run).predict(digits) == yt).mean())
            rows.append({"method": f"source-only (fine-tuned, {tag})", "target_acc": acc, "wall_s": fit})
            print(rows[-1], flush=True)
            for name, method, kw in (("adabn", "adabn", {}), ("adabn (BN statistics only)", "adabn",
                                                              {"recentre": False}), ("tent", "tent", {})):
                rec = adapt_run(method, src_run, digits, Path(tmp) / f"{method}-{len(rows)}", target_labels=yt, **kw)
                rows.append({"method": f"{name}, {tag}", "target_acc": rec["metrics"]["target_accuracy"],
                             "wall_s": rec["fit_s"], "vs": acc})
                print(rows[-1], flush=True)
    lines = [f"# benchmarks/adapt_source_free.py on {platform.machine()} {platform.python_version()}, "
             f"{time.strftime('%Y-%m-%d %H:%M')} (shared 2-core machine: wall times are noisy)",
             f"MNIST[{N}] → UCI digits[{N}], EfficientNet-Lite0 {IMAGE_SIZE} px, fine-tuned full 3 epochs, seed 0; "
             "vs_source_only: against the source run the method starts from",
             f"{'method':<40} {'target_acc':>10} {'vs_source_only':>14} {'wall_s':>8}"]
    for r in rows:
        gain = r["target_acc"] - r.get("vs", r["target_acc"])
        lines.append(f"{r['method']:<40} {r['target_acc']:>10.4f} {gain:>+14.4f} {r['wall_s']:>8.1f}")
    write_results("adapt_source_free", lines, rows)


if __name__ == "__main__":
    main()
