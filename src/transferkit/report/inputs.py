"""What every strategy of a comparison shares: the settings, the data (sampled the same way), the split.

The parent `compare` process and each strategy's child process load the data through `load_inputs`,
so they see the same items, labels and test split; the settings are what `--resume` must match.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from transferkit.data import Dataset, Split, load_data, stratified_sample, stratified_split
from transferkit.errors import DataError


@dataclass(frozen=True)
class CompareSettings:
    """Model, data, target and split of a comparison (JSON-able; a resumed report must keep all of them)."""

    data: str
    model: str | None = None
    target: str | None = None
    target_labels: bool = False
    text_column: str = "text"
    label_column: str | None = None
    on_bad_input: str = "fail"
    image_size: int | None = None
    max_length: int | None = None
    pooling: str = "default"
    device: str = "auto"
    precision: str = "auto"
    pretrained: bool = True
    sample: int | None = None
    seed: int = 0
    val: float = 0.15
    test: float = 0.15

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CompareSettings:
        """Settings from results.json; keys an earlier version did not write take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Inputs:
    """The loaded data: labelled source, its split, the backbone spec, and the target (labels only if asked)."""

    source: Dataset
    split: Split
    spec: str
    target: Dataset | None = None
    use_target_labels: bool = False

    @property
    def target_labels(self) -> np.ndarray | None:
        """The target's labels for evaluation, only when asked for (--target-labels): folders and bundled sets
        carry labels anyway, and unlabelled must stay unlabelled."""
        t = self.target
        if t is None or not self.use_target_labels or t.task != "classification":
            return None
        return np.asarray(t.labels)

    def record(self) -> dict:
        """Facts that identify the inputs (fingerprints, sizes), written to results.json."""
        rec = {"backbone": self.spec, "source": {"name": self.source.name, "fingerprint": self.source.fingerprint,
                                                 "n": len(self.source), "classes": list(self.source.class_names),
                                                 **self.split.sizes()}}
        if self.target is not None:
            rec["target"] = {"name": self.target.name, "fingerprint": self.target.fingerprint,
                             "n": len(self.target), "labelled": self.target_labels is not None}
        return rec


def _load(s: CompareSettings, data: str, labels: bool) -> Dataset:
    from transferkit.data.loaders import AUTO, has_columns

    kw: dict = {"text_column": s.text_column, "label_column": (s.label_column or AUTO) if labels else None} \
        if not data.startswith("bundled:") and has_columns(data) else {}
    if not data.startswith("bundled:"):
        kw["on_bad_input"] = s.on_bad_input
    return load_data(data, **kw)


def load_inputs(s: CompareSettings) -> Inputs:
    """Load and sample the source (and target), and split the source: the same for every strategy."""
    from transferkit.backbones import DEFAULT_IMAGE, DEFAULT_TEXT

    src = _load(s, s.data, True)
    if src.task != "classification":
        raise DataError(f"{s.data} has no class labels, and comparing routes needs them: give class folders or a "
                        "table with a `label` column (or name yours with --label-column)")
    if s.sample is not None and s.sample < len(src):
        src = src.subset(stratified_sample(src.labels, s.sample, seed=s.seed), name=f"{src.name}[{s.sample}]")
    # where the data came from, for the model folders (export finds their test split again from it)
    src.meta.update(spec=s.data, sample=s.sample, text_column=s.text_column, label_column=s.label_column)
    split = stratified_split(src.labels, val=s.val, test=s.test, seed=s.seed, class_names=src.class_names)
    spec = s.model or (DEFAULT_TEXT if src.modality == "text" else DEFAULT_IMAGE)
    tgt = None
    if s.target is not None:
        tgt = _load(s, s.target, s.target_labels)
        if s.target_labels:
            from transferkit.adapt import check_class_names

            if tgt.task != "classification":
                raise DataError(f"--target-labels given but target {s.target} has no class labels")
            check_class_names(src.class_names, tgt.class_names)
        if tgt.modality != src.modality:
            raise DataError(f"target {s.target} holds {tgt.modality} items but the source {s.data} holds "
                            f"{src.modality}: give a target of the same kind")
        if s.sample is not None and s.sample < len(tgt):
            idx = stratified_sample(tgt.labels if s.target_labels else np.zeros(len(tgt)), s.sample, seed=s.seed,
                                    classes=s.target_labels)
            tgt = tgt.subset(idx, name=f"{tgt.name}[{s.sample}]")
    return Inputs(src, split, spec, tgt, s.target_labels)


def build_options(s: CompareSettings) -> dict:
    """The backbone build options the settings name (those that differ from the defaults)."""
    from transferkit.backbones import build_options as nondefault

    return nondefault(pooling=s.pooling, image_size=s.image_size, max_length=s.max_length, pretrained=s.pretrained)


def load_backbone_for(s: CompareSettings, spec: str, trust: dict | None = None):
    """The backbone of the comparison, built the same way in every process (`trust`: trust_pickle and
    trust_remote_code, which are never recorded in results.json)."""
    from transferkit.backbones import load_backbone

    return load_backbone(spec, device=s.device, **build_options(s), **(trust or {}))
