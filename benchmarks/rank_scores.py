"""Benchmark: transferability scores vs fitting the probe, on the same cached features of real candidates.

For each candidate backbone (images: EfficientNet-Lite0/Lite2, some of their blocks, their random-init
twins, on MNIST; text: MiniLM-L6, some of its layers and its random-init twin, on VADER tweets) the
features are extracted once (`transferkit.select.rank`), then timed on them: each score (LogME, LEEP,
NCE, H-score; LEEP/NCE include turning features into source probabilities) and the foundation probe
(`fit_and_score("logreg", …)`: C chosen on validation, scored on test). The ratio is probe time / LogME
time. Kendall τ between each score and the probe's test accuracy says whether the cheap score ranks the
candidates like the expensive probe. Wall times are the best of ``--repeats`` runs under ``--threads``
BLAS/OpenMP threads for both sides (default 1, as in probe_fit.py).

Run: ``python benchmarks/rank_scores.py``; writes benchmarks/results/rank_scores.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

try:
    import transferkit.select  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferkit import datasets  # noqa: E402
from transferkit.backbones import Backbone, load_backbone  # noqa: E402
from transferkit.data import Dataset, stratified_split  # noqa: E402
from transferkit.features import FeatureSet, FeatureStore  # noqa: E402
from transferkit.heads.probe import fit_and_score  # noqa: E402
from transferkit.select import METRICS, hscore, leep, logme, nce, rank, source_probabilities  # noqa: E402
from transferkit.select.rank import stratified_sample  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "rank_scores.json"


def random_init(spec: str, **kw: Any) -> Backbone:
    """`spec` with random weights drawn from a fixed seed (the same weights on every run)."""
    torch.manual_seed(0)
    return load_backbone(spec, pretrained=False, **kw)


def image_task(n: int, size: int) -> tuple[Dataset, list[Backbone]]:
    """MNIST subset and the image candidates (all offline)."""
    mnist = datasets.load("mnist")
    data = mnist.subset(stratified_sample(mnist.labels, n, seed=0), f"mnist-{n}")
    cands = []
    for name in ("lite0", "lite2"):
        cands += [load_backbone(f"effnet:{name}", image_size=size),
                  random_init(f"effnet:{name}", image_size=size)]
    cands += [load_backbone("effnet:lite0", pooling=f"layer:_blocks.{k}", image_size=size) for k in (2, 5, 8, 11)]
    cands += [load_backbone("effnet:lite2", pooling=f"layer:_blocks.{k}", image_size=size) for k in (4, 10)]
    return data, cands


def text_task(n: int) -> tuple[Dataset, list[Backbone]]:
    """VADER tweets subset and the text candidates (all offline)."""
    tweets = datasets.load("sentiment-tweets")
    data = tweets.subset(stratified_sample(tweets.labels, n, seed=0), f"tweets-{n}")
    spec = "st:all-MiniLM-L6-v2"
    cands = [load_backbone(spec), random_init(spec)]
    cands += [load_backbone(spec, pooling=f"layer:encoder.layer.{k}") for k in (0, 1, 2, 3, 4)]
    return data, cands


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """(result, fastest wall time) over `repeats` runs."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, min(times)


def measure(data: Dataset, cands: list[Backbone], store: FeatureStore, repeats: int) -> dict[str, Any]:
    """Extract + rank, then time every score and the probe on each candidate's features; τ per score."""
    lookup = {(b.spec + ("" if b.pretrained else " (random init)"), b.pooling): b for b in cands}
    rows = rank(cands, data, metric="all", store=store)
    out = []
    for r in rows:
        bb = lookup[(r["model"], r["pooling"])]
        fs = FeatureSet.open(r["features"])
        X, y = fs.features(), fs.labels()
        timing = {}
        _, timing["logme_s"] = best_time(lambda X=X, y=y: logme(X, y), repeats)
        _, timing["hscore_s"] = best_time(lambda X=X, y=y: hscore(X, y), repeats)
        if r["leep"] is not None:
            _, timing["leep_s"] = best_time(lambda X=X, y=y, bb=bb: leep(source_probabilities(bb, X), y), repeats)
            _, timing["nce_s"] = best_time(lambda X=X, y=y, bb=bb: nce(source_probabilities(bb, X), y), repeats)
        split = stratified_split(y, val=0.15, test=0.3, seed=0)
        (probe_rows, _), probe_s = best_time(
            lambda X=X, y=y, split=split: fit_and_score("logreg", X, y, split, "classification", seed=0), repeats)
        out.append({
            "model": r["model"], "pooling": r["pooling"], "feature_dim": r["feature_dim"], "rank": r["rank"],
            **{m: r[m] for m in METRICS}, "accuracy": probe_rows[0]["accuracy"], "extract_s": r["extract_s"],
            **{k: round(v, 4) for k, v in timing.items()}, "probe_s": round(probe_s, 4),
            "probe_over_logme": round(probe_s / timing["logme_s"], 1),
        })
    taus = {}
    for m in METRICS:
        have = [r for r in out if r[m] is not None]
        if len(have) >= 3:
            stat = kendalltau([r[m] for r in have], [r["accuracy"] for r in have])
            taus[m] = {"tau": round(float(stat.statistic), 3), "p": round(float(stat.pvalue), 3),
                       "candidates": len(have)}
    return {"data": data.name, "n_items": len(data), "rows": out, "kendall_tau": taus}


def show(name: str, result: dict[str, Any]) -> None:
    """Print one task's table and its τ line."""
    print(f"\n{name}: {result['data']} ({result['n_items']} items; probe = logreg, 55/15/30 split)")
    head = (f"{'candidate':<36}{'pooling':<24}{'acc':>6}{'logme':>8}{'leep':>8}{'hscore':>8}{'extract s':>10}"
            f"{'logme s':>9}{'leep s':>8}{'hscore s':>9}{'probe s':>9}{'probe/logme':>12}")
    print(head)
    for r in result["rows"]:
        leep_v = f"{r['leep']:>8.3f}" if r["leep"] is not None else f"{'—':>8}"
        leep_s = f"{r['leep_s']:>8.3f}" if "leep_s" in r else f"{'—':>8}"
        print(f"{r['model']:<36}{r['pooling']:<24}{r['accuracy']:>6.3f}{r['logme']:>8.3f}{leep_v}{r['hscore']:>8.3f}"
              f"{r['extract_s']:>10.2f}{r['logme_s']:>9.3f}{leep_s}{r['hscore_s']:>9.3f}{r['probe_s']:>9.3f}"
              f"{r['probe_over_logme']:>11.1f}x")
    taus = ", ".join(f"{m} {t['tau']:+.3f} (p={t['p']:.2f}, n={t['candidates']})"
                     for m, t in result["kendall_tau"].items())
    print(f"Kendall τ (score vs probe test accuracy): {taus}")


def main() -> None:
    """Measure both tasks, print the tables and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=500)
    parser.add_argument("--n-text", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--store", type=Path, default=None, help="feature store (default: a fresh temp folder)")
    args = parser.parse_args()
    store = FeatureStore(args.store or tempfile.mkdtemp(prefix="rank-scores-"))
    results = {}
    with threadpool_limits(limits=args.threads):
        results["image"] = measure(*image_task(args.n_images, args.image_size), store, args.repeats)
        show("images", results["image"])
        if not args.skip_text:
            results["text"] = measure(*text_task(args.n_text), store, args.repeats)
            show("text", results["text"])
    env = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
           "scikit-learn": sklearn.__version__, "threads": args.threads, "repeats": args.repeats,
           "image_size": args.image_size, "machine": platform.machine(), "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "rank_scores", "env": env, **results}, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
