"""The `transferkit` command. Thin: it parses, calls the library, prints. Errors are one line, exit code 2."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from transferkit.errors import Interrupted, TransferkitError

app = typer.Typer(
    name="transferkit",
    help="Transfer learning with pretrained models: extract features, probe them, compare routes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Backbone spec: effnet:lite0, timm:NAME, tv:NAME, hf:ID_OR_PATH, st:ID_OR_PATH. "
    "Default: effnet:lite0 for images, st:all-MiniLM-L6-v2 for text.")]
DataOpt = Annotated[str, typer.Option(
    "--data", "-d", help="Image folder (one subfolder per class), table (.csv/.tsv/.parquet/.jsonl) or bundled:NAME.")]

TrustPickleOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Accept pickle-based weight files (.pt/.pth/.bin/.ckpt; read with weights_only): "
    "unpickling can execute code, so only for files from a source you trust. Default: safetensors only.")]


def _print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in columns])
    console.print(table)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="Folder for results.json (default: print only).")] = None,
    quick: Annotated[bool, typer.Option(help="Smaller subsets: a short smoke run on 600 items per task.")] = False,
) -> None:
    """Run feature extraction + every head on bundled real data (text and images), next to raw-input baselines;
    then compare probes with fine-tuning on the tweets and write an HTML report."""
    from transferkit.demo import run_demo

    rows = run_demo(quick=quick, progress=sys.stderr.isatty(), log=lambda m: err_console.print(f"[dim]{m}[/dim]"))
    _print_table("transferkit demo: test-set results (honest: baselines included)", rows,
                 ["task", "method", "head", "chosen", "accuracy", "macro_f1", "fit_s", "extract_s"])
    from transferkit.demo import verdicts

    for line in verdicts(rows):
        console.print(line)
    if out is not None:
        from transferkit.io import write_json

        write_json(Path(out) / "results.json", rows)
        console.print(f"results written to {Path(out) / 'results.json'}")
    from transferkit.demo import run_demo_compare
    from transferkit.features import default_cache_dir

    folder = Path(out) / "compare" if out is not None else default_cache_dir() / f"demo-report{'-quick' * quick}"
    _log(f"compare: the routes side by side on the tweets → {folder}")
    doc, page = run_demo_compare(folder, quick=quick, progress=sys.stderr.isatty(), log=_log)
    _print_compare(doc, page, 0.01)


@app.command()
def models() -> None:
    """List backbone sources, the pretrained backbones usable offline here, and the bundled data sets."""
    from transferkit.backbones import offline_backbones, sources
    from transferkit.datasets import available

    _print_table("backbone sources", sources(), ["prefix", "example", "installed", "description"])
    _print_table("pretrained backbones available offline", offline_backbones(),
                 ["spec", "modality", "dim", "available", "package"])
    rows = [{"name": d.name, "modality": d.modality, "size": d.size, "classes": len(d.classes),
             "available": d.available, "source": d.source} for d in available()]
    _print_table("bundled data sets (use as --data bundled:NAME)", rows,
                 ["name", "modality", "size", "classes", "available", "source"])


@app.command()
def extract(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature folder to write (resumable).")],
    model: ModelOpt = None,
    text_column: Annotated[str, typer.Option(help="Text column of a table.")] = "text",
    label_column: Annotated[str | None, typer.Option(help="Label column of a table (omit: unlabelled).")] = None,
    pooling: Annotated[str, typer.Option(help="default, mean, cls, pooler, or layer:NAME.")] = "default",
    image_size: Annotated[int | None, typer.Option(help="Input resolution for image models.")] = None,
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 64,
    shard_size: Annotated[int, typer.Option(help="Items per shard on disk (the unit of resumption).")] = 1024,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16 (auto: bf16 only on native hardware).")] = "auto",
    optimize: Annotated[str, typer.Option(help="auto, none, jit or compile: graph capture for CNNs on CPU.")] = "auto",
    workers: Annotated[int | None, typer.Option(help="DataLoader workers (default: by data type).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, …")] = "cpu",
    random_init: Annotated[bool, typer.Option(help="Architecture with random weights (speed tests).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace other features already in --out.")] = False,
    on_bad_input: Annotated[str, typer.Option(help="fail (default): stop at the first unreadable image or empty "
                                              "row, naming it; skip: leave such items out and list them.")] = "fail",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow Hugging Face repo code to run.")] = False,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Extract features of a data set with a frozen backbone into a resumable feature folder."""
    from transferkit.backbones import DEFAULT_IMAGE, DEFAULT_TEXT, load_backbone
    from transferkit.data import load_data
    from transferkit.features import extract_features

    kw = {"text_column": text_column, "label_column": label_column} if _is_table(data) else {}
    if not data.startswith("bundled:"):
        kw["on_bad_input"] = on_bad_input
    ds = load_data(data, **kw)
    skipped = ds.meta.get("skipped") or []
    if skipped:
        shown = "; ".join(f"{s['item']} ({s['reason'].split(':')[0]})" for s in skipped[:3])
        err_console.print(f"skipped {len(skipped)} bad item(s), listed in {out}/meta.json: {shown}"
                          + (" …" if len(skipped) > 3 else ""), highlight=False)
    spec = model or (DEFAULT_TEXT if ds.modality == "text" else DEFAULT_IMAGE)
    backbone = load_backbone(spec, pretrained=not random_init, pooling=pooling, image_size=image_size, device=device,
                             trust_remote_code=trust_remote_code, trust_pickle=trust_pickle)
    written: list[int] = []
    t0 = time.perf_counter()
    fs = extract_features(backbone, ds, out=out, batch_size=batch_size, shard_size=shard_size, precision=precision,
                          optimize=optimize, num_workers=workers, progress=True, overwrite=overwrite,
                          on_shard=written.append)
    how = (f"{len(written)}/{fs.meta['n_shards']} shards computed in {time.perf_counter() - t0:.1f} s" if written
           else "already complete: no model work")
    console.print(f"{fs.n_items} items × {fs.feature_dim} features from {spec} → {out} ({how})")


