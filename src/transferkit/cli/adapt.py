"""Commands of domain adaptation: `shift` (is the target from another distribution?) and `adapt`.

`adapt` has four modes, told apart by `--method` (and `--benchmark`); each accepts its own options and refuses
the others in one line, so nothing a user types is silently ignored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from transferkit.cli.app import app, console, is_main_process, log, print_table
from transferkit.cli.options import (
    BackboneArgs,
    DataArgs,
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
    TextColumnOpt,
    TrustPickleOpt,
    TrustRemoteCodeOpt,
    given,
)
from transferkit.errors import TransferkitError

SourceOpt = Annotated[str, typer.Option("--source", help="Source domain: image folder, table or bundled:NAME.")]
TargetOpt = Annotated[str, typer.Option("--target", help="Target domain: image folder, table or bundled:NAME.")]
TargetLabelsOpt = Annotated[bool, typer.Option(
    "--target-labels", help="The target carries labels (class folders / a label column): report target accuracy "
    "with them; never used for training or choosing.")]


def domain_features(data: DataArgs, labels: str, backbone: BackboneArgs, bb: Any = None) -> tuple[Any, Any, Any]:
    """One domain's data and its features (cached in the feature store): (dataset, feature set, backbone)."""
    from transferkit.features import extract_features

    ds = data.load(labels)
    bb = bb if bb is not None else backbone.load(ds.modality)
    fs = extract_features(bb, ds, precision=backbone.precision, progress=sys.stderr.isatty())
    return ds, fs, bb


