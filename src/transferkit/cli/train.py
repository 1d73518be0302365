"""Commands that train a backbone: `finetune` and `pretrain`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.app import app, console, is_main_process, log, print_table
from transferkit.cli.options import (
    BackboneArgs,
    DataArgs,
    DataOpt,
    DeviceOpt,
    ImageSizeOpt,
    JsonOpt,
    LabelColumnOpt,
    MaxLengthOpt,
    ModelOpt,
    OnBadInputOpt,
    PoolingOpt,
    PrecisionOpt,
    RandomInitOpt,
    SeedOpt,
    TestOpt,
    TextColumnOpt,
    TrustPickleOpt,
    TrustRemoteCodeOpt,
    ValOpt,
)

OutRunOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, model, metrics history).")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue the unfinished run in --out.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader worker processes for decoding/tokenising.")]


def run_finetune(data: DataArgs, backbone: BackboneArgs, out: Path, resume: bool, opts: dict, as_json: bool) -> None:
    """Load, fine-tune, report: the body of `finetune` and `pretrain`."""
    from transferkit.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(**opts)  # bad options fail before any data or model is loaded
    ds = data.load("required")
    bb = backbone.load(ds.modality)
    result = finetune(bb, ds, out, config, resume=resume, progress=sys.stderr.isatty(), log=log,
                      backbone_options={"pretrained": not backbone.random_init, **backbone.build_options()},
                      device=backbone.device)
    if not is_main_process():  # under torchrun / accelerate launch only the main process reports
        return
    if as_json:
        console.print_json(json.dumps(result.info, default=str))
        return
    rows = [{"split": part, **scores} for part, scores in result.metrics.items()]
    print_table(f"{config.strategy} fine-tuning of {bb.spec} → {out}", rows,
                ["split", *[k for k in (rows[0] if rows else {}) if k != "split"]])
    if result.info.get("stopped"):
        console.print(f"stopped: {result.info['stopped']}", soft_wrap=True)
    console.print(f"trainable parameters {result.trainable_parameters:,} of {result.total_parameters:,} "
                  f"({100 * result.trainable_parameters / max(result.total_parameters, 1):.2f}%), "
                  f"{result.steps} steps, {result.wall_time_s:.1f} s, peak memory {result.peak_memory_mb:.0f} MB, "
                  f"{result.info.get('precision')}; predict with `transferkit predict {out} --data …`",
                  soft_wrap=True)


@app.command("finetune", rich_help_panel="Fine-tuning")
def finetune_cmd(
    data: DataOpt,
    out: OutRunOpt,
    model: ModelOpt = None,
    text_column: TextColumnOpt = "text",
    label_column: LabelColumnOpt = None,
    on_bad_input: OnBadInputOpt = "fail",
    pooling: PoolingOpt = "default",
    image_size: ImageSizeOpt = None,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    random_init: RandomInitOpt = False,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    strategy: Annotated[str, typer.Option(help="head, full, last-k, gradual, lora or contrastive (SetFit-style: "
                                          "the body on same/other-class pairs, then a fitted head).")] = "full",
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Global batch (split over processes and --grad-accum).")] = 32,
    lr: Annotated[str | None, typer.Option(help="Backbone learning rate: a number, or auto (a short search on "
                                           "validation with successive halving). Default: the strategy's own "
                                           "(head/lora 1e-3, last-k 2e-4, gradual 1e-4, full 5e-5, contrastive "
                                           "2e-5).")] = None,
    head_lr: Annotated[float | None, typer.Option(help="Head learning rate (default 10 × lr).")] = None,
    optimizer: Annotated[str, typer.Option(help="adamw or sgd (Nesterov momentum).")] = "adamw",
    weight_decay: Annotated[float, typer.Option(help="Decoupled weight decay (not on biases/norms).")] = 0.01,
    layer_decay: Annotated[float, typer.Option(help="Layer-wise rate decay per block from the top (1 = off).")] = 1.0,
    schedule: Annotated[str, typer.Option(help="cosine (with warm-up), onecycle or constant.")] = "cosine",
    warmup: Annotated[float, typer.Option(help="Warm-up fraction of all steps.")] = 0.1,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of the cross-entropy.")] = 0.0,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    clip: Annotated[float | None, typer.Option(help="Max gradient norm (0 = off).")] = 1.0,
    grad_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in backward (less memory).")] = False,
    bn_train: Annotated[bool | None, typer.Option(
        "--bn-train/--bn-frozen", help="Update batch-norm statistics from batches, or keep them (default: keep "
        "pretrained ones; update when --random-init).")] = None,
    patience: Annotated[int | None, typer.Option(help="Early stop after this many epochs without gain.")] = None,
    last_k: Annotated[int, typer.Option(help="Blocks trained by --strategy last-k.")] = 2,
    unfreeze_every: Annotated[int, typer.Option(help="Epochs between unfreezing steps (gradual).")] = 1,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 16.0,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.0,
    lora_targets: Annotated[str, typer.Option(help="auto, all-linear, or comma-separated module names.")] = "auto",
    class_weights: Annotated[str | None, typer.Option(help="balanced: weight classes by inverse frequency.")] = None,
    augment: Annotated[str, typer.Option(help="Image training items: none, light (random resized crop + flip), "
                                         "strong (+ TrivialAugment) or auto (light for images); seeded, so "
                                         "--resume stays exact.")] = "none",
    val: ValOpt = 0.15,
    test: TestOpt = 0.15,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Optimizer steps between resume points.")] = 50,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a backbone (or only a new head) on labelled data; resumable, data-parallel under accelerate."""
    from transferkit.finetune.config import DEFAULT_LR

    lr = lr if lr is not None else DEFAULT_LR.get(strategy, 1e-4)  # an unknown strategy fails in FinetuneConfig
    opts = dict(strategy=strategy, epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, optimizer=optimizer,
                weight_decay=weight_decay, layer_decay=layer_decay, schedule=schedule, warmup=warmup,
                label_smoothing=label_smoothing, grad_accum=grad_accum, clip=clip or None, precision=precision,
                grad_checkpointing=grad_checkpointing, bn_train=bn_train, patience=patience, last_k=last_k,
                unfreeze_every=unfreeze_every, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                lora_targets=lora_targets, class_weights=class_weights, val=val, test=test, seed=seed,
                num_workers=workers, checkpoint_every=checkpoint_every, max_steps=max_steps, augment=augment)
    run_finetune(DataArgs(data, text_column, label_column, on_bad_input),
                 BackboneArgs(model, pooling, image_size, max_length, device, precision, random_init, trust_pickle,
                              trust_remote_code), out, resume, opts, as_json)


@app.command(rich_help_panel="Fine-tuning")
def pretrain(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; use it later as --model run:OUT.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Architecture spec, trained from random weights.")],
    text_column: TextColumnOpt = "text",
    label_column: LabelColumnOpt = None,
    on_bad_input: OnBadInputOpt = "fail",
    pooling: PoolingOpt = "default",
    image_size: ImageSizeOpt = None,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Global batch.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW, warm-up + cosine).")] = 1e-3,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 0,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a backbone from scratch on a source task (e.g. bundled:mnist), to transfer later with run:OUT."""
    import torch

    torch.manual_seed(seed)  # the random initial weights
    opts = dict(strategy="full", epochs=epochs, batch_size=batch_size, lr=lr, head_lr=lr, seed=seed,
                num_workers=workers, val=0.1, test=0.1, precision=precision)
    run_finetune(DataArgs(data, text_column, label_column, on_bad_input),
                 BackboneArgs(model, pooling, image_size, max_length, device, precision, True, trust_pickle,
                              trust_remote_code), out, resume, opts, as_json)
