"""The baseline model kind: a classical featurizer of raw items (TF-IDF for text, pixels for images) and a linear
classifier, C chosen on validation — the strong simple model every transfer route is measured against, handed
over as a model folder like any other (`predict`, `serve`, `transferkit.load`).

model.safetensors holds the featurizer's arrays ("feat."; a TF-IDF vocabulary as UTF-8 bytes + offsets) and the
classifier's ("clf."); model.json holds their settings. No pickle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.baselines.hybrid import SCALES, HybridFeatures
from transferkit.baselines.pixels import PixelFeatures
from transferkit.baselines.tfidf import TfidfFeatures
from transferkit.errors import TransferkitError
from transferkit.io import read_arrays
from transferkit.model import ModelFolderError, ModelInfo, write_model

#: baseline -> the modality it reads
BASELINES = {"tfidf": "text", "pixels": "image"}
#: linear classifiers tried on TF-IDF features: (family, C)
TEXT_GRID = (("svm", 0.1), ("svm", 0.3), ("svm", 1.0), ("svm", 3.0), ("logreg", 10.0), ("logreg", 100.0))


class BaselineError(TransferkitError):
    """A baseline that does not fit the data (wrong modality, no labels, regression)."""


def baseline_for(modality: str) -> str:
    """The baseline of a modality: tfidf for text, pixels for images."""
    return next(b for b, m in BASELINES.items() if m == modality)


class SparseLinear:
    """scores = X @ coef.T + intercept on (sparse) features; binary models give [0, margin] as two columns."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, family: str, C: float) -> None:
        self.coef, self.intercept = np.ascontiguousarray(coef, np.float64), np.asarray(intercept, np.float64)
        self.classes, self.family, self.C = np.asarray(classes, np.int64), family, float(C)

    @classmethod
    def fit(cls, family: str, C: float, X: Any, y: np.ndarray, seed: int) -> SparseLinear:
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        clf = (LinearSVC(C=C, random_state=seed, max_iter=5000) if family == "svm"
               else LogisticRegression(C=C, max_iter=3000, random_state=seed))
        clf.fit(X, y)
        return cls(clf.coef_, clf.intercept_, clf.classes_, family, C)

    def scores(self, X: Any) -> np.ndarray:
        s = np.asarray(X @ self.coef.T) + self.intercept
        return np.column_stack([np.zeros(len(s)), s[:, 0]]) if s.shape[1] == 1 else s

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        return ({"coef": self.coef, "intercept": self.intercept, "classes": self.classes},
                {"family": self.family, "C": self.C})


@dataclass
class FittedBaseline:
    """A fitted baseline: featurizer + classifier, what validation chose, and its temperature (margins ->
    calibrated probabilities with the same arg-max; 1 for logistic regression)."""

    method: str
    featurizer: Any
    classifier: Any  # SparseLinear (tfidf) or heads.FittedHead (pixels)
    n_classes: int
    temperature: float = 1.0
    chosen: str = ""
    val_score: float = float("nan")
    search: list[dict] = field(default_factory=list)
    fit_s: float = 0.0

    def features(self, items: Sequence[Any]) -> Any:
        return self.featurizer.transform(items)

    def proba_from_features(self, X: Any) -> np.ndarray:
        from transferkit.heads.softmax import probabilities

        if isinstance(self.classifier, SparseLinear):
            p, ids = probabilities(self.classifier.scores(X) / self.temperature), self.classifier.classes
        else:
            p, ids = self.classifier.predict_proba(X), np.asarray(self.classifier.classes_, np.int64)
        if len(ids) == self.n_classes and (ids == np.arange(self.n_classes)).all():
            return p
        out = np.zeros((len(p), self.n_classes))  # a class the training split lacked gets no mass
        out[:, ids] = p
        return out

    def predict_proba(self, items: Sequence[Any]) -> np.ndarray:
        return self.proba_from_features(self.features(items))

    def predict(self, items: Sequence[Any]) -> np.ndarray:
        return self.predict_proba(items).argmax(1)

    @property
    def trainable_parameters(self) -> int:
        """Numbers the classifier fits (not the featurizer's statistics or a head's input scaling)."""
        if isinstance(self.classifier, SparseLinear):
            return int(self.classifier.coef.size + self.classifier.intercept.size)
        from transferkit.heads.probe_model import NOT_FITTED

        arrays, _ = self.classifier.predictor.state()
        return int(sum(np.asarray(v).size for k, v in arrays.items() if k not in NOT_FITTED))