def _is_table(data: str) -> bool:
    from transferkit.data.loaders import TABLE_EXTENSIONS

    return Path(data).suffix.lower() in TABLE_EXTENSIONS


@app.command()
def probe(
    features: Annotated[Path, typer.Argument(help="Feature folder written by `transferkit extract`.")],
    head: Annotated[str, typer.Option(help="logreg, svm, rbf-svm, ridge, knn or auto.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the train/val/test split and the heads.")] = 0,
    val: Annotated[float, typer.Option(help="Validation fraction (hyperparameters are chosen on it).")] = 0.15,
    test: Annotated[float, typer.Option(help="Test fraction (reported).")] = 0.15,
    save: Annotated[Path | None, typer.Option(help="Folder to save the fitted head (safetensors + JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fit a head on cached features, choosing its hyperparameters on a validation split; report test metrics."""
    from transferkit.heads.probe import probe_features

    report = probe_features(features, head=head, seed=seed, val=val, test=test, save=save)
    if as_json:
        console.print_json(json.dumps(report))
        return
    _print_table(f"probe on {features} ({report['n_train']} train / {report['n_val']} val / {report['n_test']} test)",
                 report["heads"], ["head", "chosen", "val_score", *report["metric_names"], "fit_s"])
    console.print(f"best by validation: {report['best']}")


@app.command("rank")
def rank_models(
    models: Annotated[str, typer.Option("--models", help="Comma-separated backbone specs, e.g. "
                                        "effnet:lite0,effnet:lite2,timm:resnet18.")],
    data: DataOpt,
    text_column: Annotated[str, typer.Option(help="Text column of a table.")] = "text",
    label_column: Annotated[str, typer.Option(help="Label column of a table.")] = "label",
    metric: Annotated[str, typer.Option(help="logme, leep, nce, hscore, or all (ranked by LogME).")] = "logme",
    sample: Annotated[int | None, typer.Option(help="Score on a stratified subset of this many items.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    image_size: Annotated[int | None, typer.Option(help="Input resolution for image models.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, …")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Rank pretrained backbones for your labelled data by transferability scores, without training."""
    from transferkit.data import load_data
    from transferkit.select import METRICS, metrics_for, rank

    metrics_for(metric)  # a bad metric fails before any data or model is loaded
    kw = {"text_column": text_column, "label_column": label_column} if _is_table(data) else {}
    specs = [m.strip() for m in models.split(",") if m.strip()]
    rows = rank(specs, load_data(data, **kw), metric=metric, sample=sample, seed=seed, image_size=image_size,
                device=device, trust_pickle=trust_pickle, progress=sys.stderr.isatty(),
                log=lambda m: err_console.print(f"[dim]{m}[/dim]"))
    if as_json:
        console.print_json(json.dumps(rows))
        return
    scores = [m for m in METRICS if m in rows[0]]
    _print_table(f"transferability on {rows[0]['n_items']} items (higher is better; ranked by "
                 f"{'logme' if metric == 'all' else metric})", rows,
                 ["rank", "model", "pooling", *scores, "extract_s", "score_s", "note"])
    best = next((r for r in rows if r["rank"] == 1), None)
    if best is not None:
        console.print(f"best: {best['model']} — its features are cached; probe them with "
                      f"`transferkit probe {best['features']}`", soft_wrap=True)


def _load_labelled(data: str, text_column: str, label_column: str | None, on_bad_input: str = "fail") -> object:
    """A data set from a folder, a table or bundled:NAME, with the table's text/label columns."""
    from transferkit.data import load_data

    kw: dict = {"text_column": text_column, "label_column": label_column} if _is_table(data) else {}
    if not data.startswith("bundled:"):
        kw["on_bad_input"] = on_bad_input
    return load_data(data, **kw)


def _log(message: str) -> None:
    err_console.print(f"[dim]{message}[/dim]", highlight=False)


def _finetune_command(data: str, out: Path, model: str | None, random_init: bool, resume: bool, opts: dict,
                      backbone_opts: dict, table: tuple, as_json: bool, trust_pickle: bool = False) -> None:
    from transferkit.backbones import DEFAULT_IMAGE, DEFAULT_TEXT, load_backbone
    from transferkit.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(**opts)  # bad options fail before any data or model is loaded
    ds = _load_labelled(data, *table)
    spec = model or (DEFAULT_TEXT if ds.modality == "text" else DEFAULT_IMAGE)
    rebuild = {k: v for k, v in backbone_opts.items() if v not in (None, "default")}
    backbone = load_backbone(spec, pretrained=not random_init, trust_pickle=trust_pickle, **rebuild)
    result = finetune(backbone, ds, out, config, resume=resume, progress=sys.stderr.isatty(), log=_log,
                      backbone_options={"pretrained": not random_init, **rebuild})
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch only the main process reports
        return
    if as_json:
        console.print_json(json.dumps(result.info, default=str))
        return
    rows = [{"split": part, **scores} for part, scores in result.metrics.items()]
    _print_table(f"{config.strategy} fine-tuning of {spec} → {out}", rows,
                 ["split", *[k for k in (rows[0] if rows else {}) if k != "split"]])
    console.print(f"trainable parameters {result.trainable_parameters:,} of {result.total_parameters:,} "
                  f"({100 * result.trainable_parameters / max(result.total_parameters, 1):.2f}%), "
                  f"{result.steps} steps, {result.wall_time_s:.1f} s, peak memory {result.peak_memory_mb:.0f} MB; "
                  f"predict with `transferkit predict {out} --data …`", soft_wrap=True)


StrategyOpt = Annotated[str, typer.Option(help="head, full, last-k, gradual or lora.")]
TextColOpt = Annotated[str, typer.Option(help="Text column of a table.")]
LabelColOpt = Annotated[str, typer.Option(help="Label column of a table.")]


@app.command("finetune")
def finetune_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, model, metrics history).")],
    model: ModelOpt = None,
    strategy: StrategyOpt = "full",
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Global batch (split over processes and --grad-accum).")] = 32,
    lr: Annotated[float, typer.Option(help="Backbone learning rate.")] = 1e-4,
    head_lr: Annotated[float | None, typer.Option(help="Head learning rate (default 10 × lr).")] = None,
    optimizer: Annotated[str, typer.Option(help="adamw or sgd (Nesterov momentum).")] = "adamw",
    weight_decay: Annotated[float, typer.Option(help="Decoupled weight decay (not on biases/norms).")] = 0.01,
    layer_decay: Annotated[float, typer.Option(help="Layer-wise rate decay per block from the top (1 = off).")] = 1.0,
    schedule: Annotated[str, typer.Option(help="cosine (with warm-up), onecycle or constant.")] = "cosine",
    warmup: Annotated[float, typer.Option(help="Warm-up fraction of all steps.")] = 0.1,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of the cross-entropy.")] = 0.0,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    clip: Annotated[float | None, typer.Option(help="Max gradient norm (0 = off).")] = 1.0,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16 (auto: bf16 only on native hardware).")] = "auto",
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
    val: Annotated[float, typer.Option(help="Validation fraction (early stopping, best checkpoint).")] = 0.15,
    test: Annotated[float, typer.Option(help="Test fraction (reported).")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the split, data order, head and dropout.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes for decoding/tokenising.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Optimizer steps between resume points.")] = 50,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished run in --out.")] = False,
    random_init: Annotated[bool, typer.Option(help="Start from random weights (train from scratch).")] = False,
    pooling: Annotated[str, typer.Option(help="default, mean, cls, pooler, or layer:NAME.")] = "default",
    image_size: Annotated[int | None, typer.Option(help="Input resolution for image models.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per text.")] = None,
    text_column: TextColOpt = "text",
    label_column: LabelColOpt = "label",
    on_bad_input: Annotated[str, typer.Option(help="fail or skip unreadable items.")] = "fail",
    trust_pickle: Annotated[bool, typer.Option(help="Allow pickle weight files of a local model (never recorded "
                                               "in the run: predict asks again).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print run.json.")] = False,
) -> None:
    """Fine-tune a backbone (or only a new head) on labelled data; resumable, data-parallel under accelerate."""
    opts = dict(strategy=strategy, epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, optimizer=optimizer,
                weight_decay=weight_decay, layer_decay=layer_decay, schedule=schedule, warmup=warmup,
                label_smoothing=label_smoothing, grad_accum=grad_accum, clip=clip or None, precision=precision,
                grad_checkpointing=grad_checkpointing, bn_train=bn_train, patience=patience, last_k=last_k,
                unfreeze_every=unfreeze_every,
                lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_targets=lora_targets,
                class_weights=class_weights, val=val, test=test, seed=seed, num_workers=workers,
                checkpoint_every=checkpoint_every, max_steps=max_steps)
    _finetune_command(data, out, model, random_init, resume, opts,
                      {"pooling": pooling, "image_size": image_size, "max_length": max_length},
                      (text_column, label_column, on_bad_input), as_json, trust_pickle)


@app.command()
def pretrain(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; use it later as --model run:OUT.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Architecture spec, trained from random weights.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Global batch.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW, warm-up + cosine).")] = 1e-3,
    image_size: Annotated[int | None, typer.Option(help="Input resolution for image models.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per text.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, data order and weights.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished run in --out.")] = False,
    text_column: TextColOpt = "text",
    label_column: LabelColOpt = "label",
) -> None:
    """Train a backbone from scratch on a source task (e.g. bundled:mnist), to transfer later with run:OUT."""
    import torch

    torch.manual_seed(seed)  # the random initial weights
    opts = dict(strategy="full", epochs=epochs, batch_size=batch_size, lr=lr, head_lr=lr, seed=seed,
                num_workers=workers, val=0.1, test=0.1)
    _finetune_command(data, out, model, True, resume, opts, {"image_size": image_size, "max_length": max_length},
                      (text_column, label_column), False)


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder written by `transferkit finetune`, `pretrain` or `adapt`.")],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write: id, prediction, one probability per class.")],
    text_column: TextColOpt = "text",
    label_column: Annotated[str | None, typer.Option(help="Label column, to also score the predictions.")] = None,
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, …")] = "cpu",
    trust_pickle: Annotated[bool, typer.Option(help="Allow pickle weight files of the run's local base model.")
                            ] = False,
) -> None:
    """Predict with a finished run, rebuilt from its folder alone (safetensors + JSON, no pickles)."""
    from transferkit.finetune import write_predictions
    from transferkit.predict import load_any_run

    fitted = load_any_run(run, device=device, trust_pickle=trust_pickle)
    ds = _load_labelled(data, text_column, label_column)
    summary = write_predictions(fitted, ds, out, batch_size=batch_size)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
    console.print(f"{summary['n']} predictions → {out}" + (f" ({scores})" if scores else ""))

