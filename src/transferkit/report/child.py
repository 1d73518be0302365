"""One strategy of a comparison, run in its own process: `python -m transferkit.report.child TASK.json`.

A fresh process per strategy makes its peak memory its own (read from its own VmHWM) and keeps a crash
from taking the other strategies down. The child writes RESULT.json atomically: metrics on the
shared test split, its own time, trainable parameters, artefacts, or the error that stopped it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data import Split
from transferkit.io import read_arrays, read_json, write_arrays, write_json
from transferkit.runtime import peak_rss_mb


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the compare process dies (a SIGKILLed parent leaves no orphan)."""
    parent = int(os.environ.get("TRANSFERKIT_COMPARE_PARENT", "0"))
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent and os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(143)


def _scores(y_true: np.ndarray, y_pred: np.ndarray, prefix: str = "") -> dict[str, float]:
    from transferkit.heads.metrics import score_all

    return {prefix + k: v for k, v in score_all("classification", y_true, y_pred).items()}


def _target(metrics: dict, yt: np.ndarray | None, predict) -> dict:
    """With target labels: add target metrics; return the target predictions for the confusion matrix."""
    if yt is None:
        return {}
    pred = predict()
    metrics.update(_scores(yt, pred, "target_"))
    return {"target_predictions": pred, "target_y_true": yt}


def _probabilities(run_dir: Path, val: np.ndarray | None, test: np.ndarray) -> dict:
    """Save a strategy's class probabilities on the validation and test splits (what an ensemble is selected
    from and scored on); the artefact entry that names them."""
    arrays = {"test": np.asarray(test, dtype=np.float64)}
    if val is not None:
        arrays["val"] = np.asarray(val, dtype=np.float64)
    write_arrays(run_dir / "proba.safetensors", arrays)
    return {"proba": str(run_dir / "proba.safetensors")}


def _split(task: dict) -> Split:
    a = read_arrays(task["split"])
    return Split(a["train"], a["val"], a["test"])


