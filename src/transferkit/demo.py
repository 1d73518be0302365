"""`transferkit demo`: the feature-extraction route on bundled real data, next to raw-input baselines.

Two tasks, no network: VADER tweet sentiment with the all-MiniLM-L6-v2 encoder (baseline: TF-IDF word and
character n-grams + a linear model) and MNIST digits with ImageNet EfficientNet-Lite0 at 112 px (baseline: the
logistic-regression probe on raw pixels) — the baselines of `transferkit.baselines`, as compare and fit run
them. Every head runs on the features; a baseline that wins is reported as winning. Then `compare` runs the
routes side by side on the tweets (the baseline, probe heads, fine-tuning) and writes a self-contained HTML
report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from transferkit import datasets
from transferkit.backbones import load_backbone
from transferkit.baselines import fit_baseline
from transferkit.data import Dataset, stratified_sample, stratified_split
from transferkit.features import extract_features
from transferkit.heads.metrics import score_all
from transferkit.heads.probe import fit_and_score


@dataclass(frozen=True)
class DemoTask:
    """One demo task: a bundled data set, a backbone, how many items, and the raw-input baseline."""

    name: str
    dataset: str
    backbone: str
    n_items: int
    baseline: str
    image_size: int | None = None


TASKS = [
    DemoTask("tweet sentiment", "sentiment-tweets", "st:all-MiniLM-L6-v2", 3432, "tfidf"),
    DemoTask("MNIST digits", "mnist", "effnet:lite0", 2000, "pixels", image_size=112),
]


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """A class-stratified subset of `n` items (the whole set when n ≥ its size)."""
    return ds if n >= len(ds) else ds.subset(stratified_sample(ds.labels, n, seed=seed), name=f"{ds.name}[{n}]")


def run_task(task: DemoTask, *, quick: bool = False, seed: int = 0, progress: bool = False,
             log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Extract features for one task, fit every head and the baseline; one row each (test-set metrics)."""
    n = min(task.n_items, 600) if quick else task.n_items
    ds = _subset(datasets.load(task.dataset), n, seed)
    split = stratified_split(ds.labels, seed=seed)
    log(f"{task.name}: {len(ds)} items from {task.dataset}, {task.backbone}")
    backbone = load_backbone(task.backbone, image_size=task.image_size)
    t0 = time.perf_counter()
    fs = extract_features(backbone, ds, progress=progress)
    extract_s = time.perf_counter() - t0  # this run's time: near zero when the features were cached
    X, y = fs.features(), ds.labels
    rows, best = fit_and_score("auto", X, y, split, "classification", seed)
    label = f"{task.backbone} features"
    out = [{"task": task.name, "method": label, **r, "extract_s": round(extract_s, 2),
            "best_by_val": r["head"] == best.name} for r in rows]
    fitted = fit_baseline(task.baseline, ds, split, seed)  # the same baseline compare and fit run
    pred = fitted.predict([ds.items[i] for i in split.test])
    base = {"head": fitted.chosen.split()[0], "chosen": fitted.chosen, "val_score": fitted.val_score,
            **score_all("classification", y[split.test], pred), "fit_s": fitted.fit_s}
    method = "TF-IDF baseline" if task.baseline == "tfidf" else "raw-pixel baseline"
    out.append({"task": task.name, "method": method, **base, "extract_s": 0.0, "best_by_val": False})
    return out


def run_demo(*, quick: bool = False, seed: int = 0, progress: bool = False,
             log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Every demo task; rows with task, method, head, chosen hyperparameters, accuracy, macro-F1, times."""
    rows: list[dict] = []
    for task in TASKS:
        rows += run_task(task, quick=quick, seed=seed, progress=progress, log=log)
    for r in rows:
        r["fit_s"] = round(float(r["fit_s"]), 2)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """One line per task: does the best-by-validation probe beat the raw-input baseline on test?"""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        probe = next(r for r in rows if r["task"] == task and r.get("best_by_val"))
        base = next(r for r in rows if r["task"] == task and "baseline" in r["method"])
        diff = probe["accuracy"] - base["accuracy"]
        who = "pretrained features win" if diff > 0 else "the baseline wins" if diff < 0 else "a tie"
        lines.append(f"{task}: {probe['head']} on {probe['method']} {probe['accuracy']:.3f} vs "
                     f"{base['method']} {base['accuracy']:.3f} → {who} ({diff:+.3f})")
    return lines


def compare_plan(quick: bool, seed: int = 0) -> tuple[object, str, dict]:
    """What the demo compares on the tweets: (settings, strategies, fine-tuning options).

    The data are the demo's own tweet subset (600 quick, all 3,432 otherwise), so the probes read the features
    the demo just cached; fine-tuning is kept short (1 epoch, at most 40 steps; 6 steps in the quick smoke run)."""
    from transferkit.report import CompareSettings

    task = TASKS[0]
    settings = CompareSettings(data=f"bundled:{task.dataset}", model=task.backbone, seed=seed,
                               sample=min(task.n_items, 600) if quick else None)
    if quick:
        return settings, "baseline:tfidf,probe:logreg,finetune:head", {"epochs": 1, "max_steps": 6}
    return (settings, "baseline:tfidf,probe:logreg,probe:svm,finetune:head,finetune:lora",
            {"epochs": 1, "lr": 5e-4, "max_steps": 40})


def run_demo_compare(out, *, quick: bool = False, seed: int = 0, progress: bool = False,
                     log: Callable[[str], None] = lambda m: None) -> tuple[dict, object]:
    """Run the demo's comparison into `out` (continuing a finished one there) and render its report.

    Returns the results document and the path of index.html."""
    from pathlib import Path

    from transferkit.report import publish_best, render_report, run_compare

    settings, strategies, options = compare_plan(quick, seed)
    out = Path(out)
    doc = run_compare(settings, strategies, out, resume=(out / "results.json").exists(), finetune_options=options,
                      progress=progress, log=log)
    publish_best(doc, out)
    return doc, render_report(doc, out, max_points=300 if quick else 1000)
