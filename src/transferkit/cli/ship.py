"""Commands that use a finished model folder: `predict` (and `export`, `serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.app import app, console
from transferkit.cli.options import (
    DataArgs,
    DataOpt,
    DeviceOpt,
    LabelColumnOpt,
    OnBadInputOpt,
    PrecisionOpt,
    TextColumnOpt,
    TrustPickleOpt,
)

ModelFolderArg = Annotated[Path, typer.Argument(help="Model folder written by `probe --out`, `finetune`, `pretrain`, "
                                                "`adapt`, `compare` (OUT/best) or `fit` (OUT/best).")]


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
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 64,
) -> None:
    """Predict with a model folder, rebuilt from the folder alone (safetensors + JSON, no pickles); with labels,
    also score the predictions."""
    from transferkit.finetune import write_predictions
    from transferkit.predict import load_any_run

    fitted = load_any_run(model, device=device, trust_pickle=trust_pickle)
    ds = DataArgs(data, text_column, label_column, on_bad_input).load()
    summary = write_predictions(fitted, ds, out, batch_size=batch_size)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
    console.print(f"{summary['n']} predictions → {out}" + (f" ({scores})" if scores else ""))
