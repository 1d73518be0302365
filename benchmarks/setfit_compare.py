"""Benchmark: `finetune --strategy contrastive` (ours, SetFit-style) against the real `setfit` package, same data,
same encoder (the bundled all-MiniLM-L6-v2), same run, with the TF-IDF baseline beside them.

Per task and size, a class-stratified sample of up to 1,000 + 2 x size x classes items, split (stratified) into
`size` training and `size` validation items per class and a test set of the rest (up to 1,000 items, so that
the few-shot comparison is not decided by a handful of test items). Both tools train on the same training
items and are scored on the same test items:
- setfit: `SetFitModel.from_pretrained` + `Trainer` (batch 16, 1 epoch, body lr 2e-5, logistic-regression head)
  with `num_iterations=20`, its classic pair budget of 2 x 20 pairs per training item; it sees the training items
  only (it has no use for validation items);
- ours: `finetune(strategy="contrastive")` with the settings `fit` gives it (lr 2e-5, 20 epochs of one pair per
  item, i.e. half SetFit's pairs, batch 16); the validation items choose the epoch whose fitted head is kept;
- baseline:tfidf on the same split (C chosen on validation).
Wall times are each tool's training + prediction in this process, model loading included.

Run: ``python benchmarks/setfit_compare.py [--tasks ...] [--sizes 8,32]`` (setfit is a benchmark-only
dependency: ``pip install setfit``) — writes benchmarks/results/setfit_compare.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

try:
    import transferkit  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from fit_tasks import HELDOUT, TEXT, load_task

from transferkit.backbones import load_backbone
from transferkit.backbones.files import st_bundled_folder
from transferkit.baselines import fit_baseline
from transferkit.data import stratified_sample, stratified_split
from transferkit.finetune import FinetuneConfig, finetune

TEST_ITEMS = 1000


def ours(ds, split, fractions: tuple[float, float], tmp: Path, seed: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    cfg = FinetuneConfig(strategy="contrastive", lr=2e-5, epochs=20, patience=None, batch_size=16, val=fractions[0],
                         test=fractions[1], seed=seed)
    r = finetune(load_backbone("st:all-MiniLM-L6-v2"), ds, tmp / "ours", cfg, progress=False)
    assert r.info["data"]["test"] == len(split.test) and r.info["data"]["train"] == len(split.train)
    return r.metrics["test"]["accuracy"], time.perf_counter() - t0, r.steps


def setfit_run(ds, split, seed: int, tmp: Path) -> tuple[float, float, int]:
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(str(st_bundled_folder("all-MiniLM-L6-v2")))
    train = HFDataset.from_dict({"text": [ds.items[i] for i in split.train],
                                 "label": [int(ds.labels[i]) for i in split.train]})
    args = TrainingArguments(batch_size=16, num_epochs=1, num_iterations=20, body_learning_rate=2e-5, seed=seed,
                             report_to="none", show_progress_bar=False, output_dir=str(tmp / "setfit"))
    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    steps = -(-2 * 20 * len(split.train) // 16)  # num_iterations=20: 2 x 20 pairs per training item, batch 16
    pred = np.asarray(model.predict([ds.items[i] for i in split.test]))
    acc = float((pred.astype(np.int64) == ds.labels[split.test]).mean())
    return acc, time.perf_counter() - t0, steps


def one(task: str, size: str, seed: int) -> dict:
    full = load_task(task)
    k, per = len(full.class_names), int(size)
    n = min(len(full), TEST_ITEMS + 2 * per * k)
    ds = full.subset(stratified_sample(full.labels, n, seed=seed)) if n < len(full) else full
    fractions = (per * k / n, 1 - 2 * per * k / n)
    split = stratified_split(ds.labels, val=fractions[0], test=fractions[1], seed=seed)
    base = fit_baseline("tfidf", ds, split, seed=seed)
    base_acc = float((np.asarray(base.predict([ds.items[i] for i in split.test])) == ds.labels[split.test]).mean())
    tmp = Path(tempfile.mkdtemp())
    try:
        acc_o, t_o, steps_o = ours(ds, split, fractions, tmp, seed)
        acc_s, t_s, steps_s = setfit_run(ds, split, seed, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"task": task, "size": size, "n": n, "classes": len(ds.class_names), "train": len(split.train),
            "n_test": len(split.test), "ours_acc": acc_o, "setfit_acc": acc_s, "baseline_acc": base_acc,
            "ours_s": round(t_o, 1), "setfit_s": round(t_s, 1), "ours_steps": steps_o, "setfit_steps": steps_s,
            "speed_ratio": round(t_s / t_o, 3), "heldout": task in HELDOUT}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(TEXT + HELDOUT))
    ap.add_argument("--sizes", default="8,32")
    ap.add_argument("--binary-only-above", type=int, default=8,
                    help="sizes above this run on two-class tasks only (CPU time of the 6-class ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/setfit_compare.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import setfit
    import torch

    rows = []
    for size in args.sizes.split(","):
        for task in args.tasks.split(","):
            if int(size) > args.binary_only_above and len(load_task(task).class_names) > 2:
                continue
            r = one(task, size, args.seed)
            rows.append(r)
            print(f"{task:20s} {size:>3s} train {r['train']:4d} test {r['n_test']:4d}: ours {r['ours_acc']:.3f} "
                  f"({r['ours_s']:.0f} s, {r['ours_steps']} steps)  setfit {r['setfit_acc']:.3f} "
                  f"({r['setfit_s']:.0f} s, {r['setfit_steps']} steps)  tfidf {r['baseline_acc']:.3f}", flush=True)
            doc = {"benchmark": "setfit_compare", "machine": {"cpu": platform.processor() or platform.machine(),
                                                               "threads": torch.get_num_threads()},
                   "versions": {"setfit": setfit.__version__, "torch": torch.__version__},
                   "args": vars(args), "rows": rows,
                   "summary": {"mean_ours_minus_setfit": float(np.mean([r["ours_acc"] - r["setfit_acc"]
                                                                        for r in rows])),
                               "ours_ge_setfit": int(sum(r["ours_acc"] >= r["setfit_acc"] for r in rows)),
                               "rows": len(rows),
                               "total_s": {"ours": float(sum(r["ours_s"] for r in rows)),
                                           "setfit": float(sum(r["setfit_s"] for r in rows))}}}
            Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    s = doc["summary"]
    print(f"ours >= setfit on {s['ours_ge_setfit']}/{s['rows']} rows; mean ours - setfit "
          f"{s['mean_ours_minus_setfit']:+.4f}; time ours {s['total_s']['ours']:.0f} s vs setfit "
          f"{s['total_s']['setfit']:.0f} s")


if __name__ == "__main__":
    main()
