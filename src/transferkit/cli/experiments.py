"""Commands that run routes side by side and choose: `compare`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from transferkit.cli.app import app, console, log, print_table
from transferkit.cli.options import (
    DataOpt,
    DeviceOpt,
    ImageSizeOpt,
    LabelColumnOpt,
    MaxLengthOpt,
    ModelOpt,
    OnBadInputOpt,
    PoolingOpt,
    PrecisionOpt,
    RandomInitOpt,
    SampleOpt,
    SeedOpt,
    TestOpt,
    TextColumnOpt,
    TrustPickleOpt,
    TrustRemoteCodeOpt,
    ValOpt,
)

TargetLabelsOpt = Annotated[bool, typer.Option(
    "--target-labels", help="The target carries labels (class folders / a label column): every route is also "
    "scored on the target; never used for training or choosing.")]


@app.command(rich_help_panel="Compare and choose")
def compare(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder: results.json, index.html, runs/, best/.")],
    model: ModelOpt = None,
    strategies: Annotated[str | None, typer.Option(
        help="Comma-separated route:method specs, e.g. baseline:tfidf,probe:logreg,finetune:lora,adapt:dann (adapt:* "
        "need --target). Default: the data's baseline (baseline:tfidf for text, baseline:pixels for images), "
        "probe:logreg, probe:svm, finetune:head.")] = None,
    budget: Annotated[str | None, typer.Option(help="Stop starting new strategies once this much time is spent: "
                                               "90s, 10m, 1h, 1h30m.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Unlabelled target domain: adds shift diagnostics "
                                               "and allows adapt:* strategies.")] = None,
    target_labels: TargetLabelsOpt = False,
    resume: Annotated[bool, typer.Option(help="Continue the comparison in --out: strategies that finished with the "
                                         "same settings are not run again.")] = False,
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
    seed: SeedOpt = 0,
    sample: SampleOpt = None,
    val: ValOpt = 0.15,
    test: TestOpt = 0.15,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Fine-tuning global batch.")] = 32,
    lr: Annotated[str | None, typer.Option(help="Fine-tuning learning rate: a number, or auto (searched on "
                                           "validation); default: each strategy's own.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cap on fine-tuning optimizer steps.")] = None,
    finetune_param: Annotated[list[str] | None, typer.Option("--finetune-param", help="Any other fine-tuning "
                                                             "setting NAME=VALUE (repeatable), e.g. lora_r=4.")
                              ] = None,
    tolerance: Annotated[float, typer.Option(help="Recommendation rule: accuracy points (as a fraction) a cheaper "
                                             "route may give up against the best.")] = 0.01,
    tsne_points: Annotated[int, typer.Option(help="Items in the report's t-SNE projections (at most).")] = 1000,
) -> None:
    """Run several routes on the same split, write results.json and a self-contained HTML report, recommend one."""
    from transferkit.report import CompareSettings, parse_budget, publish_best, run_compare

    budget_s = parse_budget(budget)
    ft = _finetune_options({"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_steps": max_steps},
                           finetune_param, "compare")
    settings = CompareSettings(data=data, model=model, target=target, target_labels=target_labels,
                               text_column=text_column, label_column=label_column, on_bad_input=on_bad_input,
                               image_size=image_size, max_length=max_length, pooling=pooling, device=device,
                               precision=precision, pretrained=not random_init, sample=sample, seed=seed, val=val,
                               test=test)
    doc = run_compare(settings, strategies, out, budget_s=budget_s, resume=resume, finetune_options=ft,
                      progress=sys.stderr.isatty(), log=log,
                      trust={"trust_pickle": trust_pickle, "trust_remote_code": trust_remote_code})
    if doc is None:  # under torchrun / accelerate launch: this process helped extract; process 0 reports
        return
    publish_best(doc, out, tolerance)
    _report(doc, out, tolerance, tsne_points)


def _finetune_options(given: dict, params: list[str] | None, command: str, owned: tuple[str, ...] = ()) -> dict:
    """The fine-tuning options of `compare`/`fit`: the flags given (None: not given) and --finetune-param
    NAME=VALUE for any other FinetuneConfig field except those the command sets for every strategy itself."""
    from transferkit.finetune import FinetuneConfig
    from transferkit.params import dataclass_schema, parse_params

    owned = ("strategy", "val", "test", "seed", "precision", *owned)
    schema = {k: v for k, v in dataclass_schema(FinetuneConfig).items() if k not in owned}
    params = parse_params(params or [], schema, flag="--finetune-param", what=f"{command}'s fine-tuning")
    given = {k: v for k, v in given.items() if v is not None}
    for flag, opts in (("--lr", given), ("--finetune-param lr", params)):
        if isinstance(opts.get("lr"), str) and opts["lr"] != "auto":
            try:
                opts["lr"] = float(opts["lr"])
            except ValueError:
                from transferkit.report.specs import CompareError

                raise CompareError(f"{flag} {opts['lr']!r} is not a learning rate: give a number such as 5e-4, or "
                                   "auto") from None
    return {**given, **params}


def _report(doc: dict, out: Path, tolerance: float, tsne_points: int) -> None:
    from transferkit.report import render_report

    log("rendering the report (plots, t-SNE)")
    print_compare(doc, render_report(doc, out, tolerance=tolerance, max_points=tsne_points), tolerance)


def print_compare(doc: dict, page: Path, tolerance: float) -> None:
    """The results table, the recommendation and where the report is."""
    from transferkit.report import summary_lines
    from transferkit.report.summary import table_rows

    rows, cols = table_rows(doc)
    print_table(f"compare on {doc['inputs']['source']['test']} test items ({doc['inputs']['backbone']})", rows, cols)
    for line in summary_lines(doc, tolerance):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"report: {page}  (results: {page.parent / 'results.json'})", soft_wrap=True, highlight=False)
    best = doc.get("best") or {}
    if best.get("path"):
        console.print(f"model of {best['name']}: {best['path']}\nnext: transferkit predict {best['path']} --data "
                      "ITEMS --out predictions.csv", soft_wrap=True, highlight=False)
    elif best.get("note"):
        console.print(f"no model folder to hand over: {best['note']}", soft_wrap=True, highlight=False)


@app.command(rich_help_panel="Compare and choose")
def fit(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: best/ (the model), results.json, "
                                      "index.html, runs/.")] = Path("fit-out"),
    model: ModelOpt = None,
    budget: Annotated[str, typer.Option(help="Time for the whole search: 90s, 10m, 1h, 1h30m. Fine-tuning runs stop "
                                        "(keeping their best epoch) when it is spent; no strategy starts after.")
                      ] = "15m",
    strategies: Annotated[str | None, typer.Option(
        help="Override the portfolio (comma-separated route:method specs). Default for text: baseline:tfidf, "
        "probe:auto, probe:hybrid, finetune:contrastive, finetune:lora, finetune:full, ensemble:caruana; for images: "
        "baseline:pixels, probe:auto, finetune:last-k, finetune:full, ensemble:caruana.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in --out: strategies that finished are not run "
                                         "again.")] = False,
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
    seed: SeedOpt = 0,
    sample: SampleOpt = None,
    val: ValOpt = 0.15,
    test: TestOpt = 0.15,
    epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs at most (default 6, ended earlier by early "
                                               "stopping on validation).")] = None,
    lr: Annotated[str | None, typer.Option(help="Fine-tuning learning rate for every strategy: a number, or auto "
                                           "(a short search on validation with successive halving, the default).")
                  ] = None,
    finetune_param: Annotated[list[str] | None, typer.Option("--finetune-param", help="Any other fine-tuning "
                                                             "setting NAME=VALUE (repeatable), e.g. lora_r=4.")
                              ] = None,
    tolerance: Annotated[float, typer.Option(help="Choice rule: validation accuracy (as a fraction) a cheaper model "
                                             "may give up against the best.")] = 0.01,
    tsne_points: Annotated[int, typer.Option(help="Items in the report's t-SNE projections (at most).")] = 1000,
) -> None:
    """The best model for your data within a budget: the strong baseline, probes and fine-tuning, chosen on
    validation; writes OUT/best (a model folder), results.json and an HTML report."""
    from transferkit.fit import run_fit
    from transferkit.report import CompareSettings, parse_budget

    budget_s = parse_budget(budget)
    # fit sets each run's time limit from its budget
    ft = _finetune_options({"epochs": epochs, "lr": lr}, finetune_param, "fit", owned=("time_limit_s",))
    settings = CompareSettings(data=data, model=model, text_column=text_column, label_column=label_column,
                               on_bad_input=on_bad_input, image_size=image_size, max_length=max_length,
                               pooling=pooling, device=device, precision=precision, pretrained=not random_init,
                               sample=sample, seed=seed, val=val, test=test)
    doc = run_fit(settings, out, budget_s=budget_s, strategies=strategies, finetune_options=ft, resume=resume,
                  tolerance=tolerance, progress=sys.stderr.isatty(), log=log,
                  trust={"trust_pickle": trust_pickle, "trust_remote_code": trust_remote_code})
    if doc is None:  # under torchrun / accelerate launch: this process helped extract; process 0 reports
        return
    _report(doc, out, tolerance, tsne_points)
