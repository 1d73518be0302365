"""Commands that use a finished model folder: `predict`, `export`, `serve`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.app import app, console, log
from transferkit.cli.options import (
    DataArgs,
    DataOpt,
    DeviceOpt,
    LabelColumnOpt,
    OnBadInputOpt,
    PrecisionOpt,
    TextColumnOpt,
    TrustPickleOpt,
    TrustRemoteCodeOpt,
)

ModelFolderArg = Annotated[Path, typer.Argument(help="Model folder written by `probe --out`, `finetune`, `pretrain`, "
                                                "`adapt` or `compare` (OUT/best).")]


@app.command(rich_help_panel="Ship the model")
def predict(
    model: ModelFolderArg,
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write: id, prediction, one probability per class.")],
    text_column: TextColumnOpt = "text",
    label_column: LabelColumnOpt = None,
    on_bad_input: OnBadInputOpt = "fail",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 64,
) -> None:
    """Predict with a model folder, rebuilt from the folder alone (safetensors + JSON, no pickles); with labels,
    also score the predictions."""
    from transferkit.model import load_model
    from transferkit.predict import write_predictions

    fitted = load_model(model, device=device, precision=precision, trust_pickle=trust_pickle,
                        trust_remote_code=trust_remote_code)
    ds = DataArgs(data, text_column, label_column, on_bad_input).load()
    if ds.modality != fitted.modality:
        from transferkit.errors import DataError

        raise DataError(f"{model} reads {fitted.modality} items but --data {data} holds {ds.modality} items")
    summary = write_predictions(fitted, ds, out, batch_size=batch_size, on_bad_input=on_bad_input,
                                progress=sys.stderr.isatty())
    scores = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
    skipped = f"; {summary['skipped']} item(s) could not be read: their rows say why" if summary["skipped"] else ""
    console.print(f"{summary['n']} predictions ({fitted.info.kind} model, {fitted.info.precision}) → {out}"
                  + (f" ({scores})" if scores else "") + skipped, soft_wrap=True)


@app.command(rich_help_panel="Ship the model")
def export(
    model: ModelFolderArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (model.onnx, preprocessing.json, "
                                      "labels.json, README.md with the inference snippet).")],
    format: Annotated[str, typer.Option("--format", help="onnx.")] = "onnx",
    quantize: Annotated[str | None, typer.Option(help="int8: also write model.int8.onnx (dynamic int8 weights) "
                                                 "and measure its accuracy change.")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Real items to check the export on (default: "
                                             "the model's own test split, when its data can be read again).")
                    ] = None,
    text_column: TextColumnOpt = "text",
    label_column: LabelColumnOpt = None,
    on_bad_input: OnBadInputOpt = "fail",
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Export a model folder to ONNX (optionally int8) with its preprocessing, checked against PyTorch."""
    from transferkit.export import FORMATS, ExportError, export_onnx

    if format not in FORMATS:
        raise ExportError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    ds = DataArgs(data, text_column, label_column, on_bad_input).load() if data else None
    report = export_onnx(model, out, quantize=quantize, data=ds, trust_pickle=trust_pickle,
                         trust_remote_code=trust_remote_code, log=log)
    checks = ", ".join(f"{k} {v:.4g}" for k, v in report.items() if isinstance(v, float))
    console.print(f"{report['kind']} model → {out} ({', '.join(report['files'].values())}); checked on "
                  f"{report['checked_on']}" + (f": {checks}" if checks else ""), soft_wrap=True)


@app.command(rich_help_panel="Ship the model")
def serve(
    model: ModelFolderArg,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    max_batch: Annotated[int, typer.Option(help="Items gathered from concurrent requests into one model batch.")
                         ] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long the first request of a batch waits for others.")
                           ] = 5.0,
    max_items: Annotated[int, typer.Option(help="Items one request may send.")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted (MB).")] = 16.0,
) -> None:
    """Serve a model folder over HTTP: POST /predict, GET /health, GET /metadata (FastAPI + uvicorn)."""
    import uvicorn

    from transferkit.model import load_model
    from transferkit.serve import create_app

    loaded = load_model(model, device=device, precision=precision, trust_pickle=trust_pickle,
                        trust_remote_code=trust_remote_code)
    app_ = create_app(loaded, max_batch=max_batch, max_wait_ms=max_wait_ms, max_items=max_items,
                      max_body_bytes=int(max_body_mb * 2**20))
    log(f"serving {loaded.info.kind} model {model} ({loaded.info.precision}) on http://{host}:{port} — "
        "POST /predict, GET /health, GET /metadata")
    uvicorn.run(app_, host=host, port=port, log_level="warning")
