"""Commands of the feature route: `extract`, `probe`, `rank`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.app import app, console, err_console, is_main_process, print_table
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


@app.command(rich_help_panel="Feature route")
def extract(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature folder to write (resumable).")],
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
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 64,
    shard_size: Annotated[int, typer.Option(help="Items per shard on disk (the unit of resumption).")] = 1024,
    optimize: Annotated[str, typer.Option(help="auto, none, jit or compile: graph capture for CNNs on CPU.")] = "auto",
    workers: Annotated[int | None, typer.Option(help="DataLoader workers (default: by data type).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace other features already in --out.")] = False,
    store_dtype: Annotated[str, typer.Option(help="float32, or float16: half the disk (values up to ±65504).")]
    = "float32",
) -> None:
    """Extract features of a data set with a frozen backbone into a resumable feature folder."""
    from transferkit.features.store import check_store_dtype, finished_features
    from transferkit.runtime import known_precision, resolve_precision

    check_store_dtype(store_dtype)  # a bad value fails before the data are read
    ds = DataArgs(data, text_column, label_column, on_bad_input).load()
    skipped = ds.meta.get("skipped") or []
    if skipped and is_main_process():
        shown = "; ".join(f"{s['item']} ({s['reason'].split(':')[0]})" for s in skipped[:3])
        err_console.print(f"skipped {len(skipped)} bad item(s), listed in {out}/meta.json: {shown}"
                          + (" …" if len(skipped) > 3 else ""), highlight=False)
    bb_args = BackboneArgs(model, pooling, image_size, max_length, device, precision, random_init, trust_pickle,
                           trust_remote_code)
    identity = None if overwrite else bb_args.known_identity(ds.modality)
    # these very features may be on disk already: then the model need not even be built, nor torch imported
    prec = known_precision(precision, device) if identity else None
    prec = prec or resolve_precision(precision, device, inference=True)
    fs = finished_features(out, identity, ds, prec, store_dtype) if identity else None
    written: list[int] = []
    t0 = time.perf_counter()
    if fs is None:
        from transferkit.features import extract_features

        fs = extract_features(bb_args.load(ds.modality), ds, out=out, batch_size=batch_size, shard_size=shard_size,
                              precision=precision, optimize=optimize, num_workers=workers, progress=True,
                              overwrite=overwrite, on_shard=written.append, store_dtype=store_dtype)
    if not is_main_process():  # under torchrun / accelerate launch only the main process reports
        return
    processes = int(fs.meta.get("processes", 1))
    if written and processes > 1:  # rank 0 takes the first missing shard: it computed some whenever any were
        how = (f"{fs.meta['shards_computed']}/{fs.meta['n_shards']} shards computed by {processes} processes in "
               f"{time.perf_counter() - t0:.1f} s")
    else:
        how = (f"{len(written)}/{fs.meta['n_shards']} shards computed in {time.perf_counter() - t0:.1f} s" if written
               else "already complete: no model work")
    labels = "labelled" if fs.task != "unlabelled" else "unlabelled"
    console.print(f"{fs.n_items} {labels} items × {fs.feature_dim} features from {fs.meta['backbone']['spec']} "
                  f"({fs.meta['precision']}) → {out} ({how})", soft_wrap=True)


@app.command(rich_help_panel="Feature route")
def probe(
    features: Annotated[Path, typer.Argument(help="Feature folder written by `transferkit extract`.")],
    head: Annotated[str, typer.Option(help="logreg, svm, rbf-svm, ridge, knn or auto.")] = "auto",
    seed: SeedOpt = 0,
    val: ValOpt = 0.15,
    test: TestOpt = 0.15,
    out: Annotated[Path | None, typer.Option("--out", "-o", "--save", help="Model folder to write: the backbone "
                                             "reference + the best-by-validation head (predict, export, serve "
                                             "read it).")] = None,
    max_memory: Annotated[str, typer.Option(
        "--max-memory", help="Memory the heads may take, e.g. 4GB (auto: half this machine's). Above it ridge, "
        "logreg and svm are fitted shard by shard, never holding every feature.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Fit a head on cached features, choosing its hyperparameters on a validation split; report test metrics."""
    from transferkit.heads.probe import probe_features

    report = probe_features(features, head=head, seed=seed, val=val, test=test, save=out, max_memory=max_memory)
    if as_json:
        console.print_json(json.dumps(report))
        return
    if report["streamed"]:
        console.print(f"fitted shard by shard: in memory the heads would take about {report['in_memory_mb']:,.0f} MB, "
                      f"over --max-memory {report['max_memory_mb']:,.0f} MB", soft_wrap=True)
    print_table(f"probe on {features} ({report['n_train']} train / {report['n_val']} val / {report['n_test']} test)",
                report["heads"], ["head", "chosen", "val_score", *report["metric_names"], "fit_s"])
    console.print(f"best by validation: {report['best']}")
    if out is not None:
        console.print(f"model written to {out}; predict with `transferkit predict {out} --data …`", soft_wrap=True)


@app.command("rank", rich_help_panel="Feature route")
def rank_models(
    models: Annotated[str, typer.Option("--models", help="Comma-separated backbone specs, e.g. "
                                        "effnet:lite0,effnet:lite2,timm:resnet18.")],
    data: DataOpt,
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
    metric: Annotated[str, typer.Option(help="logme, leep, nce, hscore, or all (ranked by LogME).")] = "logme",
    sample: Annotated[int | None, typer.Option(help="Score on a stratified subset of this many items.")] = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Rank pretrained backbones for your labelled data by transferability scores, without training.

    Under `torchrun`/`accelerate launch` the processes split each backbone's extraction (as `extract` does) and
    only the main process reports."""
    from transferkit.select import METRICS, metrics_for, rank

    metrics_for(metric)  # a bad metric fails before any data or model is loaded
    specs = [m.strip() for m in models.split(",") if m.strip()]
    ds = DataArgs(data, text_column, label_column, on_bad_input).load("required")
    main = is_main_process()
    rows = rank(specs, ds, metric=metric, sample=sample, seed=seed, image_size=image_size, max_length=max_length,
                pooling=pooling, pretrained=not random_init, device=device, precision=precision,
                trust_pickle=trust_pickle, trust_remote_code=trust_remote_code, progress=main,
                log=(lambda m: err_console.print(f"[dim]{m}[/dim]")) if main else None)
    if not main:  # under torchrun / accelerate launch only the main process reports
        return
    if as_json:
        console.print_json(json.dumps(rows))
        return
    scores = [m for m in METRICS if m in rows[0]]
    print_table(f"transferability on {rows[0]['n_items']} items (higher is better; ranked by "
                f"{'logme' if metric == 'all' else metric})", rows,
                ["rank", "model", "pooling", *scores, "extract_s", "score_s", "note"])
    best = next((r for r in rows if r["rank"] == 1), None)
    if best is not None:
        console.print(f"best: {best['model']} — its features are cached; probe them with "
                      f"`transferkit probe {best['features']}`", soft_wrap=True)
