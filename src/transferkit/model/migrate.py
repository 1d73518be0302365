"""Model folders written before model.json existed, read as they are: a fine-tuning (or pretraining,
end-to-end or source-free adaptation) run folder, a feature-level adaptation run, and a saved probe head.
Nothing is rewritten on disk; the facts are recovered in memory."""

from __future__ import annotations

from pathlib import Path

from transferkit.backbones.registry import BUILD_OPTIONS, build_options
from transferkit.io import read_json
from transferkit.model.backbone import build_from_identity, record_from_features
from transferkit.model.info import ModelFolderError, ModelInfo

SOURCE_FREE = ("adabn", "tent", "shot")


def migrate(folder: Path) -> ModelInfo | None:
    """The ModelInfo of an earlier version's folder, or None when `folder` is none of those."""
    if (folder / "run.json").is_file():
        try:
            doc = read_json(folder / "run.json")
        except ValueError as e:
            raise ModelFolderError(f"{folder / 'run.json'} is not valid JSON ({e}): the folder is damaged") from None
        if isinstance(doc, dict) and doc.get("kind") == "finetune":
            return _finetune(folder, doc)
        if isinstance(doc, dict) and doc.get("kind") == "adapt-features":
            return _adapt_features(doc)
        return None
    if (folder / "head.json").is_file():
        return _probe_head(folder)
    return None


def finetune_kind(doc: dict) -> str:
    """finetune, adapt-e2e or source-free, from a run.json."""
    adaptation = doc.get("adaptation") or {}
    if adaptation.get("method") in SOURCE_FREE:
        return "source-free"
    if (doc.get("terms") or {}).get("domain") or (doc.get("config") or {}).get("domain_loss"):
        return "adapt-e2e"
    return "finetune"


def finetune_info(doc: dict) -> ModelInfo:
    """A finished run.json as model facts (also what the loop writes to model.json at the end of a run)."""
    b = doc["backbone"]
    build = build_options(**{k: b[k] for k in BUILD_OPTIONS if k in b})
    record = {"spec": b["spec"], "build": build, "weights": b.get("base_digest"), "modality": b.get("modality"),
              "feature_dim": b.get("feature_dim")}
    if b.get("preprocessing"):
        record["preprocessing"] = b["preprocessing"]
    metrics = dict(doc.get("metrics") or {})
    adaptation = doc.get("adaptation") or {}
    if adaptation.get("method") in SOURCE_FREE and "source_run_metrics" not in adaptation:
        metrics = {}  # an earlier version copied the source run's (pre-adaptation) scores here: not this model's
    target = (adaptation.get("metrics") or {}).get("target_accuracy")
    if target is not None:
        metrics["target"] = {"accuracy": target}
    cfg = doc.get("config") or {}
    data = doc.get("data") or {}
    training = {"strategy": cfg.get("strategy"), "epochs": cfg.get("epochs"), "steps": doc.get("steps"),
                "best_epoch": doc.get("best_epoch"), "stopped": doc.get("stopped"), "processes": doc.get("processes")}
    if doc.get("adaptation"):
        training["adaptation"] = doc["adaptation"].get("method")
    return ModelInfo(
        kind=finetune_kind(doc), task=doc["task"], class_names=list(doc.get("class_names") or []), backbone=record,
        precision="bf16" if doc.get("precision") == "bf16" else "fp32", modality=b.get("modality") or "image",
        metrics=metrics,
        data={"name": data.get("name"), "fingerprint": data.get("fingerprint"), "n": data.get("n"),
              "source": data.get("spec"), "sample": data.get("sample"), "text_column": data.get("text_column"),
              "label_column": data.get("label_column"),
              "split": {"train": data.get("train"), "val": data.get("val"), "test": data.get("test"),
                        "seed": cfg.get("seed"), "val_fraction": cfg.get("val"), "test_fraction": cfg.get("test")}},
        cost={"wall_time_s": doc.get("wall_time_s"), "peak_memory_mb": doc.get("peak_memory_mb"),
              "trainable_parameters": doc.get("trainable_parameters"),
              "total_parameters": doc.get("total_parameters")},
        training={k: v for k, v in training.items() if v is not None})