@app.command(rich_help_panel="Domain adaptation")
def shift(
    source: SourceOpt,
    target: TargetOpt,
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
    permutations: Annotated[int, typer.Option(help="Permutations of the MMD test.")] = 500,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Is the target from another distribution than the source, and how big is the gap? (MMD, proxy A-distance,
    per-class drift and label shift when the source has labels)."""
    from transferkit.adapt.fit import check_class_names
    from transferkit.shift import shift_report

    bb_args = BackboneArgs(model, pooling, image_size, max_length, device, precision, random_init, trust_pickle,
                           trust_remote_code)
    src, fs_s, bb = domain_features(DataArgs(source, text_column, label_column, on_bad_input), "optional", bb_args)
    tgt, fs_t, _ = domain_features(DataArgs(target, text_column, label_column, on_bad_input), "optional", bb_args, bb)
    Xs, Xt = fs_s.features(), fs_t.features()
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
    print_table(f"shift {source} → {target} ({bb.spec}, {len(Xs)} vs {len(Xt)} items)", rep.rows(),
                ["diagnostic", "value", "meaning"])
    if rep.classes:
        print_table(f"per-class drift (target classes from {rep.drift_basis}; drift in source spreads)",
                    rep.classes, ["name", "n_source", "n_target", "drift", "source_share", "target_share_bbse"])
    console.print(rep.verdict, soft_wrap=True)


# what each mode of `adapt` accepts (parameter names); everything else given on the command line is refused
_DATA = {"text_column", "label_column", "on_bad_input", "target", "target_labels", "out", "seed", "as_json"}
_BACKBONE = {"model", "pooling", "image_size", "max_length", "device", "precision", "random_init", "trust_pickle",
             "trust_remote_code"}
MODES = {
    "benchmark": {"benchmark", "seed", "as_json"},
    "features": _DATA | _BACKBONE | {"source", "method", "param", "validator"},
    "end-to-end": _DATA | _BACKBONE | {"source", "method", "param", "epochs", "strategy", "resume", "source_run",
                                       "keep_adapted"},
    "source-free": _DATA | {"source_run", "method", "param", "epochs", "device", "trust_pickle", "keep_adapted"},
}
_FLAGS = {"as_json": "--json"}


def _mode(method: str, benchmark: str | None) -> str:
    from transferkit.adapt.end_to_end import END_TO_END
    from transferkit.adapt.source_free import SOURCE_FREE

    if benchmark is not None:
        return "benchmark"
    if method in END_TO_END:
        return "end-to-end"
    if method in SOURCE_FREE:
        return "source-free"
    return "features"


def _refuse_others(ctx: typer.Context, mode: str, method: str) -> None:
    extra = sorted(given(ctx) - MODES[mode])
    if mode == "source-free" and method == "adabn" and "epochs" in given(ctx):
        extra.append("epochs")  # AdaBN trains nothing: no epochs
    if mode == "features" and method != "auto" and "validator" in given(ctx):
        extra.append("validator")  # a named method is not chosen by a validator
    if extra:
        flags = ", ".join(_FLAGS.get(n, "--" + n.replace("_", "-")) for n in extra)
        what = {"benchmark": "--benchmark", "features": f"--method {method} (feature-level)",
                "end-to-end": f"--method {method} (end to end)",
                "source-free": f"--method {method} (source-free: the --source-run defines the backbone)"}[mode]
        raise TransferkitError(f"{flags} {'does' if len(extra) == 1 else 'do'} not apply to {what}: drop "
                               f"{'it' if len(extra) == 1 else 'them'}")


@app.command(rich_help_panel="Domain adaptation")
def adapt(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option("--source", help="Labelled source domain: image folder, table or "
                                               "bundled:NAME.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Unlabelled target domain (labels, if any, are "
                                               "ignored unless --target-labels).")] = None,
    method: Annotated[str, typer.Option(help="auto, source-only, coral, sa, source-only-mlp, mmd, dann, cdan, "
                                        "cdan+e, mcc, self-training (frozen-backbone features); dann-e2e, "
                                        "cdan-e2e, mmd-e2e (end-to-end: fine-tune the backbone too); adabn, tent, shot "
                                        "(source-free: adapt the fine-tuned --source-run's network).")] = "auto",
    source_run: Annotated[Path | None, typer.Option("--source-run", help="adabn/tent/shot: a finished `transferkit "
                                                    "finetune` run folder to adapt (no source data needed); "
                                                    "*-e2e: the unadapted run (fine-tuned on --source) that the "
                                                    "validators compare the adapted one with.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Setting NAME=VALUE (repeatable): a feature-level method's hyperparameters (tradeoff=0.3), "
        "an end-to-end run's fine-tuning settings and domain_tradeoff, or a source-free method's lr, beta, "
        "recentre, batch_size.")] = None,
    validator: Annotated[str, typer.Option(help="Unsupervised validator that --method auto chooses by: auto, "
                                           "source-acc, entropy, im, bnm, classami, snd, dev or devn (every one is "
                                           "computed and shown).")] = "auto",
    target_labels: TargetLabelsOpt = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Model folder to write.")] = None,
    benchmark: Annotated[str | None, typer.Option(help="Run a bundled benchmark instead: digits or sentiment.")] = None,
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
    seed: SeedOpt = 0,
    epochs: Annotated[int | None, typer.Option(help="*-e2e: passes over the source (default 3); tent/shot: passes "
                                               "over the target (default 1 / 3).")] = None,
    strategy: Annotated[str | None, typer.Option(help="*-e2e: full (default), last-k, gradual or lora.")] = None,
    resume: Annotated[bool, typer.Option(help="*-e2e: continue the unfinished run in --out.")] = False,
    keep_adapted: Annotated[bool, typer.Option(help="adabn/tent/shot, *-e2e with --source-run: write the adapted "
                                               "model even when the validators expect adaptation to hurt (by "
                                               "default the unadapted source model is written then, and the reason "
                                               "printed).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Adapt a classifier from a labelled source to an unlabelled target domain (features, end to end, or
    source-free)."""
    mode = _mode(method, benchmark)
    _refuse_others(ctx, mode, method)
    bb_args = BackboneArgs(model, pooling, image_size, max_length, device, precision, random_init, trust_pickle,
                           trust_remote_code)
    if mode == "benchmark":
        _benchmark(benchmark, seed, as_json)
        return
    if target is None:
        raise TransferkitError(f"--method {method} needs --target DATA (the unlabelled target domain)")
    tgt = DataArgs(target, text_column, label_column, on_bad_input)
    if mode == "source-free":
        _source_free(method, source_run, tgt, out, target_labels, seed, epochs, param or [], device, trust_pickle,
                     as_json, keep_adapted)
        return
    if source is None:
        raise TransferkitError(f"--method {method} needs --source DATA (the labelled source domain)")
    src = DataArgs(source, text_column, label_column, on_bad_input)
    if mode == "end-to-end":
        _end_to_end(method, src, tgt, bb_args, out, target_labels, seed, epochs, strategy, param or [], resume,
                    as_json, source_run, keep_adapted)
    else:
        _features(method, src, tgt, bb_args, out, target_labels, seed, param or [], validator, as_json)


def _benchmark(benchmark: str, seed: int, as_json: bool) -> None:
    from transferkit.adapt.benchmark import run_benchmark, table_rows

    res = run_benchmark(benchmark, seed=seed, progress=sys.stderr.isatty(), log=log)
    if as_json:
        console.print_json(json.dumps(res, default=str))
        return
    print_table(f"adapt benchmark {benchmark}: target accuracy (held-out target half)", table_rows(res),
                ["task", "method", "target_acc", "vs_source_only", "wall_s"])
    print_table("validators over the tasks: how often the pick was the best by target labels, mean regret, mean "
                "target accuracy of the picks (@before: source items through the target's map, as before the fix)",
                [{"validator": v, **row} for v, row in res["validators"].items()],
                ["validator", "pick_rate", "mean_regret", "mean_target_accuracy"])


def _target_labels(tgt_ds: Any, target: str, source_classes: list[str]) -> Any:
    """The target's labels for scoring (only with --target-labels), checked to name the source's classes."""
    from transferkit.adapt import check_class_names

    if tgt_ds.task != "classification":
        raise TransferkitError(f"--target-labels given but target {target} has no class labels")
    check_class_names(list(source_classes), tgt_ds.class_names)
    return tgt_ds.labels


def _features(method: str, src: DataArgs, tgt: DataArgs, bb_args: BackboneArgs, out: Path | None,
              target_labels: bool, seed: int, params: list[str], validator: str, as_json: bool) -> None:
    """Feature-level adaptation: features of both domains (cached), a method (or one chosen by a validator)."""
    from transferkit.adapt import adapt_features, parse_hyperparameters, save_run
    from transferkit.adapt.fit import METHODS
    from transferkit.model import backbone_record

    if method != "auto" and method not in METHODS:
        raise TransferkitError(f"unknown adaptation method {method!r}: use auto, {', '.join(METHODS)}, dann-e2e, "
                               "cdan-e2e, mmd-e2e, adabn, tent or shot")
    if method == "auto" and params:
        raise TransferkitError("--method auto chooses the hyperparameters itself: drop --param or name a method")
    hp = parse_hyperparameters(method, params) if method != "auto" else {}
    src_ds, fs_s, bb = domain_features(src, "required", bb_args)
    tgt_ds, fs_t, _ = domain_features(tgt, "optional" if target_labels else "none", bb_args, bb)
    yt = _target_labels(tgt_ds, tgt.data, list(src_ds.class_names)) if target_labels else None
    if src_ds.task != "classification":
        raise TransferkitError(f"source {src.data} has regression targets: adaptation here adapts classifiers")
    res = adapt_features(fs_s.features(), src_ds.labels, fs_t.features(), list(src_ds.class_names), method=method,
                         hyperparameters=hp, validator=validator, seed=seed, yt_eval=yt, log=log)
    if out is not None:
        save_run(out, res.model, backbone=backbone_record(bb), method=res.method,
                 hyperparameters=res.hyperparameters, metrics=res.metrics, precision=fs_s.meta["precision"],
                 data={"name": src_ds.name, "fingerprint": src_ds.fingerprint, "n": len(src_ds), "source": src.data,
                       "target": tgt.data, "target_fingerprint": tgt_ds.fingerprint, "target_n": len(tgt_ds)},
                 extra={"validator": res.validator, "seed": seed, "candidates": res.candidates,
                        "validator_agreement": res.agreement},
                 cost={"wall_time_s": round(float(res.metrics.get("fit_s") or sum(r.get("fit_s", 0.0) for r in
                                                                                   res.candidates))
                                            + sum(float(f.meta.get("extract_seconds") or 0.0) for f in (fs_s, fs_t)),
                                            3)})
    if as_json:
        console.print_json(json.dumps({"method": res.method, "hyperparameters": res.hyperparameters,
                                       "metrics": res.metrics, "candidates": res.candidates,
                                       "validator": res.validator, "validator_agreement": res.agreement},
                                      default=str))
        return
    if res.candidates:
        from transferkit.adapt.validate import VALIDATORS

        cols = ["method", "hyperparameters", *VALIDATORS]
        cols += ["target_accuracy"] if yt is not None else []
        print_table(f"candidates (chosen by {res.validator}, without target labels; every validator shown)", [
            {**r, "hyperparameters": ", ".join(f"{k}={v}" for k, v in r["hyperparameters"].items()),
             "method": r["method"] + (" ←" if r["chosen"] else "")} for r in res.candidates], cols)
    console.print(f"{res.method} {res.hyperparameters}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()
                                                                       if isinstance(v, float))
                  + (f"; model written to {out}" if out is not None else ""), soft_wrap=True)