# ------------------------------------------------------------------------------------ shift & domain adaptation


def _domain_features(data: str, model: str | None, text_column: str, label_column: str | None,
                     image_size: int | None, pooling: str, device: str, backbone=None):
    """Load one domain's data and its features (cached in the feature store); returns (dataset, X, backbone)."""
    from transferkit.backbones import DEFAULT_IMAGE, DEFAULT_TEXT, load_backbone
    from transferkit.data import load_data
    from transferkit.features import extract_features

    kw = {"text_column": text_column, "label_column": label_column} if _is_table(data) else {}
    ds = load_data(data, **kw)
    if backbone is None:
        spec = model or (DEFAULT_TEXT if ds.modality == "text" else DEFAULT_IMAGE)
        backbone = load_backbone(spec, pooling=pooling, image_size=image_size, device=device)
    fs = extract_features(backbone, ds, progress=sys.stderr.isatty())
    return ds, fs.features(), backbone


SourceOpt = Annotated[str, typer.Option("--source", help="Source domain: image folder, table or bundled:NAME.")]
TargetOpt = Annotated[str, typer.Option("--target", help="Target domain: image folder, table or bundled:NAME.")]
LabelColOpt = Annotated[str | None, typer.Option(help="Label column of table data (source; and the target's with "
                                                  "--target-labels).")]


