"""Soak test of extraction: many small image files through `extract_features`, watching memory and file handles.

Writes N procedurally generated 32×32 PNG files (10 class folders) to a temp dir, loads them as an image
folder and extracts features with a random-init EfficientNet-Lite0 at 32 px (weights do not matter for
resources). A thread samples RSS every 0.1 s for the peaks; each finished shard records the main process's
RSS, its anonymous part and its DataLoader workers' RSS against items done. Prints throughput, peak RSS,
main RSS after 10 % vs 100 % of the items (flat means growth under 15 %), the anonymous RSS (heap,
tensors, shared-memory batches: what a leak grows; the rest of RSS is file-backed pages of shared
libraries, constant and reclaimable), the workers' RSS (forked workers touch copy-on-write pages of the
parent, so theirs rises towards the parent's size), and open file descriptors before and after (equal
means no leak).

    python benchmarks/soak_extract.py [--n 50000] [--model effnet:lite0|tiny] [--image-size 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from transferkit.backbones import load_backbone
from transferkit.data import load_data
from transferkit.features import extract_features

GROWTH_BOUND = 0.15


def write_images(folder: Path, n: int, size: int = 32, seed: int = 0) -> None:
    """n PNGs in 10 class folders: a class-dependent colour gradient plus noise (fast, all distinct)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    grad = ramp[None, :, None] * np.ones((size, 1, 3), np.float32)
    for c in range(10):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    colours = rng.uniform(0.2, 1.0, (10, 3)).astype(np.float32)
    for i in range(n):
        c = i % 10
        img = 255 * (0.6 * grad * colours[c] + 0.4 * rng.random((size, size, 3), dtype=np.float32))
        Image.fromarray(img.astype(np.uint8)).save(folder / f"class{c}" / f"{i:06d}.png", compress_level=1)


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def anon_rss() -> int:
    """Resident memory of this process that no file backs, bytes; 0 off Linux.

    RssAnon (heap, tensors, Python objects) + RssShmem (shared-memory tensors received from DataLoader
    workers). RSS also counts file-backed pages (shared libraries, mapped files): constant here, and the
    kernel can drop them at will; a leak shows in the part this returns.
    """
    try:
        with open("/proc/self/status") as f:
            kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("RssAnon", "RssShmem")}
        return (kb["RssAnon"] + kb["RssShmem"]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def rss_parts() -> tuple[int, int]:
    """RSS of this process and the summed RSS of its children (DataLoader workers), bytes."""
    me = psutil.Process()
    workers = 0
    for child in me.children(recursive=True):
        try:
            workers += child.memory_info().rss
        except psutil.Error:
            pass
    return me.memory_info().rss, workers


class Sampler(threading.Thread):
    """Samples RSS every `every` seconds until stopped; keeps the peaks (main process, main + workers)."""

    def __init__(self, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.peak_main = every, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            main, workers = rss_parts()
            self.peak, self.peak_main = max(self.peak, main + workers), max(self.peak_main, main)
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def tiny_backbone(image_size: int):
    """A small conv net (for the fast test): same extraction path, a fraction of the compute."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU())
    return load_backbone(net, image_size=image_size)


def soak(n: int, *, model: str = "effnet:lite0", image_size: int = 32, batch_size: int = 128,
         shard_size: int = 1024, workers: int | None = None, workdir: Path | None = None,
         log=print) -> dict:
    """Run the soak and return its figures (see module docstring)."""
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="tk-soak-", dir=workdir))
    try:
        t0 = time.perf_counter()
        write_images(tmp / "imgs", n, image_size)
        gen_s = time.perf_counter() - t0
        log(f"wrote {n} PNGs in {gen_s:.1f} s")
        data = load_data(tmp / "imgs")
        if model == "tiny":
            bb = tiny_backbone(image_size)
        else:
            torch.manual_seed(0)
            bb = load_backbone(model, pretrained=False, image_size=image_size)
        fds_before, rss_before = open_fds(), rss_parts()[0]
        per_shard: list[tuple[int, int, int, int]] = []  # (items, main RSS, workers' RSS, main anon) per shard
        done = [0]
        t_start = [time.perf_counter()]

        def on_shard(i: int) -> None:
            done[0] += min(shard_size, n - i * shard_size)
            per_shard.append((done[0], *rss_parts(), anon_rss()))
            if len(per_shard) % max(1, (n // shard_size) // 10) == 0:
                log(f"  {done[0]} items, {done[0] / (time.perf_counter() - t_start[0]):.0f}/s, "
                    f"RSS {per_shard[-1][1] / 2**20:.0f} MB + workers {per_shard[-1][2] / 2**20:.0f} MB")

        sampler = Sampler()
        sampler.start()
        t0 = t_start[0] = time.perf_counter()
        fs = extract_features(bb, data, out=tmp / "feats", batch_size=batch_size, shard_size=shard_size,
                              num_workers=workers, optimize="none", progress=False, on_shard=on_shard)
        extract_s = time.perf_counter() - t0
        sampler.stop()
        del fs
        fds_after = open_fds()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def at(frac: float) -> tuple[int, int, int, int]:
        return next(row for row in per_shard if row[0] >= frac * n)

    (_, m10, w10, a10), (_, m25, _, _), (_, m100, w100, a100) = at(0.10), at(0.25), per_shard[-1]
    q = max(1, len(per_shard) // 4)
    first_q, last_q = (float(np.median([row[1] for row in part])) for part in (per_shard[:q], per_shard[-q:]))
    return {
        "load_start": load_start, "load_end": os.getloadavg()[0],
        "n": n, "model": model, "image_size": image_size, "batch_size": batch_size, "shard_size": shard_size,
        "workers": workers, "generate_s": round(gen_s, 1), "extract_s": round(extract_s, 1),
        "images_per_s": round(n / extract_s, 1), "rss_before_mb": rss_before / 2**20,
        "peak_rss_mb": sampler.peak / 2**20, "peak_rss_main_mb": sampler.peak_main / 2**20,
        "rss_10pct_mb": m10 / 2**20, "rss_25pct_mb": m25 / 2**20, "rss_100pct_mb": m100 / 2**20,
        "anon_10pct_mb": a10 / 2**20, "anon_100pct_mb": a100 / 2**20,
        "workers_10pct_mb": w10 / 2**20, "workers_100pct_mb": w100 / 2**20,
        "growth_10_to_100": m100 / m10 - 1, "growth_quarters": last_q / first_q - 1,
        "total_growth_10_to_100": (m100 + w100) / (m10 + w10) - 1,
        "fds_before": fds_before, "fds_after": fds_after,
        "rss_per_shard_mb": [(items, round(m / 2**20, 1), round(w / 2**20, 1)) for items, m, w, _ in per_shard],
        "anon_per_shard_mb": [round(a / 2**20, 1) for *_, a in per_shard],
    }


def report(r: dict) -> str:
    """Human-readable lines for a soak result."""
    flat = "flat" if max(r["growth_10_to_100"], r["growth_quarters"]) < GROWTH_BOUND else "GROWING"
    leak = "no leak" if r["fds_after"] == r["fds_before"] else "LEAK"
    return "\n".join([
        f"soak_extract: {r['n']} PNG files {r['image_size']}x{r['image_size']}, {r['model']} (random init), "
        f"batch {r['batch_size']}, shards of {r['shard_size']}, workers {r['workers'] or 'default'}",
        f"  machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"python {sys.version.split()[0]}; load average at start {r['load_start']:.1f}, at end {r['load_end']:.1f} "
        "(other work shares the CPUs when it is above the CPU count)",
        f"  generate files: {r['generate_s']} s; extract: {r['extract_s']} s = {r['images_per_s']} images/s",
        f"  main process RSS: before {r['rss_before_mb']:.0f} MB, peak {r['peak_rss_main_mb']:.0f} MB; "
        f"peak with DataLoader workers {r['peak_rss_mb']:.0f} MB",
        f"  main RSS after 10% {r['rss_10pct_mb']:.0f} MB, after 25% {r['rss_25pct_mb']:.0f} MB, after 100% "
        f"{r['rss_100pct_mb']:.0f} MB: growth 10%->100% {100 * r['growth_10_to_100']:+.1f}%, first->last quarter "
        f"(medians) {100 * r['growth_quarters']:+.1f}% ({flat}, bound {100 * GROWTH_BOUND:.0f}%)",
        f"  main anonymous RSS (heap, tensors, shared memory) after 10% {r['anon_10pct_mb']:.1f} MB, after 100% "
        f"{r['anon_100pct_mb']:.1f} MB: {r['anon_100pct_mb'] - r['anon_10pct_mb']:+.1f} MB",
        f"  workers' RSS after 10% {r['workers_10pct_mb']:.0f} MB, after 100% {r['workers_100pct_mb']:.0f} MB; "
        f"main + workers growth 10%->100% {100 * r['total_growth_10_to_100']:+.1f}%",
        f"  open fds: before {r['fds_before']}, after {r['fds_after']} ({leak})",
        "  RSS by items done (items:main MB/workers MB): " + ", ".join(
            f"{i}:{m:.0f}/{w:.0f}" for i, m, w in r["rss_per_shard_mb"][:: max(1, len(r["rss_per_shard_mb"]) // 12)]),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="number of images (default 50,000)")
    ap.add_argument("--model", default="effnet:lite0", help="backbone spec (random init) or 'tiny'")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: by data type)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak_extract.txt")
    args = ap.parse_args()
    r = soak(args.n, model=args.model, image_size=args.image_size, batch_size=args.batch_size,
             shard_size=args.shard_size, workers=args.workers)
    text = report(r)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = " ".join(["python benchmarks/soak_extract.py", *sys.argv[1:]])
        args.out.write_text(f"$ {cmd}\n{text}\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
