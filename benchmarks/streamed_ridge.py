"""Out-of-core ridge vs in-memory ridge on the same feature store: test accuracy, peak RSS, wall time.

The store holds Fashion-MNIST's 70,000 real images as 784 pixel features (float32, 215 MB), written in shards of
1,024 rows (Debian's dataset-fashion-mnist; the store is built in a temporary folder, never in the repository).
Each fit runs in its own fresh process, so each peak RSS (VmHWM) is that fit's alone; both use the same
70/15/15 split (seed 0), alpha chosen on validation, accuracy on test.

    python benchmarks/streamed_ridge.py [--out benchmarks/results/streamed_ridge.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORKER = r"""
import json, sys, time
import numpy as np
from transferkit.data.splits import stratified_split
from transferkit.features.store import FeatureSet
from transferkit.heads.linear import fit_ridge
from transferkit.heads.metrics import score_all
from transferkit.heads.streamed import evaluate_rows, fit_ridge_streamed
def hwm_mb():  # this process's own peak (VmHWM); ru_maxrss would carry the parent's peak across fork + exec
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
fs = FeatureSet.open(sys.argv[1]); y = fs.labels()
split = stratified_split(y, seed=0)
before = hwm_mb()
t = time.perf_counter()
if sys.argv[2] == "in-memory":
    X = fs.features()
    res = fit_ridge(X[split.train], y[split.train], X[split.val], y[split.val], "classification", 0)
    acc = score_all("classification", y[split.test], res.predictor.predict(X[split.test]))["accuracy"]
else:
    res = fit_ridge_streamed(fs, split.train, split.val, "classification")
    acc = evaluate_rows(res.predictor, fs, split.test, "classification")["accuracy"]
print(json.dumps({"mode": sys.argv[2], "alpha": res.params["alpha"], "val_accuracy": res.val_score,
                  "test_accuracy": acc, "wall_s": round(time.perf_counter() - t, 2),
                  "rss_before_fit_mb": round(before, 1),
                  "peak_rss_mb": round(hwm_mb(), 1)}))
"""


def build_store(folder: Path) -> Path:
    from transferkit.data.datasets import load_fashion_mnist
    from transferkit.features.store import FeatureSet

    ds = load_fashion_mnist()
    X = np.stack([np.asarray(img, dtype=np.float32).reshape(-1) for img in ds.items])
    n, d, size = X.shape[0], X.shape[1], 1024
    meta = {"key": "fashion-mnist-pixels", "n_items": n, "feature_dim": d, "shard_size": size,
            "n_shards": -(-n // size), "backbone": {"spec": "pixels"},
            "data": {"task": "classification", "name": "fashion-mnist", "class_names": list(ds.class_names)}}
    fs = FeatureSet.create(folder / "store", meta, np.asarray(ds.labels))
    for i in range(meta["n_shards"]):
        lo, hi = fs.shard_bounds(i)
        fs.write_shard(i, X[lo:hi])
    fs.mark_complete()
    return fs.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = build_store(Path(tmp))
        size_mb = sum(p.stat().st_size for p in store.glob("shard-*")) / 2**20
        print(f"store: {store} ({size_mb:.0f} MB of features) built in {time.perf_counter() - t:.1f} s")
        rows = []
        for mode in ("in-memory", "streamed"):
            out = subprocess.run([sys.executable, "-c", WORKER, str(store), mode], capture_output=True, text=True,
                                 check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]))
    mem, streamed = rows
    summary = {"store_mb": round(size_mb, 1), "rows": rows,
               "accuracy_difference_points": round(100 * (streamed["test_accuracy"] - mem["test_accuracy"]), 3),
               "fit_peak_rss_ratio_streamed_over_in_memory": round(streamed["peak_rss_mb"] / mem["peak_rss_mb"], 3),
               "wall_ratio_streamed_over_in_memory": round(streamed["wall_s"] / mem["wall_s"], 3)}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
