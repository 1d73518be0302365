"""scikit-learn estimators over transferkit: thin wrappers that call the same library functions a user would."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from transferkit.backbones import Backbone, load_backbone
from transferkit.data.dataset import Dataset
from transferkit.errors import DataError
from transferkit.features import FeatureStore, embed_items, extract_features


@lru_cache(maxsize=4)
def _cached_backbone(spec: str, pretrained: bool, pooling: str, image_size: int | None, device: str) -> Backbone:
    """Clones made by GridSearchCV share one loaded model instead of loading it again."""
    return load_backbone(spec, pretrained=pretrained, pooling=pooling, image_size=image_size, device=device)


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """A frozen pretrained backbone as a scikit-learn transformer: raw items in, (N, D) features out.

    X is a list/array of images (paths, H×W(×C) arrays, PIL images) or of strings, as the backbone
    expects. Features go through the feature store (`cache=True`), so transforming the same data again
    — in a grid search, say — runs no model work.

    >>> make_pipeline(FeatureExtractor("effnet:lite0"), LogisticRegression()).fit(images, labels)
    """

    def __init__(self, backbone: Any = "effnet:lite0", *, pooling: str = "default", image_size: int | None = None,
                 pretrained: bool = True, batch_size: int = 64, precision: str = "auto", cache: bool = True,
                 cache_dir: str | None = None, device: str = "cpu", progress: bool = False) -> None:
        self.backbone = backbone
        self.pooling = pooling
        self.image_size = image_size
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.precision = precision
        self.cache = cache
        self.cache_dir = cache_dir
        self.device = device
        self.progress = progress

    def _load(self) -> Backbone:
        if isinstance(self.backbone, str):
            return _cached_backbone(self.backbone, self.pretrained, self.pooling, self.image_size, self.device)
        return load_backbone(self.backbone, pretrained=self.pretrained, pooling=self.pooling,
                             image_size=self.image_size, device=self.device)

    def fit(self, X: Any = None, y: Any = None) -> FeatureExtractor:
        """Load the backbone (nothing is learned: the backbone stays frozen)."""
        self.backbone_ = self._load()
        self.n_features_out_ = self.backbone_.feature_dim
        return self

    def _dataset(self, X: Any) -> Dataset:
        if len(X) == 0:
            raise DataError("FeatureExtractor.transform got no items: pass a list of images or strings")
        numeric = isinstance(X, np.ndarray) and X.dtype != object  # an (N, H, W[, C]) stack stays one array
        items = X if numeric else list(X)
        if self.backbone_.modality == "image" and not numeric:
            items = [Path(x) if isinstance(x, str) else x for x in items]
        return Dataset(items, None, (), self.backbone_.modality, name="sklearn-input")

    def transform(self, X: Any) -> np.ndarray:
        """(N, D) float32 features of the items in X."""
        check_is_fitted(self, "backbone_")
        data = self._dataset(X)
        if not self.cache:
            # computed as extraction computes them, so cache=False and cache=True give the same features
            return embed_items(self.backbone_, data.items, batch_size=self.batch_size, precision=self.precision)
        store = FeatureStore(Path(self.cache_dir) / "features" if self.cache_dir else None)
        fs = extract_features(self.backbone_, data, store=store, batch_size=self.batch_size,
                              precision=self.precision, progress=self.progress)
        return fs.features()

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names f0..f{D-1} (for pandas output in pipelines)."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"f{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):  # noqa: D105 — raw items (strings, images) are valid input, not only numbers
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


class FineTunedClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune a pretrained backbone as a scikit-learn classifier: `fit(X, y)`, `predict`, `predict_proba`.

    X holds raw items (images or strings). `strategy` is head, full, last-k, gradual, lora or contrastive; any other
    `FinetuneConfig` setting goes in `options` (e.g. {"lora_r": 4, "layer_decay": 0.8}). `val` items
    of the training data pick the best epoch. The run folder (`out`, or a temporary folder) holds the
    model as safetensors + JSON; `save(path)` copies it and `FineTunedClassifier.load(path)` reads it back.
    """

    def __init__(self, backbone: Any = "effnet:lite0", *, strategy: str = "full", epochs: int = 3,
                 batch_size: int = 32, lr: float = 1e-4, head_lr: float | None = None, val: float = 0.15,
                 seed: int = 0, options: dict | None = None, pooling: str = "default", image_size: int | None = None,
                 max_length: int | None = None, pretrained: bool = True, out: str | None = None, device: str = "cpu",
                 progress: bool = False) -> None:
        self.backbone = backbone
        self.strategy = strategy
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.val = val
        self.seed = seed
        self.options = options
        self.pooling = pooling
        self.image_size = image_size
        self.max_length = max_length
        self.pretrained = pretrained
        self.out = out
        self.device = device
        self.progress = progress

    def _config(self) -> Any:
        from transferkit.finetune import FinetuneConfig

        return FinetuneConfig(**{"strategy": self.strategy, "epochs": self.epochs, "batch_size": self.batch_size,
                                 "lr": self.lr, "head_lr": self.head_lr, "val": self.val, "test": 0.0,
                                 "seed": self.seed, **(self.options or {})})

    def fit(self, X: Any, y: Any) -> FineTunedClassifier:
        """Fine-tune on items X with labels y (any hashable values; `classes_` keeps them sorted)."""
        import tempfile

        import torch

        from transferkit.data.loaders import from_arrays
        from transferkit.finetune import finetune, load_run

        config = self._config()
        y = np.asarray(y)
        if len(y) != len(X):
            raise DataError(f"X has {len(X)} items but y has {len(y)} labels: give one label per item")
        classes, y_idx = np.unique(y, return_inverse=True)
        data = from_arrays(X, y_idx, class_names=[str(c) for c in classes], name="sklearn-fit")
        from transferkit.backbones import build_options

        opts = build_options(pooling=self.pooling, image_size=self.image_size, max_length=self.max_length)
        torch.manual_seed(self.seed)
        bb = load_backbone(self.backbone, pretrained=self.pretrained, device=self.device, **opts)
        out = Path(self.out) if self.out else Path(tempfile.mkdtemp(prefix="transferkit-run-"))
        self.result_ = finetune(bb, data, out, config, progress=self.progress, device=self.device,
                                backbone_options={"pretrained": self.pretrained, **opts})
        self.run_ = load_run(out, device=self.device, backbone=None if isinstance(self.backbone, str) else bb)
        self.classes_ = classes
        self.run_dir_ = out
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in the order of `classes_`."""
        check_is_fitted(self, "run_")
        return self.run_.predict_proba(X)  # raw items become a Dataset there (modality checked)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each item, as values of `classes_`."""
        return self.classes_[self.predict_proba(X).argmax(1)]

    def save(self, path: str | Path) -> Path:
        """Copy the run folder to `path` (safetensors + JSON; no pickles)."""
        import shutil

        check_is_fitted(self, "run_dir_")
        shutil.copytree(self.run_dir_, path, dirs_exist_ok=False)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> FineTunedClassifier:
        """A fitted classifier from a run folder written by `fit`, `save` or `transferkit finetune`."""
        from transferkit.finetune import load_run

        run = load_run(path, device=device)
        cfg, bb = run.info["config"], run.info["backbone"]
        est = cls(bb["spec"], strategy=cfg["strategy"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                  lr=cfg["lr"], head_lr=cfg["head_lr"], val=cfg["val"], seed=cfg["seed"],
                  pooling=bb.get("pooling") or "default", image_size=bb.get("image_size"),
                  max_length=bb.get("max_length"), pretrained=bb.get("pretrained", True), out=str(path), device=device)
        est.run_, est.run_dir_ = run, Path(path)
        est.classes_ = np.asarray(_restore_types(run.class_names))
        return est

    def __sklearn_tags__(self):  # noqa: D105 — raw items (strings, images) are valid input
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


def _restore_types(names: list[str]) -> list[Any]:
    """Class names back to numbers when they all were numbers (fit stores str(label))."""
    try:
        values = [int(n) for n in names]
    except ValueError:
        try:
            values = [float(n) for n in names]
        except ValueError:
            return names
    return values if [str(v) for v in values] == names else names


class Model(ClassifierMixin, BaseEstimator):
    """A model folder as a scikit-learn estimator — what `transferkit.load(path)` returns.

    It takes raw items (image paths, PIL images, H×W(×C) arrays, texts) and has `predict`, `predict_proba`,
    `decision_function` (heads without probabilities), `score`, `classes_` and `embed`. In a `Pipeline` it is a
    final step; `clone` + `fit` (as `cross_val_score` does) refits the same recipe on new data where that makes
    sense: a probe fits its head family again on the frozen backbone's features (hyperparameters chosen on 15% of
    the data), a fine-tuned model fine-tunes again with its recorded settings. Adapted models and ensembles need
    data `fit(X, y)` cannot give (a target domain, members), so they refuse to refit.
    """

    def __init__(self, path: str | Path | None = None, *, device: str = "auto", precision: str = "auto",
                 batch_size: int = 64, trust_pickle: bool = False, progress: bool = False) -> None:
        self.path = path
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.trust_pickle = trust_pickle
        self.progress = progress

    # ---- loading and refitting ------------------------------------------------------------------------------
    def load(self) -> Model:
        """Load the folder at `path` as the fitted state."""
        from transferkit.model import load_model

        if self.path is None:
            raise DataError("Model(path=None) has no folder to load: give the path of a model folder")
        self._set(load_model(self.path, device=self.device, precision=self.precision,
                             trust_pickle=self.trust_pickle))
        return self

    def _set(self, loaded: Any) -> None:
        self.model_ = loaded
        self.info_ = loaded.info
        names = loaded.class_names
        self.classes_ = np.asarray(_restore_types(names)) if loaded.info.is_classifier else None

    def fit(self, X: Any, y: Any) -> Model:
        """Refit this model's recipe on (X, y) (see the class docstring)."""
        from transferkit.model import read_info

        info = read_info(self.path) if self.path is not None else None
        if info is None:
            raise DataError("Model(path=None) has no recipe to refit: give the path of a model folder")
        items, labels = self._items(X, info.modality), np.asarray(y)
        if len(items) != len(labels):
            raise DataError(f"X has {len(items)} items but y has {len(labels)} labels: give one label per item")
        if info.kind == "probe":
            self._set(_refit_probe(self, info, items, labels))
        elif info.kind == "finetune":
            self._set(_refit_finetune(self, info, items, labels))
        elif info.kind == "baseline":
            self._set(_refit_baseline(self, info, items, labels))
        else:
            from transferkit.errors import TransferkitError

            raise TransferkitError(f"a {info.kind} model cannot be refitted from (X, y) alone: it also needs the "
                                   "target domain it was adapted to")
        return self

    # ---- prediction ----------------------------------------------------------------------------------------
    def _items(self, X: Any, modality: str) -> list:
        from transferkit.data.loaders import items_from

        if isinstance(X, (list, tuple)) and X and all(isinstance(x, str) for x in X) and modality == "image":
            return [Path(x) for x in X]  # file names of images
        items, found = items_from(X)
        if found != modality:
            raise DataError(f"this model reads {modality} items but X holds {found} items")
        return list(items)

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.outputs(self._items(X, self.model_.modality), self.batch_size)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (values of `classes_`) for a classifier, values for a regressor."""
        out = self._outputs(X)
        return self.classes_[out.argmax(1)] if self.info_.is_classifier else out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of `classes_`."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(self._items(X, self.model_.modality), self.batch_size)

    def decision_function(self, X: Any) -> np.ndarray:
        """Per-class scores: probabilities, or the margins of a head that gives no probabilities."""
        return self._outputs(X)

    def embed(self, X: Any) -> np.ndarray:
        """The features the model's last layer reads, (N, D)."""
        check_is_fitted(self, "model_")
        return self.model_.embed(self._items(X, self.model_.modality), self.batch_size)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classifier) or R² (regressor) on (X, y)."""
        check_is_fitted(self, "model_")
        if self.info_.is_classifier:
            return super().score(X, y, sample_weight)
        from sklearn.metrics import r2_score

        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))

    def __sklearn_tags__(self):  # noqa: D105 — raw items are valid input; regressor when the model is one
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        info = getattr(self, "info_", None)
        if info is not None and not info.is_classifier:
            tags.estimator_type = "regressor"
        return tags


def load(path: str | Path, *, device: str = "auto", precision: str = "auto", trust_pickle: bool = False) -> Model:
    """The model folder at `path` as a fitted scikit-learn estimator (see `Model`)."""
    return Model(path, device=device, precision=precision, trust_pickle=trust_pickle).load()


def _refit_probe(est: Model, info: Any, items: list, y: np.ndarray) -> Any:
    """The same backbone and head family, fitted on (items, y): hyperparameters chosen on a 15% validation split."""
    from transferkit.data.loaders import encode_labels
    from transferkit.data.splits import stratified_split
    from transferkit.features import embed_items
    from transferkit.heads import fit_head
    from transferkit.heads.probe_model import ProbePredictor
    from transferkit.model import LoadedModel, rebuild_backbone

    backbone = rebuild_backbone(info.backbone, device=est.device, trust_pickle=est.trust_pickle)
    precision = info.precision if est.precision == "auto" else est.precision
    X = embed_items(backbone, items, batch_size=est.batch_size, precision=precision)
    ids, names = encode_labels(list(y), task=info.task)
    split = stratified_split(ids, val=0.15, test=0.0, seed=0)
    head = fit_head(info.training.get("head", "auto"), X[split.train], ids[split.train], X[split.val],
                    ids[split.val], info.task, 0)
    temperature = None
    if head.task == "classification" and not head.has_proba:  # as probe_features does: probabilities for margins
        from transferkit.heads.probe_model import fit_temperature

        temperature = fit_temperature(head.class_scores(X[split.val]),
                                      np.searchsorted(np.asarray(head.classes_), ids[split.val]))
    from dataclasses import replace

    new = replace(info, class_names=list(names), metrics={"val": {head.metric: head.val_score}},
                  data={"name": "fit(X, y)", "n": len(items)})
    return LoadedModel(Path(str(est.path)), new, ProbePredictor(backbone, head, precision, len(names), temperature))


def _refit_baseline(est: Model, info: Any, items: list, y: np.ndarray) -> Any:
    """The same baseline, fitted on (items, y): its C chosen on a 15% validation split, as compare does."""
    from dataclasses import replace

    from transferkit.baselines.model import BaselinePredictor, fit_baseline
    from transferkit.data.loaders import from_arrays
    from transferkit.data.splits import stratified_split
    from transferkit.model import LoadedModel

    data = from_arrays(items, y, task=info.task, name="fit(X, y)")
    split = stratified_split(np.asarray(data.labels), val=0.15, test=0.0, seed=0)
    fitted = fit_baseline(info.training.get("baseline", "auto"), data, split)
    new = replace(info, class_names=list(data.class_names), metrics={"val": {"accuracy": fitted.val_score}},
                  data={"name": "fit(X, y)", "n": len(items)})
    return LoadedModel(Path(str(est.path)), new, BaselinePredictor(fitted))


def _refit_finetune(est: Model, info: Any, items: list, y: np.ndarray) -> Any:
    """Fine-tune the recorded backbone again with the recorded settings, into a temporary folder."""
    import shutil
    import tempfile
    import weakref

    from transferkit.data.loaders import from_arrays
    from transferkit.finetune import FinetuneConfig, finetune
    from transferkit.io import read_json
    from transferkit.model import load_model

    run = read_json(Path(str(est.path)) / "run.json")
    config = FinetuneConfig.from_dict({**run["config"], "test": 0.0})
    data = from_arrays(items, y, task=info.task, name="fit(X, y)")
    build = dict(info.backbone.get("build") or {})
    bb = load_backbone(info.backbone["spec"], device=est.device, trust_pickle=est.trust_pickle, **build)
    tmp = tempfile.mkdtemp(prefix="transferkit-refit-")
    weakref.finalize(est, shutil.rmtree, tmp, True)  # the refitted run lives as long as the estimator
    finetune(bb, data, Path(tmp) / "run", config, progress=est.progress, backbone_options=build, device=est.device)
    return load_model(Path(tmp) / "run", device=est.device, precision=est.precision, trust_pickle=est.trust_pickle)
