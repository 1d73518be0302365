"""The allocator policy (`transferkit.runtime.tune_allocator`): extraction speed, kernel time, page faults and peak
memory with glibc's defaults against the tuned heap, each in a fresh process on the same images.

    python benchmarks/allocator.py [--n 1200] [--model effnet:lite0] [--image-size 224] [--precision auto]

Random uint8 images (speed only). Each configuration runs `extract_features` in its own process and reports
items/s, wall / user / system seconds, minor page faults and peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, tempfile, time
import numpy as np
from transferkit import runtime
from transferkit.backbones import load_backbone
from transferkit.data import Dataset
from transferkit.features import extract_features
n, spec, size, precision, tuned = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
if not tuned:
    os.environ["TRANSFERKIT_ALLOCATOR"] = "system"
images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
bb = load_backbone(spec, pretrained=False, image_size=size)
before = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    fs = extract_features(bb, Dataset(images, None, (), "image", "random"), out=tmp + "/f", precision=precision,
                          progress=False)
wall = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"tuned": tuned, "policy": runtime.tune_allocator(), "precision": fs.meta["precision"],
                  "items_per_s": n / wall, "wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
                  "system_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt,
                  "peak_rss_mb": runtime.peak_rss_mb()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--model", default="effnet:lite0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out", default="benchmarks/results/allocator.json")
    args = ap.parse_args()
    rows = []
    for tuned in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", CHILD, str(args.n), args.model, str(args.image_size),
                            args.precision, tuned], capture_output=True, text=True, env={**os.environ})
        if r.returncode:
            raise SystemExit(r.stderr[-2000:])
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base, tuned = rows
    print(f"{'allocator':28s} {'items/s':>8s} {'wall s':>7s} {'user s':>7s} {'sys s':>7s} {'minor faults':>13s} "
          f"{'peak MB':>8s}")
    for r in rows:
        print(f"{r['policy']:28s} {r['items_per_s']:8.1f} {r['wall_s']:7.1f} {r['user_s']:7.1f} {r['system_s']:7.1f} "
              f"{r['minor_faults']:13,d} {r['peak_rss_mb']:8.0f}")
    print(f"tuned / system: {tuned['items_per_s'] / base['items_per_s']:.2f}x items/s, system time "
          f"{base['system_s']:.1f} -> {tuned['system_s']:.1f} s ({args.model}, {args.image_size} px, {args.n} images, "
          f"{tuned['precision']})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "allocator", "args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