def _features(task: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    from transferkit.features import FeatureSet

    src = FeatureSet.open(task["features"]["source"])
    X, y = src.features(), np.asarray(src.labels())
    Xt = yt = None
    if task["features"].get("target"):
        tgt = FeatureSet.open(task["features"]["target"])
        Xt = tgt.features()
        if task["settings"]["target_labels"]:
            yt = np.asarray(tgt.labels())
    return X, y, Xt, yt


def _inputs(task: dict) -> tuple:
    """(settings, the comparison's inputs) as the parent loaded them; refused when the data changed meanwhile."""
    from transferkit.report.inputs import CompareSettings, load_inputs

    s = CompareSettings.from_dict(task["settings"])
    inputs = load_inputs(s)
    if inputs.source.fingerprint != task["fingerprint"]:
        raise RuntimeError(f"the data of {s.data} changed while compare ran (fingerprint differs): rerun compare")
    return s, inputs


def _source(s: dict) -> dict:
    """Where a comparison's data came from, for its model folders (so export can find their test split again)."""
    return {"source": s["data"], "sample": s.get("sample"), "text_column": s.get("text_column"),
            "label_column": s.get("label_column")}


def run_probe(task: dict, run_dir: Path) -> dict:
    """A head on cached frozen features, hyperparameters chosen on the validation split; written as a model
    folder (the backbone by reference + the head) that predict, export and serve read."""
    from transferkit.features import FeatureSet
    from transferkit.heads.probe import fit_and_score, save_probe_of
    from transferkit.heads.probe_model import NOT_FITTED

    if task["strategy"]["method"] == "hybrid":
        return run_hybrid(task, run_dir)
    X, y, Xt, yt = _features(task)
    split, s = _split(task), task["settings"]
    rows, best = fit_and_score(task["strategy"]["method"], X, y, split, "classification", s["seed"])
    row = next(r for r in rows if r["head"] == best.name)
    pred = best.predict(X[split.test])
    metrics = {**_scores(y[split.test], pred), **_scores(y[split.val], best.predict(X[split.val]), "val_")}
    out = _target(metrics, yt, lambda: best.predict(Xt))
    target = _folder_metrics(metrics).get("target")
    save_probe_of(FeatureSet.open(task["features"]["source"]), best, rows, split, run_dir / "model", seed=s["seed"],
                  val=s["val"], test=s["test"], metrics_extra={"target": target} if target else None,
                  training={"strategy": task["strategy"]["name"]}, source=_source(s))
    arrays, _ = best.predictor.state()
    from transferkit.heads.probe_model import head_outputs
    from transferkit.model import read_info

    # probabilities of the folder's own predictor: the head's, or a margin head's through its validation temperature
    temp, k = read_info(run_dir / "model").training.get("temperature"), len(task["class_names"])
    proba = (_probabilities(run_dir, head_outputs(best, X[split.val], k, temp), head_outputs(best, X[split.test], k,
                                                                                            temp))
             if best.has_proba or temp is not None else {})
    return {**out, "metrics": metrics, "fit_s": float(sum(r["fit_s"] for r in rows)),
            "chosen": f"{best.name} {row['chosen']}",
            "trainable_parameters": int(sum(np.asarray(v).size for k, v in arrays.items() if k not in NOT_FITTED)),
            "predictions": pred, "y_true": y[split.test], "artefacts": {"model": str(run_dir / "model"), **proba}}


def run_adapt(task: dict, run_dir: Path) -> dict:
    """A feature-level adaptation method: labelled source train split + unlabelled target features."""
    from transferkit.adapt import adapt_features, fit_method, save_run
    from transferkit.adapt.fit import DEFAULTS
    from transferkit.features import FeatureSet

    X, y, Xt, yt = _features(task)
    split, seed, method = _split(task), task["settings"]["seed"], task["strategy"]["method"]
    names = list(task["class_names"])
    t0 = time.perf_counter()
    if method == "auto":  # chosen by the unsupervised validator; it splits train+val itself
        trval = np.sort(np.concatenate([split.train, split.val]))
        res = adapt_features(X[trval], y[trval], Xt, names, method="auto", seed=seed)
        model, chosen, hp = res.model, res.method, res.hyperparameters
    else:
        model = fit_method(method, X[split.train], y[split.train], Xt, names, seed=seed)
        chosen, hp = method, dict(DEFAULTS.get(method, {}))
    fit_s = time.perf_counter() - t0
    pred = model.source_predict(X[split.test])  # source items, through the map the classifier was trained on
    metrics = _scores(y[split.test], pred)
    held_out = method != "auto"  # "auto" trains on train+val, so validation is not held out from it
    if held_out:
        metrics.update(_scores(y[split.val], model.source_predict(X[split.val]), "val_"))
    out = _target(metrics, yt, lambda: model.predict(Xt))
    src = FeatureSet.open(task["features"]["source"])
    save_run(run_dir / "model", model, backbone=task["backbone_record"], method=chosen, hyperparameters=hp,
             metrics=metrics, precision=src.meta.get("precision", "fp32"),
             data={"name": src.meta["data"].get("name"), "fingerprint": src.meta["data"].get("fingerprint"),
                   "n": src.n_items, **_source(task["settings"]), "target": task["settings"]["target"],
                   "split": {"seed": seed, "val_fraction": task["settings"]["val"],
                             "test_fraction": task["settings"]["test"]}},
             extra={"seed": seed, "strategy": task["strategy"]["name"]},
             cost={"wall_time_s": round(fit_s + float(src.meta.get("extract_seconds") or 0.0), 3)})
    fitted = sum(np.asarray(v).size for k, v in model.arrays.items() if k not in ("mean", "std"))
    proba = _probabilities(run_dir, model.source_predict_proba(X[split.val]) if held_out else None,
                           model.source_predict_proba(X[split.test]))
    return {**out, "metrics": metrics, "fit_s": fit_s, "chosen": f"{chosen} {hp}" if hp else chosen,
            "trainable_parameters": int(fitted), "predictions": pred, "y_true": y[split.test],
            "artefacts": {"model": str(run_dir / "model"), "run": str(run_dir / "model"), **proba}}


def run_finetune(task: dict, run_dir: Path) -> dict:
    """Fine-tune the backbone with one strategy on the same split (resuming an interrupted attempt)."""
    import shutil

    import torch

    from transferkit.finetune import FinetuneConfig, FinetuneError, finetune, load_run
    from transferkit.report.inputs import build_options, load_backbone_for

    s, inputs = _inputs(task)
    config = FinetuneConfig(**{**task["options"], "strategy": task["strategy"]["method"], "val": s.val,
                               "test": s.test, "seed": s.seed, "precision": s.precision,
                               "time_limit_s": task.get("time_limit_s"), "stop_below": task.get("stop_below")})
    rebuild = build_options(s)
    folder = run_dir / "run"

    def train(resume: bool):
        return finetune(load_backbone_for(s, inputs.spec, task.get("trust")), inputs.source, folder, config,
                        resume=resume, device=s.device,
                        progress=False, log=lambda m: print(m, flush=True),
                        backbone_options={"pretrained": s.pretrained, **rebuild})

    if folder.exists():
        try:
            result = train(True)
        except FinetuneError as e:  # a run from other settings: start it again
            print(f"cannot resume {folder} ({e}); starting it again", flush=True)
            shutil.rmtree(folder)
            result = train(False)
    else:
        result = train(False)
    if result.info["data"]["test"] != len(inputs.split.test):
        raise RuntimeError("the fine-tuning run's test split differs from the comparison's")
    fitted = load_run(folder)
    test = inputs.source.subset(inputs.split.test)
    test_proba = fitted.predict_proba(test)
    pred = test_proba.argmax(1)
    metrics = _scores(np.asarray(test.labels), pred)
    val_proba = None
    if len(inputs.split.val):
        val = inputs.source.subset(inputs.split.val)
        val_proba = fitted.predict_proba(val)
        metrics.update(_scores(np.asarray(val.labels), val_proba.argmax(1), "val_"))
    out = _target(metrics, inputs.target_labels, lambda: fitted.predict(inputs.target))
    stopped = result.info.get("stopped")
    searched = result.info.get("lr_search")
    chosen = (f"lr {searched['chosen']:g} (searched), " if searched else "") + f"{result.steps} steps" + \
        (f", best epoch {result.best_epoch:g}" if result.best_epoch else "") + (f" ({stopped})" if stopped else "")
    return {**out, "metrics": metrics, "fit_s": result.wall_time_s, "chosen": chosen, "stopped": stopped,
            "trainable_parameters": result.trainable_parameters,
            "total_parameters": result.total_parameters, "history": result.history, "predictions": pred,
            # on a GPU the loop reports torch's peak allocated GPU memory; on CPU it is the RSS VmHWM already has
            "gpu_peak_memory_mb": result.peak_memory_mb if torch.cuda.is_available() else None,
            "y_true": np.asarray(test.labels),
            "artefacts": {"model": str(folder), "run": str(folder), "history": str(folder / "history.json"),
                          **_probabilities(run_dir, val_proba, test_proba)}}


def _folder_metrics(metrics: dict) -> dict:
    """A result's flat metrics (accuracy, val_accuracy, target_accuracy, …) as model.json's {"val", "test",
    "target"} parts."""
    parts: dict[str, dict] = {}
    for k, v in metrics.items():
        part = next((p for p in ("val", "target") if k.startswith(p + "_")), "test")
        parts.setdefault(part, {})[k.removeprefix(part + "_")] = v
    return {p: parts[p] for p in ("val", "test", "target") if p in parts}


def _folder_data(ds: Any, split: Split, settings: dict) -> dict:
    """model.json's data record of a strategy trained on `ds` with the comparison's `split`."""
    return {"name": ds.name, "fingerprint": ds.fingerprint, "n": len(ds), **_source(settings),
            "split": {"train": len(split.train), "val": len(split.val), "test": len(split.test),
                      "seed": settings["seed"], "val_fraction": settings["val"], "test_fraction": settings["test"]}}


def run_hybrid(task: dict, run_dir: Path) -> dict:
    """probe:hybrid: TF-IDF of the raw texts beside their cached frozen embeddings in one linear model, written as
    a hybrid model folder (the encoder by reference + the TF-IDF vocabulary and the linear model)."""
    from transferkit.baselines import fit_hybrid, save_baseline
    from transferkit.features import FeatureSet

    s, inputs = _inputs(task)
    X, y, Xt, yt = _features(task)
    ds, split = inputs.source, inputs.split
    fitted = fit_hybrid(ds, split, X, seed=s.seed)
    feat = fitted.featurizer

    def rows(idx: np.ndarray) -> np.ndarray:
        return fitted.proba_from_features(feat.combine(feat.tfidf.transform([ds.items[i] for i in idx]), X[idx]))

    test_proba, val_proba = rows(split.test), rows(split.val)
    pred = test_proba.argmax(1)
    metrics = {**_scores(y[split.test], pred), **_scores(y[split.val], val_proba.argmax(1), "val_")}
    out = _target(metrics, yt, lambda: fitted.proba_from_features(
        feat.combine(feat.tfidf.transform(list(inputs.target.items)), Xt)).argmax(1))
    fs = FeatureSet.open(task["features"]["source"])
    folder = save_baseline(
        run_dir / "model", fitted, class_names=list(ds.class_names), backbone=task["backbone_record"],
        precision=fs.meta.get("precision", "fp32"),
        metrics=_folder_metrics(metrics), data=_folder_data(ds, split, task["settings"]),
        cost={"wall_time_s": round(fitted.fit_s + float(fs.meta.get("extract_seconds") or 0.0), 3),
              "fit_time_s": round(fitted.fit_s, 3), "peak_memory_mb": round(peak_rss_mb(), 1)},
        training={"strategy": task["strategy"]["name"]})
    return {**out, "metrics": metrics, "fit_s": fitted.fit_s, "chosen": fitted.chosen,
            "trainable_parameters": fitted.trainable_parameters, "predictions": pred,
            "y_true": y[split.test], "artefacts": {"model": str(folder), **_probabilities(run_dir, val_proba,
                                                                                              test_proba)}}


def run_baseline(task: dict, run_dir: Path) -> dict:
    """The strong simple baseline on the raw items (TF-IDF or pixels + a linear model, C on validation), written
    as a baseline model folder."""
    from transferkit.baselines import fit_baseline, save_baseline

    s, inputs = _inputs(task)
    ds, split = inputs.source, inputs.split
    fitted = fit_baseline(task["strategy"]["method"], ds, split, seed=s.seed)
    y = np.asarray(ds.labels)
    test_proba = fitted.predict_proba([ds.items[i] for i in split.test])
    val_proba = fitted.predict_proba([ds.items[i] for i in split.val])
    pred = test_proba.argmax(1)
    metrics = {**_scores(y[split.test], pred), **_scores(y[split.val], val_proba.argmax(1), "val_")}
    out = _target(metrics, inputs.target_labels, lambda: fitted.predict(inputs.target.items))
    folder = save_baseline(
        run_dir / "model", fitted, class_names=list(ds.class_names),
        metrics=_folder_metrics(metrics), data=_folder_data(ds, split, task["settings"]),
        cost={"wall_time_s": round(fitted.fit_s, 3), "fit_time_s": round(fitted.fit_s, 3),
              "peak_memory_mb": round(peak_rss_mb(), 1)},
        training={"strategy": task["strategy"]["name"]})
    return {**out, "metrics": metrics, "fit_s": fitted.fit_s, "chosen": fitted.chosen,
            "trainable_parameters": fitted.trainable_parameters, "predictions": pred,
            "y_true": y[split.test], "artefacts": {"model": str(folder), **_probabilities(run_dir, val_proba,
                                                                                              test_proba)}}


def run_ensemble(task: dict, run_dir: Path) -> dict:
    """Greedy ensemble selection (Caruana et al.) over the strategies that finished before it, on their validation
    probabilities; written as an ensemble model folder holding its members."""
    from transferkit.model.ensemble import cross_fitted_accuracy, save_ensemble, select_weights

    members = [m for m in task.get("members") or [] if m.get("proba")]
    probas = [read_arrays(m["proba"]) for m in members]
    members = [m for m, p in zip(members, probas, strict=True) if "val" in p]
    probas = [p for p in probas if "val" in p]
    if len(members) < 2:
        raise RuntimeError(f"an ensemble needs at least two finished strategies with validation probabilities "
                           f"({len(members)} here): list it after them in --strategies")
    s, inputs = _inputs(task)
    y = np.asarray(inputs.source.labels)
    split = inputs.split
    t0 = time.perf_counter()
    weights = select_weights([p["val"] for p in probas], y[split.val])
    val_acc = cross_fitted_accuracy([p["val"] for p in probas], y[split.val], seed=s.seed)
    test_proba = sum(w * p["test"] for w, p in zip(weights, probas, strict=True))
    val_proba = sum(w * p["val"] for w, p in zip(weights, probas, strict=True))
    fit_s = time.perf_counter() - t0
    pred = test_proba.argmax(1)
    # only the cross-fitted validation accuracy: scores of val_proba itself would be measured on the items the
    # weights were chosen on
    metrics = {**_scores(y[split.test], pred), "val_accuracy": val_acc}
    used = [(m, w) for m, w in zip(members, weights, strict=True) if w > 0]
    ds = inputs.source
    save_ensemble(run_dir / "model", [(m["name"], Path(m["model"])) for m in members], weights,
                  class_names=list(ds.class_names), modality=ds.modality,
                  metrics=_folder_metrics(metrics), data=_folder_data(ds, split, task["settings"]),
                  cost={"wall_time_s": round(fit_s + sum(float(m["wall_s"]) for m, _ in used), 3),
                        "trainable_parameters": int(sum(int(m["trainable_parameters"]) for m, _ in used))},
                  training={"strategy": task["strategy"]["name"],
                            "validation_score": "cross-fitted: weights chosen on one half of validation, scored on "
                                                "the other, both ways"})
    return {"metrics": metrics, "fit_s": fit_s, "members_s": sum(float(m["wall_s"]) for m, _ in used),
            "chosen": ", ".join(f"{m['name']} x{w:.2f}" for m, w in used),
            "trainable_parameters": int(sum(int(m["trainable_parameters"]) for m, _ in used)), "predictions": pred,
            "y_true": y[split.test], "artefacts": {"model": str(run_dir / "model"),
                                                   **_probabilities(run_dir, val_proba, test_proba)}}


ROUTES = {"baseline": run_baseline, "ensemble": run_ensemble, "probe": run_probe, "finetune": run_finetune,
          "adapt": run_adapt}


def main(task_file: str) -> int:
    _die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars would fill the log
    except ImportError:
        pass
    task = read_json(task_file)
    run_dir = Path(task["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    code = 0
    try:
        out = ROUTES[task["strategy"]["route"]](task, run_dir)
        pred, y_true = out.pop("predictions"), out.pop("y_true")
        preds = {"y_true": np.asarray(y_true).tolist(), "y_pred": np.asarray(pred).tolist()}
        if "target_predictions" in out:
            preds.update(target_y_true=np.asarray(out.pop("target_y_true")).tolist(),
                         target_y_pred=np.asarray(out.pop("target_predictions")).tolist())
        write_json(run_dir / "predictions.json", preds)
        out["artefacts"]["predictions"] = str(run_dir / "predictions.json")
        rec = {"status": "ok", **out}
    except BaseException as e:  # noqa: BLE001 — every failure is recorded, Ctrl-C included
        traceback.print_exc()
        interrupted = isinstance(e, KeyboardInterrupt) or type(e).__name__ == "Interrupted"
        rec = {"status": "interrupted" if interrupted else "failed",
               "error": f"{type(e).__name__}: {e}".strip().splitlines()[0][:500]}
        code = 130 if interrupted else 1
    rec["wall_s"] = time.perf_counter() - t0
    rec["peak_memory_mb"] = peak_rss_mb()
    write_json(task["result"], rec)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