def _search(candidates: list[tuple[dict, Any, Any]], y: np.ndarray, split: Any, seed: int
            ) -> tuple[SparseLinear, float, dict, float, list[dict]]:
    """Every (features, family, C) of `candidates` x `TEXT_GRID` fitted on train and scored on validation: the
    best classifier, its score, its candidate's settings, its temperature (margins -> probabilities on
    validation; 1 for logistic regression) and the whole search. Ties keep the earlier (smaller C, margin first)."""
    search, best = [], None
    for extra, Xtr, Xv in candidates:
        for family, C in TEXT_GRID:
            clf = SparseLinear.fit(family, C, Xtr, y[split.train], seed)
            score = float((clf.classes[clf.scores(Xv).argmax(1)] == y[split.val]).mean())
            search.append({**extra, "family": family, "C": C, "val_score": score})
            if best is None or score > best[1]:
                best = (clf, score, extra, Xv)
    clf, score, extra, Xv = best
    temperature = 1.0
    if clf.family == "svm":
        from transferkit.heads.probe_model import fit_temperature

        ids = np.clip(np.searchsorted(clf.classes, y[split.val]), 0, len(clf.classes) - 1)
        temperature = fit_temperature(clf.scores(Xv), ids)
    return clf, score, extra, temperature, search


def fit_baseline(method: str, data: Any, split: Any, seed: int = 0) -> FittedBaseline:
    """Fit baseline `method` ("tfidf" | "pixels" | "auto" = the data's) on split.train of `data` (a Dataset),
    choosing its hyperparameters on split.val; the model is trained on train only, like every probe."""
    if method == "auto":
        method = baseline_for(data.modality)
    if method not in BASELINES:
        raise BaselineError(f"unknown baseline {method!r}: use one of {', '.join(BASELINES)}")
    if BASELINES[method] != data.modality:
        raise BaselineError(f"baseline {method!r} reads {BASELINES[method]} items and {data.name} holds "
                            f"{data.modality}: use baseline:{baseline_for(data.modality)}")
    if data.task != "classification":
        raise BaselineError(f"{data.name} is {data.task}: the baselines are classifiers (give class labels)")
    if not len(split.val):
        raise BaselineError("the baseline chooses its hyperparameters on validation: give a validation split (val > 0)")
    t0 = time.perf_counter()
    y = np.asarray(data.labels)
    items = data.items
    train = [items[i] for i in split.train]
    val = [items[i] for i in split.val]
    n_classes = len(data.class_names)
    if method == "tfidf":
        feat = TfidfFeatures().fit(train)
        best, score, _, temperature, search = _search([({}, feat.transform(train), feat.transform(val))], y, split,
                                                      seed)
        fitted = FittedBaseline(method, feat, best, n_classes, temperature, f"{best.family} C={best.C:g}", score,
                                search)
    else:
        from transferkit.heads.select import fit_head

        feat = PixelFeatures().fit(train)
        head = fit_head("logreg", feat.transform(train), y[split.train], feat.transform(val), y[split.val],
                        "classification", seed)
        chosen = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in head.params.items())
        fitted = FittedBaseline(method, feat, head, n_classes, 1.0, f"logreg {chosen} on {feat.size}px "
                                f"{'grey' if feat.grey else 'colour'} pixels", float(head.val_score),
                                [{"params": s["params"], "val_score": s["score"]} for s in head.val_scores])
    fitted.fit_s = time.perf_counter() - t0
    return fitted