@app.command()
def shift(
    source: SourceOpt,
    target: TargetOpt,
    model: ModelOpt = None,
    text_column: Annotated[str, typer.Option(help="Text column of table data.")] = "text",
    label_column: LabelColOpt = None,
    image_size: Annotated[int | None, typer.Option(help="Input resolution for image models.")] = None,
    pooling: Annotated[str, typer.Option(help="default, mean, cls, pooler, or layer:NAME.")] = "default",
    permutations: Annotated[int, typer.Option(help="Permutations of the MMD test.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of subsampling, permutations and splits.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, …")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Is the target from another distribution than the source, and how big is the gap? (MMD, proxy A-distance,
    per-class drift and label shift when the source has labels)."""
    from transferkit.adapt.fit import check_class_names
    from transferkit.shift import shift_report

    src, Xs, bb = _domain_features(source, model, text_column, label_column, image_size, pooling, device)
    tgt, Xt, _ = _domain_features(target, model, text_column, label_column, image_size, pooling, device, bb)
    labelled = src.task == "classification"
    yt = None
    if labelled and tgt.task == "classification":
        check_class_names(src.class_names, tgt.class_names)
        yt = tgt.labels
    rep = shift_report(Xs, Xt, ys=src.labels if labelled else None, yt=yt,
                       class_names=list(src.class_names) if labelled else None, permutations=permutations, seed=seed)
    if as_json:
        console.print_json(json.dumps(rep.as_dict()))
        return
    _print_table(f"shift {source} → {target} ({bb.spec}, {len(Xs)} vs {len(Xt)} items)", rep.rows(),
                 ["diagnostic", "value", "meaning"])
    if rep.classes:
        _print_table(f"per-class drift (target classes from {rep.drift_basis}; drift in source spreads)",
                     rep.classes, ["name", "n_source", "n_target", "drift", "source_share", "target_share_bbse"])
    console.print(rep.verdict, soft_wrap=True)


@app.command()
def adapt(
    source: Annotated[str | None, typer.Option("--source", help="Labelled source domain: image folder, table or "
                                               "bundled:NAME.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Unlabelled target domain (labels, if any, are "
                                               "ignored unless --target-labels).")] = None,
    model: ModelOpt = None,
    method: Annotated[str, typer.Option(help="auto, source-only, coral, sa, source-only-mlp, mmd, dann, cdan, "
                                        "cdan+e, mcc, self-training (frozen-backbone features); dann-e2e, "
                                        "cdan-e2e, mmd-e2e (end-to-end: fine-tune the backbone too); adabn, tent, shot "
                                        "(source-free: adapt the fine-tuned --source-run's network).")] = "auto",
    source_run: Annotated[Path | None, typer.Option("--source-run", help="adabn/tent/shot: a finished `transferkit "
                                                    "finetune` run folder to adapt (no source data needed).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Hyperparameter NAME=VALUE (repeatable), "
                                                    "e.g. tradeoff=0.3.")] = None,
    validator: Annotated[str, typer.Option(help="Unsupervised validator of --method auto: dev or snd.")] = "dev",
    target_labels: Annotated[bool, typer.Option("--target-labels", help="The target carries labels (class "
                                                "folders / --label-column): report target accuracy with them; "
                                                "never used for training or choosing.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder to write (run.json + "
                                             "model.safetensors).")] = None,
    benchmark: Annotated[str | None, typer.Option(help="Run a bundled benchmark instead: digits or sentiment.")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of table data.")] = "text",
    label_column: LabelColOpt = None,
    image_size: Annotated[int | None, typer.Option(help="Input resolution for image models.")] = None,
    pooling: Annotated[str, typer.Option(help="default, mean, cls, pooler, or layer:NAME.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed of splits and training.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, … (feature extraction)")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    epochs: Annotated[int | None, typer.Option(help="*-e2e: passes over the source (default 3).")] = None,
    strategy: Annotated[str | None, typer.Option(help="*-e2e: full (default), last-k, gradual or lora.")] = None,
    resume: Annotated[bool, typer.Option(help="*-e2e: continue the unfinished run in --out.")] = False,
) -> None:
    """Adapt a classifier from a labelled source to an unlabelled target domain (features, end to end, or
    source-free)."""
    log = lambda m: err_console.print(f"[dim]{m}[/dim]")  # noqa: E731
    if benchmark is not None:
        from transferkit.adapt.benchmark import run_benchmark, table_rows

        res = run_benchmark(benchmark, seed=seed, progress=sys.stderr.isatty(), log=log)
        if as_json:
            console.print_json(json.dumps(res, default=str))
            return
        _print_table(f"adapt benchmark {benchmark}: target accuracy (held-out target half)", table_rows(res),
                     ["task", "method", "target_acc", "vs_source_only", "wall_s"])
        console.print(f"validator pick rate (chose what target labels would choose): DEV {res['dev_pick_rate']:.2f}"
                      f", SND {res['snd_pick_rate']:.2f}; mean regret DEV {res['dev_mean_regret']:.3f}, "
                      f"SND {res['snd_mean_regret']:.3f}")
        return
    from transferkit.adapt.end_to_end import END_TO_END
    from transferkit.adapt.source_free import SOURCE_FREE

    if method in END_TO_END:
        _adapt_end_to_end(method, source, target, model, out, target_labels, text_column, label_column, image_size,
                          seed, epochs, strategy, param or [], resume, as_json)
        return
    if epochs is not None or strategy is not None or resume:
        raise TransferkitError(f"--epochs, --strategy and --resume are for --method {'|'.join(END_TO_END)}")
    if method in SOURCE_FREE:
        _adapt_source_free(method, source_run, target, out, target_labels, text_column, label_column, seed, as_json)
        return
    if source_run is not None:
        raise TransferkitError(f"--source-run is for --method {' or '.join(SOURCE_FREE)}; --method {method} "
                               "adapts features: give --source instead")
    if source is None or target is None:
        raise TransferkitError("adapt needs --source and --target (or --benchmark digits|sentiment)")
    from transferkit.adapt import adapt_features, check_class_names, parse_params, save_run
    from transferkit.adapt.run import backbone_record

    hp = parse_params(param or [])
    src, Xs, bb = _domain_features(source, model, text_column, label_column, image_size, pooling, device)
    if src.task != "classification":
        raise TransferkitError(f"source {source} has no class labels: give class folders or --label-column")
    tgt, Xt, _ = _domain_features(target, model, text_column, label_column if target_labels else None,
                                  image_size, pooling, device, bb)
    yt = None
    if target_labels:
        if tgt.task != "classification":
            raise TransferkitError(f"--target-labels given but target {target} has no class labels")
        check_class_names(src.class_names, tgt.class_names)
        yt = tgt.labels
    res = adapt_features(Xs, src.labels, Xt, list(src.class_names), method=method, hyperparameters=hp,
                         validator=validator, seed=seed, yt_eval=yt, log=log)
    if out is not None:
        save_run(out, res.model, backbone=backbone_record(bb), method=res.method,
                 hyperparameters=res.hyperparameters, metrics=res.metrics,
                 extra={"validator": res.validator, "source": source, "target": target, "seed": seed,
                        "candidates": res.candidates})
    if as_json:
        console.print_json(json.dumps({"method": res.method, "hyperparameters": res.hyperparameters,
                                       "metrics": res.metrics, "candidates": res.candidates}))
        return
    if res.candidates:
        cols = ["method", "hyperparameters", "dev", "snd", "source_val_accuracy"]
        cols += ["target_accuracy"] if yt is not None else []
        _print_table(f"candidates (chosen by {res.validator}, without target labels)", [
            {**r, "hyperparameters": ", ".join(f"{k}={v}" for k, v in r["hyperparameters"].items()),
             "method": r["method"] + (" ←" if r["chosen"] else "")} for r in res.candidates], cols)
    console.print(f"{res.method} {res.hyperparameters}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()
                                                                       if isinstance(v, float))
                  + (f"; run written to {out}" if out is not None else ""), soft_wrap=True)


@app.command()
def compare(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder: results.json, index.html, runs/.")],
    model: ModelOpt = None,
    strategies: Annotated[str, typer.Option(help="Comma-separated route:method specs, e.g. probe:logreg,probe:svm,"
                                            "finetune:lora,finetune:full,adapt:dann (adapt:* need --target).")
                          ] = "probe:logreg,probe:svm,finetune:head",
    budget: Annotated[str | None, typer.Option(help="Stop starting new strategies once this much time is spent: "
                                               "90s, 10m, 1h, 1h30m.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Unlabelled target domain: adds shift diagnostics "
                                               "and allows adapt:* strategies.")] = None,
    target_labels: Annotated[bool, typer.Option("--target-labels", help="The target carries labels (class folders "
                                                "/ --label-column): every route is also scored on the target; never "
                                                "used for training or choosing.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the comparison in --out: strategies that finished with the "
                                         "same settings are not run again.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the split, the sample and every strategy.")] = 0,
    sample: Annotated[int | None, typer.Option(help="Compare on a class-stratified subset of this many items.")
                      ] = None,
    val: Annotated[float, typer.Option(help="Validation fraction (hyperparameters, early stopping).")] = 0.15,
    test: Annotated[float, typer.Option(help="Test fraction (reported).")] = 0.15,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Fine-tuning batch size.")] = 32,
    lr: Annotated[float | None, typer.Option(help="Fine-tuning learning rate (default: finetune's default).")
                  ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cap on fine-tuning optimizer steps.")] = None,
    finetune_param: Annotated[list[str] | None, typer.Option("--finetune-param", help="Any other fine-tuning "
                                                             "setting NAME=VALUE (repeatable), e.g. lora_r=4.")
                              ] = None,
    text_column: TextColOpt = "text",
    label_column: Annotated[str, typer.Option(help="Label column of a table.")] = "label",
    image_size: Annotated[int | None, typer.Option(help="Input resolution for image models.")] = None,
    pooling: Annotated[str, typer.Option(help="default, mean, cls, pooler, or layer:NAME.")] = "default",
    tolerance: Annotated[float, typer.Option(help="Recommendation rule: accuracy points (as a fraction) a cheaper "
                                             "route may give up against the best.")] = 0.01,
    tsne_points: Annotated[int, typer.Option(help="Items in the report's t-SNE projections (at most).")] = 1000,
) -> None:
    """Run several routes on the same split, write results.json and a self-contained HTML report, recommend one."""
    from transferkit.adapt import parse_params
    from transferkit.report import CompareSettings, parse_budget, render_report, run_compare

    budget_s = parse_budget(budget)
    ft = {"epochs": epochs, "batch_size": batch_size, **({"lr": lr} if lr is not None else {}),
          **({"max_steps": max_steps} if max_steps is not None else {}), **parse_params(finetune_param or [])}
    settings = CompareSettings(data=data, model=model, target=target, target_labels=target_labels,
                               text_column=text_column, label_column=label_column, image_size=image_size,
                               pooling=pooling, sample=sample, seed=seed, val=val, test=test)
    doc = run_compare(settings, strategies, out, budget_s=budget_s, resume=resume, finetune_options=ft,
                      progress=sys.stderr.isatty(), log=_log)
    _log("rendering the report (plots, t-SNE)")
    _print_compare(doc, render_report(doc, out, tolerance=tolerance, max_points=tsne_points), tolerance)


def _print_compare(doc: dict, page: Path, tolerance: float) -> None:
    from transferkit.report import summary_lines
    from transferkit.report.summary import table_rows

    rows, cols = table_rows(doc)
    _print_table(f"compare on {doc['inputs']['source']['test']} test items ({doc['inputs']['backbone']})", rows, cols)
    for line in summary_lines(doc, tolerance):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"report: {page}  (results: {page.parent / 'results.json'})", soft_wrap=True, highlight=False)


def _load_target(target: str, text_column: str, label_column: str | None, target_labels: bool,
                 source_classes: Callable[[], Sequence[str]]) -> tuple[Any, Any]:
    """(target data, its labels or None): labels are read only with --target-labels, and then must name the
    source's classes (they score the adapted model; nothing trains on them)."""
    from transferkit.adapt import check_class_names
    from transferkit.data import load_data

    kw = {"text_column": text_column, "label_column": label_column if target_labels else None} \
        if _is_table(target) else {}
    tgt = load_data(target, **kw)
    if not target_labels:
        return tgt, None
    if tgt.task != "classification":
        raise TransferkitError(f"--target-labels given but target {target} has no class labels")
    check_class_names(list(source_classes()), tgt.class_names)
    return tgt, tgt.labels


def _adapt_source_free(method: str, source_run: Path | None, target: str | None, out: Path | None,
                       target_labels: bool, text_column: str, label_column: str | None, seed: int,
                       as_json: bool) -> None:
    """adapt --method adabn|tent|shot: a fine-tuned run + unlabelled target items → a new fine-tuning run folder."""
    from transferkit.adapt.source_free import adapt_run
    from transferkit.finetune.checkpoint import RunFolder

    if source_run is None or target is None or out is None:
        raise TransferkitError(f"--method {method} needs --source-run RUN (a finished `transferkit finetune` "
                               "folder), --target DATA and --out FOLDER")
    tgt, yt = _load_target(target, text_column, label_column, target_labels,
                           lambda: RunFolder(source_run).read().get("class_names") or [])
    rec = adapt_run(method, source_run, tgt, out, seed=seed, target_labels=yt)
    if as_json:
        console.print_json(json.dumps(rec))
        return
    console.print(f"{method}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.get("metrics", {}).items())
                  + f" ({rec['fit_s']:.1f} s); run written to {out}", soft_wrap=True)


def _adapt_end_to_end(method: str, source: str | None, target: str | None, model: str | None, out: Path | None,
                      target_labels: bool, text_column: str, label_column: str | None, image_size: int | None,
                      seed: int, epochs: int | None, strategy: str | None, params: list[str], resume: bool,
                      as_json: bool) -> None:
    """adapt --method dann-e2e|cdan-e2e|mmd-e2e: fine-tune on --source with a domain loss on --target → run folder.

    --param NAME=VALUE sets any fine-tuning option (batch_size, lr, domain_tradeoff, last_k, …)."""
    from transferkit.adapt import parse_params
    from transferkit.adapt.end_to_end import adapt_end_to_end
    from transferkit.backbones import DEFAULT_IMAGE, DEFAULT_TEXT, load_backbone
    from transferkit.finetune import FinetuneConfig

    if source is None or target is None or out is None:
        raise TransferkitError(f"--method {method} needs --source DATA (labelled), --target DATA and --out FOLDER")
    opts = {"seed": seed, **parse_params(params)}
    opts.update({k: v for k, v in (("epochs", epochs), ("strategy", strategy)) if v is not None})
    try:
        config = FinetuneConfig(**opts)
    except TypeError as e:
        raise TransferkitError(f"--param: {e}; use FinetuneConfig option names (batch_size, lr, domain_tradeoff, "
                               "last_k, …)") from e
    src = _load_labelled(source, text_column, label_column)
    tgt, yt = _load_target(target, text_column, label_column, target_labels, lambda: src.class_names)
    spec = model or (DEFAULT_TEXT if src.modality == "text" else DEFAULT_IMAGE)
    rebuild = {"image_size": image_size} if image_size else {}
    res = adapt_end_to_end(method, load_backbone(spec, **rebuild), src, tgt, out, config, target_labels=yt,
                           backbone_options=rebuild, resume=resume, progress=sys.stderr.isatty(), log=_log)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch only the main process reports
        return
    if as_json:
        console.print_json(json.dumps(res.info, default=str))
        return
    acc = res.info.get("adaptation", {}).get("metrics", {}).get("target_accuracy")
    console.print(f"{method}: source " + ", ".join(f"{part} accuracy {m.get('accuracy', float('nan')):.4f}"
                                                   for part, m in res.metrics.items())
                  + (f", target accuracy {acc:.4f}" if acc is not None else "")
                  + f" ({res.steps} steps, {res.wall_time_s:.1f} s); run written to {out}", soft_wrap=True)


def main() -> None:
    """Console entry point: user errors print one line and exit 2, without a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except Interrupted as e:
        err_console.print(f"interrupted: {e}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except TransferkitError as e:
        err_console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # before Typer runs the command (imports)
        _interrupted()
    except SystemExit as e:  # Typer turns Ctrl-C in a command into a silent exit 130
        if e.code == 130 and _from_interrupt(e):
            _interrupted()
        raise


def _interrupted() -> None:
    err_console.print("interrupted: finished work is kept; rerun the same command to resume "
                      "(add --resume for finetune and compare)", highlight=False)
    sys.exit(130)


def _from_interrupt(e: BaseException) -> bool:
    """Whether a KeyboardInterrupt is somewhere in the cause/context chain of `e`."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


if __name__ == "__main__":
    main()
