"""Benchmark: training throughput of our fine-tuning loop vs a plain Hugging Face `Trainer`, and peak RSS of
full fine-tuning vs LoRA.

Same model (all-MiniLM-L6-v2, the bundled copy, mean pooling + linear head), same real data (tweets),
same global batch, fp32, AdamW, same number of optimizer steps, no evaluation and no checkpoints on either
side. Each side runs in a fresh subprocess with the same torch thread count; the time is the wall time
of the whole `finetune(...)` / `Trainer.train()` call (ours includes its feature-standardisation pass).
Peak RSS is `ru_maxrss` of a fresh process that trains `--rss-steps` steps with `full` or `lora`.

Run: ``python benchmarks/finetune_step.py [--steps 40] [--batch 32] [--threads 2]``;
writes benchmarks/results/finetune_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "st:all-MiniLM-L6-v2"


def _data(n: int):
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("sentiment-tweets")
    return ds.subset(stratified_sample(ds.labels, n, seed=0))


def run_ours(steps: int, batch: int, strategy: str = "full") -> dict:
    from transferkit.backbones import load_backbone
    from transferkit.finetune import FinetuneConfig, finetune

    data = _data(batch * steps)
    bb = load_backbone(MODEL)
    cfg = FinetuneConfig(strategy=strategy, epochs=1, batch_size=batch, lr=5e-5, val=0.0, test=0.0,
                         warmup=0.0, clip=None, checkpoint_every=10**9, max_steps=steps, lora_r=8)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        r = finetune(bb, data, Path(out) / "run", cfg, progress=False)
        wall = time.perf_counter() - t
    return {"wall_s": wall, "steps": r.steps, "samples_per_s": r.steps * batch / wall,
            "trainable": r.trainable_parameters,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_trainer(steps: int, batch: int) -> dict:
    import torch
    from torch import nn
    from transformers import Trainer, TrainingArguments

    from transferkit.backbones import load_backbone

    data = _data(batch * steps)
    bb = load_backbone(MODEL)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = bb.model
            self.head = nn.Linear(bb.feature_dim, 2)

        def forward(self, input_ids, attention_mask, labels=None, **kw):
            batch_in = {"input_ids": input_ids, "attention_mask": attention_mask, **kw}
            logits = self.head(bb.encode(self.backbone, batch_in))
            loss = nn.functional.cross_entropy(logits, labels)
            return {"loss": loss, "logits": logits}

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(data)

        def __getitem__(self, i: int) -> dict:
            return {"text": data.items[i], "label": int(data.labels[i])}

    def collate(rows: list[dict]) -> dict:
        out = dict(bb.collate([r["text"] for r in rows]))
        out["labels"] = torch.tensor([r["label"] for r in rows])
        return out

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=5e-5,
                                 warmup_steps=0, max_grad_norm=0.0, save_strategy="no", eval_strategy="no",
                                 logging_steps=10**6, report_to=[], use_cpu=True, dataloader_num_workers=0,
                                 remove_unused_columns=False, disable_tqdm=True, seed=0)
        trainer = Trainer(model=Classifier(), args=args, train_dataset=Items(), data_collator=collate)
        t = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t
    return {"wall_s": wall, "steps": steps, "samples_per_s": steps * batch / wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(kind: str, steps: int, batch: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--child", kind, "--steps", str(steps), "--batch", str(batch),
           "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-steps", type=int, default=10)
    ap.add_argument("--child", choices=["ours", "trainer", "ours-lora"])
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        fn = {"ours": lambda: run_ours(args.steps, args.batch), "trainer": lambda: run_trainer(args.steps, args.batch),
              "ours-lora": lambda: run_ours(args.steps, args.batch, "lora")}[args.child]
        print(json.dumps(fn()))
        return

    ours = _child("ours", args.steps, args.batch, args.threads)
    trainer = _child("trainer", args.steps, args.batch, args.threads)
    full_rss = _child("ours", args.rss_steps, args.batch, args.threads)
    lora_rss = _child("ours-lora", args.rss_steps, args.batch, args.threads)
    result = {
        "model": MODEL, "batch": args.batch, "steps": args.steps, "threads": args.threads, "precision": "fp32",
        "ours": ours, "hf_trainer": trainer,
        "throughput_ratio_ours_over_trainer": ours["samples_per_s"] / trainer["samples_per_s"],
        "peak_rss_full_mb": full_rss["peak_rss_mb"], "peak_rss_lora_mb": lora_rss["peak_rss_mb"],
        "trainable_full": full_rss["trainable"], "trainable_lora": lora_rss["trainable"],
        "rss_ratio_full_over_lora": full_rss["peak_rss_mb"] / lora_rss["peak_rss_mb"],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
    }
    print(f"training throughput, {MODEL}, batch {args.batch}, {args.steps} steps, fp32, {args.threads} threads:")
    print(f"  ours        {ours['samples_per_s']:7.1f} samples/s ({ours['wall_s']:.1f} s)")
    print(f"  HF Trainer  {trainer['samples_per_s']:7.1f} samples/s ({trainer['wall_s']:.1f} s)")
    print(f"  ratio ours/Trainer: {result['throughput_ratio_ours_over_trainer']:.2f}×")
    print(f"peak RSS over {args.rss_steps} steps: full {full_rss['peak_rss_mb']:.0f} MB "
          f"({full_rss['trainable']:,} trainable), lora {lora_rss['peak_rss_mb']:.0f} MB "
          f"({lora_rss['trainable']:,} trainable): full/lora = {result['rss_ratio_full_over_lora']:.2f}×")
    out = Path(__file__).parent / "results" / "finetune_step.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