def _finetune(folder: Path, doc: dict) -> ModelInfo:
    if doc.get("status") != "complete":
        raise ModelFolderError(f"{folder} holds an unfinished run: finish it with `transferkit finetune ... --out "
                               f"{folder} --resume` first")
    try:
        return finetune_info(doc)
    except (KeyError, TypeError) as e:
        raise ModelFolderError(f"{folder / 'run.json'} lacks {e}: the run folder is damaged") from None


def adapt_metrics(flat: dict) -> tuple[dict, dict]:
    """(the scores by split, the rest) from the flat metrics dict of feature-level adaptation or compare:
    target_* -> target, source_val_accuracy -> source_val, accuracy/macro_f1 -> test; the rest (validator
    scores, fit time) is returned apart."""
    metrics: dict = {}
    rest = {}
    for k, v in flat.items():
        if k.startswith("target_"):
            metrics.setdefault("target", {})[k.removeprefix("target_")] = v
        elif k == "source_val_accuracy":
            metrics.setdefault("source_val", {})["accuracy"] = v
        elif k in ("accuracy", "macro_f1"):
            metrics.setdefault("test", {})[k] = v
        else:
            rest[k] = v
    return metrics, rest


def _adapt_features(doc: dict) -> ModelInfo:
    """An adaptation run of an earlier version. Its features were extracted with `auto` precision, which that
    version resolved to fp32 on every CPU (its bf16 probe read attributes torch no longer has); on a CUDA GPU with
    bf16 it was bf16, which the run did not record: such a folder predicts in fp32 here (pass --precision bf16)."""
    b = doc.get("backbone") or {}
    identity = {"spec": b.get("spec"), "pooling": b.get("pooling"), "pretrained": b.get("pretrained", True),
                "preprocessing": b.get("preprocessing") or {}}
    record = {"spec": b.get("spec"), "build": build_from_identity(identity), "weights": b.get("weights"),
              "feature_dim": b.get("feature_dim"), "preprocessing": b.get("preprocessing"),
              "modality": (b.get("preprocessing") or {}).get("kind", "image")}
    metrics, selection = adapt_metrics(doc.get("metrics") or {})
    return ModelInfo(
        kind="adapt-features", task="classification", class_names=list(doc.get("class_names") or []),
        backbone=record, precision=doc.get("precision", "fp32"), modality=record["modality"], metrics=metrics,
        data={"name": doc.get("source"), "target": doc.get("target")},
        training={"method": doc.get("method"), "hyperparameters": doc.get("hyperparameters"),
                  "validator": doc.get("validator"), "predictor": doc.get("predictor"), **selection})


def _probe_head(folder: Path) -> ModelInfo:
    try:
        head = read_json(folder / "head.json")
        probe = read_json(folder / "probe.json") if (folder / "probe.json").is_file() else {}
    except ValueError as e:
        raise ModelFolderError(f"{folder} holds a damaged head ({e}): run `transferkit probe FEATURES --out "
                               "FOLDER` again") from None
    feats = Path(probe.get("features", ""))
    if not probe or not (feats / "meta.json").is_file():
        raise ModelFolderError(f"{folder} holds a head saved by an earlier version, and the feature folder it was "
                               f"fitted on ({probe.get('features', 'unknown')}) is gone, so its backbone cannot be "
                               "told: run `transferkit probe FEATURES --out FOLDER` again")
    meta = read_json(feats / "meta.json")
    record = record_from_features(meta)
    summary = (head.get("head") or {})
    best = next((r for r in probe.get("heads", []) if r.get("head") == summary.get("name")), {})
    test = {k: v for k, v in best.items() if k in ("accuracy", "macro_f1", "r2", "mae")}
    return ModelInfo(
        kind="probe", task=summary.get("task", meta["data"].get("task", "classification")),
        class_names=list(probe.get("class_names") or meta["data"].get("class_names") or []), backbone=record,
        precision=meta.get("precision", "fp32"), modality=record["modality"],
        metrics={"val": {summary.get("metric", "score"): summary.get("val_score")}, **({"test": test} if test else {})},
        data={"name": meta["data"].get("name"), "fingerprint": meta["data"].get("fingerprint"),
              "n": meta.get("n_items")},
        training={"head": summary.get("name"), "head_state": head, "weights_file": "arrays.safetensors"})