def fit_hybrid(data: Any, split: Any, embeddings: np.ndarray, seed: int = 0) -> FittedBaseline:
    """probe:hybrid: TF-IDF of the texts of `data` and their frozen embeddings (`embeddings[i]` for item i, as
    extraction computed them) in one linear model; the embedding block's scale, the classifier family and its C
    chosen together on split.val; trained on split.train only."""
    if data.modality != "text":
        raise BaselineError(f"probe:hybrid puts TF-IDF beside an encoder's embeddings: it reads text, and "
                            f"{data.name} holds {data.modality}")
    if data.task != "classification":
        raise BaselineError(f"{data.name} is {data.task}: probe:hybrid is a classifier (give class labels)")
    if not len(split.val):
        raise BaselineError("probe:hybrid chooses its settings on validation: give a validation split (val > 0)")
    if len(embeddings) != len(data):
        raise BaselineError(f"{len(embeddings)} embeddings for {len(data)} items: give one per item")
    t0 = time.perf_counter()
    y = np.asarray(data.labels)
    train, val = [data.items[i] for i in split.train], [data.items[i] for i in split.val]
    tfidf = TfidfFeatures().fit(train)
    Ttr, Tv = tfidf.transform(train), tfidf.transform(val)
    feats = {scale: HybridFeatures(tfidf, scale) for scale in SCALES}
    best, score, extra, temperature, search = _search(
        [({"scale": s}, f.combine(Ttr, embeddings[split.train]), f.combine(Tv, embeddings[split.val]))
         for s, f in feats.items()], y, split, seed)
    feat = feats[extra["scale"]]
    fitted = FittedBaseline("hybrid", feat, best, len(data.class_names), temperature,
                            f"{best.family} C={best.C:g}, embeddings x{feat.scale:g}", score, search)
    fitted.fit_s = time.perf_counter() - t0
    return fitted


def _pack_vocabularies(doc: dict, weights: dict) -> None:
    """Move a TF-IDF document's vocabularies (in `doc`, or in its "tfidf" part) into `weights` as bytes."""
    part = doc.get("tfidf", doc)
    for i, block in enumerate(part.get("blocks", [])):
        weights[f"feat.vocab{i}.bytes"], weights[f"feat.vocab{i}.offsets"] = _pack_strings(block.pop("vocabulary"))


def _unpack_vocabularies(doc: dict, arrays: dict) -> None:
    part = doc.get("tfidf", doc)
    part["blocks"] = [{**b, "vocabulary": _unpack_strings(arrays[f"vocab{i}.bytes"], arrays[f"vocab{i}.offsets"])}
                      for i, b in enumerate(part["blocks"])]


def _pack_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    blobs = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(), offsets