#: the --param settings of each source-free method (AdaBN trains nothing; SHOT keeps the source statistics)
SOURCE_FREE_PARAMS = {"adabn": {"recentre": bool, "batch_size": int},
                      "tent": {"lr": float, "recentre": bool, "batch_size": int},
                      "shot": {"lr": float, "beta": float, "batch_size": int}}


def _source_free(method: str, source_run: Path | None, tgt: DataArgs, out: Path | None, target_labels: bool,
                 seed: int, epochs: int | None, params: list[str], device: str, trust_pickle: bool,
                 as_json: bool, keep_adapted: bool = False) -> None:
    """adapt --method adabn|tent|shot: a fine-tuned run + unlabelled target items → a new model folder."""
    from transferkit.adapt.source_free import adapt_run
    from transferkit.finetune.checkpoint import RunFolder
    from transferkit.params import parse_params

    if source_run is None or out is None:
        raise TransferkitError(f"--method {method} needs --source-run RUN (a finished `transferkit finetune` "
                               "folder), --target DATA and --out FOLDER")
    hp = parse_params(params, SOURCE_FREE_PARAMS[method], what=f"--method {method}")
    tgt_ds = tgt.load("optional" if target_labels else "none")
    yt = _target_labels(tgt_ds, tgt.data, RunFolder(source_run).read().get("class_names") or []) \
        if target_labels else None
    rec = adapt_run(method, source_run, tgt_ds, out, seed=seed, target_labels=yt, epochs=epochs, device=device,
                    trust_pickle=trust_pickle, keep_adapted=keep_adapted, **hp)
    if as_json:
        console.print_json(json.dumps(rec))
        return
    _print_verdict(method, rec)
    console.print(f"{method}: " + ", ".join(f"{k} {x:.4f}" for k, x in rec.get("metrics", {}).items()
                                            if isinstance(x, float))
                  + f" ({rec['fit_s']:.1f} s); {rec['kept']} model written to {out}", soft_wrap=True)


