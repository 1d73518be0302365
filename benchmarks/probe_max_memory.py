"""`probe --max-memory`: heads fitted shard by shard against the same heads in memory, on a real store.

The store holds Fashion-MNIST's 70,000 real images as 784 pixel features (float32, 209 MB), written in shards of
1,024 rows (Debian's dataset-fashion-mnist; the store is built in a temporary folder, never in the repository).
Fitting the heads in memory takes about 6x that (1.25 GB: `heads.probe.IN_MEMORY_FACTOR`), so with the threshold at
600 MB `probe_features` fits them shard by shard. Each probe runs in its own fresh process, so each peak RSS (VmHWM,
the whole process: interpreter and libraries included) is that probe's alone; both use the same 70/15/15 split
(seed 0), hyperparameters chosen on validation, accuracy on test.

    python benchmarks/probe_max_memory.py [--heads ridge,logreg,svm] [--max-memory 600MB]
                                          [--out benchmarks/results/probe_max_memory.json]
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
from transferkit.heads.probe import probe_features
def hwm_mb():  # this process's own peak (VmHWM); ru_maxrss would carry the parent's peak across fork + exec
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
store, head, max_memory = sys.argv[1:4]
before = hwm_mb()
t = time.perf_counter()
r = probe_features(store, head=head, seed=0, max_memory=max_memory)
row = r["heads"][0]
print(json.dumps({"head": head, "streamed": r["streamed"], "max_memory": max_memory, "chosen": row["chosen"],
                  "val_accuracy": row["val_score"], "test_accuracy": row["accuracy"],
                  "wall_s": round(time.perf_counter() - t, 2), "rss_before_fit_mb": round(before, 1),
                  "peak_rss_mb": round(hwm_mb(), 1), "in_memory_estimate_mb": r["in_memory_mb"]}))
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
    ap.add_argument("--heads", default="ridge,logreg,svm")
    ap.add_argument("--max-memory", default="600MB")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from transferkit.runtime import memory_budget

    threshold_mb = memory_budget(args.max_memory) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = build_store(Path(tmp))
        size_mb = sum(p.stat().st_size for p in store.glob("shard-*")) / 2**20
        print(f"store: {store} ({size_mb:.0f} MB of features) built in {time.perf_counter() - t:.1f} s", flush=True)
        rows = []
        for head in args.heads.split(","):
            for max_memory in ("1TB", args.max_memory):  # in memory; then shard by shard, above the threshold
                out = subprocess.run([sys.executable, "-c", WORKER, str(store), head, max_memory],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    summary = {"store_mb": round(size_mb, 1), "max_memory_mb": threshold_mb, "rows": rows, "heads": {}}
    print(f"\n{'head':7} {'route':10} {'chosen':12} {'val acc':>8} {'test acc':>8} {'peak RSS':>9} {'wall s':>7}")
    for head in args.heads.split(","):
        mem, streamed = (r for r in rows if r["head"] == head)
        assert not mem["streamed"] and streamed["streamed"]
        for r in (mem, streamed):
            print(f"{head:7} {'streamed' if r['streamed'] else 'in memory':10} {r['chosen']:12} "
                  f"{100 * r['val_accuracy']:7.2f}% {100 * r['test_accuracy']:7.2f}% {r['peak_rss_mb']:7.0f}MB "
                  f"{r['wall_s']:7.1f}")
        summary["heads"][head] = {
            "accuracy_difference_points": round(100 * (streamed["test_accuracy"] - mem["test_accuracy"]), 3),
            "streamed_peak_rss_under_threshold": streamed["peak_rss_mb"] < threshold_mb,
            "peak_rss_ratio_streamed_over_in_memory": round(streamed["peak_rss_mb"] / mem["peak_rss_mb"], 3),
            "wall_ratio_streamed_over_in_memory": round(streamed["wall_s"] / mem["wall_s"], 3)}
    print(json.dumps(summary["heads"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