def _unpack_strings(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    return [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


def save_baseline(folder: str | Path, fitted: FittedBaseline, *, class_names: list[str], metrics: dict, data: dict,
                  cost: dict | None = None, training: dict | None = None, backbone: dict | None = None,
                  precision: str = "fp32") -> Path:
    """Write a baseline model folder (kind "hybrid", with `backbone` the record of the encoder whose embeddings
    it reads and `precision` the one they were computed in, for probe:hybrid)."""
    from transferkit.heads.persist import head_state

    arrays, doc = fitted.featurizer.state()
    weights = {f"feat.{k}": v for k, v in arrays.items()}
    _pack_vocabularies(doc, weights)
    if isinstance(fitted.classifier, SparseLinear):
        carrays, cdoc = fitted.classifier.state()
        cdoc = {"predictor": "sparse-linear", **cdoc}
    else:
        carrays, cdoc = head_state(fitted.classifier)
        cdoc = {"predictor": "head", "head_state": cdoc}
    weights.update({f"clf.{k}": v for k, v in carrays.items()})
    hybrid = fitted.method == "hybrid"
    info = ModelInfo(kind="hybrid" if hybrid else "baseline", task="classification", class_names=list(class_names),
                     backbone=backbone if hybrid else None, precision=precision if hybrid else "fp32",
                     modality="text" if hybrid else BASELINES[fitted.method], metrics=metrics, data=data,
                     cost={"trainable_parameters": fitted.trainable_parameters, **(cost or {})},
                     training={"baseline": fitted.method, "chosen": fitted.chosen, "temperature": fitted.temperature,
                               "search": fitted.search, "featurizer": doc, "classifier": cdoc, **(training or {})})
    return write_model(folder, info, weights)


class BaselinePredictor:
    """Raw items -> featurizer -> linear classifier -> class probabilities."""

    has_proba = True

    def __init__(self, fitted: FittedBaseline) -> None:
        self.fitted = fitted

    def outputs(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        return self.fitted.predict_proba(list(items))

    def embed(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        X = self.fitted.features(list(items))
        return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def load_fitted(folder: Path, info: ModelInfo) -> FittedBaseline:
    """The fitted baseline of a baseline model folder."""
    from transferkit.heads.persist import head_from_state

    t = info.training
    try:
        arrays = read_arrays(folder / "model.safetensors")
        feat_doc, clf_doc = dict(t["featurizer"]), dict(t["classifier"])
        method = t["baseline"]
    except (KeyError, TypeError) as e:
        raise ModelFolderError(f"{folder / 'model.json'} lacks the baseline's {e}: the model folder is damaged") \
            from None
    except Exception as e:  # noqa: BLE001 — safetensors raises its own types for a bad file
        raise ModelFolderError(f"cannot read the baseline's arrays in {folder} ({e}): the model folder is damaged") \
            from None
    feat_arrays = {k.removeprefix("feat."): v for k, v in arrays.items() if k.startswith("feat.")}
    clf_arrays = {k.removeprefix("clf."): v for k, v in arrays.items() if k.startswith("clf.")}
    try:
        if feat_doc.get("featurizer") in ("tfidf", "hybrid"):
            _unpack_vocabularies(feat_doc, feat_arrays)
        if feat_doc.get("featurizer") == "tfidf":
            feat = TfidfFeatures.from_state(feat_arrays, feat_doc)
        elif feat_doc.get("featurizer") == "hybrid":
            feat = HybridFeatures(TfidfFeatures.from_state(feat_arrays, feat_doc["tfidf"]), feat_doc["scale"])
        else:
            feat = PixelFeatures.from_state(feat_arrays, feat_doc)
        if clf_doc.get("predictor") == "sparse-linear":
            clf = SparseLinear(clf_arrays["coef"], clf_arrays["intercept"], clf_arrays["classes"], clf_doc["family"],
                               clf_doc["C"])
        else:
            clf = head_from_state(clf_arrays, clf_doc["head_state"], str(folder))
    except KeyError as e:
        raise ModelFolderError(f"{folder} lacks the baseline array {e}: the model folder is damaged") from None
    return FittedBaseline(method, feat, clf, len(info.class_names), float(t.get("temperature") or 1.0),
                          t.get("chosen", ""))


def load_predictor(folder: Path, info: ModelInfo, *, device: Any, precision: str, trust_pickle: bool,
                   trust_remote_code: bool = False) -> BaselinePredictor:
    """The `baseline` and `hybrid` kinds' loader (see `transferkit.model.folder.LOADERS`). A baseline runs on the
    CPU in fp32 whatever is asked (a sparse linear model gains nothing from either); a hybrid rebuilds its encoder
    on `device` and embeds in `precision` (the model's own unless overridden), as its features were computed."""
    fitted = load_fitted(Path(folder), info)
    if isinstance(fitted.featurizer, HybridFeatures):
        from transferkit.model import rebuild_backbone

        fitted.featurizer.backbone = rebuild_backbone(info.backbone or {}, device=device, trust_pickle=trust_pickle,
                                                      trust_remote_code=trust_remote_code, where=str(folder))
        fitted.featurizer.precision = precision
    return BaselinePredictor(fitted)