def _print_verdict(method: str, rec: dict) -> None:
    """The target-only validators of the unadapted and the adapted network, and what their judge decided."""
    v = rec["validators"]
    rows = [{"validator": k, "unadapted": v["before"][k], "adapted": v["after"][k]} for k in v["before"]]
    print_table(f"target-only validators before and after {method} (on {v['items']} target items)", rows,
                ["validator", "unadapted", "adapted"])
    if v["expected"] == "hurt":
        console.print(f"the validators expect {method} to hurt ({v['judge']} {v['before'][v['judge']]:.4f} -> "
                      f"{v['after'][v['judge']]:.4f}): "
                      + ("the adapted model was written anyway (--keep-adapted)" if rec["kept"] == "adapted" else
                         "the unadapted source model was written"
                         + (f" (the adapted run is kept in {rec['adapted_run']})" if rec.get("adapted_run") else "")
                         + "; --keep-adapted writes the adapted one"),
                      soft_wrap=True)


def _end_to_end(method: str, src: DataArgs, tgt: DataArgs, bb_args: BackboneArgs, out: Path | None,
                target_labels: bool, seed: int, epochs: int | None, strategy: str | None, params: list[str],
                resume: bool, as_json: bool, source_run: Path | None = None, keep_adapted: bool = False) -> None:
    """adapt --method dann-e2e|cdan-e2e|mmd-e2e: fine-tune on --source with a domain loss on --target.

    --param NAME=VALUE sets any fine-tuning setting (batch_size, lr, last_k, …) and domain_tradeoff."""
    from transferkit.adapt.end_to_end import adapt_end_to_end
    from transferkit.finetune import FinetuneConfig
    from transferkit.params import dataclass_schema, parse_params, split_params

    if out is None:
        raise TransferkitError(f"--method {method} needs --source DATA (labelled), --target DATA and --out FOLDER")
    if keep_adapted and source_run is None:
        raise TransferkitError(f"--keep-adapted keeps the adapted model against the validators' verdict, which "
                               f"--method {method} only gives with --source-run RUN (the unadapted run)")
    flags = {"seed": "--seed", "precision": "--precision", "epochs": "--epochs", "strategy": "--strategy"}
    schema = {**{k: v for k, v in dataclass_schema(FinetuneConfig).items() if k not in flags}, "domain_tradeoff": float}
    for name in split_params(params):
        if name in flags:
            raise TransferkitError(f"--param {name}: set it with {flags[name]}")
    opts = parse_params(params, schema, what=f"--method {method} (fine-tuning settings and domain_tradeoff)")
    tradeoff = opts.pop("domain_tradeoff", 1.0)
    opts.update({"seed": seed, "precision": bb_args.precision})
    opts.update({k: v for k, v in (("epochs", epochs), ("strategy", strategy)) if v is not None})
    config = FinetuneConfig(**opts)
    src_ds = src.load("required")
    tgt_ds = tgt.load("optional" if target_labels else "none")
    yt = _target_labels(tgt_ds, tgt.data, list(src_ds.class_names)) if target_labels else None
    res = adapt_end_to_end(method, bb_args.load(src_ds.modality), src_ds, tgt_ds, out, config, tradeoff=tradeoff,
                           target_labels=yt, backbone_options=bb_args.build_options(), resume=resume,
                           progress=sys.stderr.isatty(), log=log, device=bb_args.device, reference_run=source_run,
                           keep_adapted=keep_adapted)
    if not is_main_process():  # under torchrun / accelerate launch only the main process reports
        return
    if as_json:
        console.print_json(json.dumps(res.info, default=str))
        return
    rec = res.info.get("adaptation", {})
    if "validators" in rec:
        _print_verdict(method, rec)
    else:
        console.print(f"no --source-run: the validators did not compare {method} with an unadapted model",
                      soft_wrap=True)
    acc = rec.get("metrics", {}).get("target_accuracy")
    console.print(f"{method}: source " + ", ".join(f"{part} accuracy {m.get('accuracy', float('nan')):.4f}"
                                                   for part, m in (res.info.get("metrics") or res.metrics).items())
                  + (f", target accuracy {acc:.4f}" if acc is not None else "")
                  + f" ({res.steps} steps, {res.wall_time_s:.1f} s); {rec.get('kept', 'adapted')} model written to "
                  f"{out}", soft_wrap=True)
