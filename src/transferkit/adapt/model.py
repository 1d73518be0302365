"""The predictor every feature-level method produces, in numpy: standardise → [project] → [ReLU layer] → softmax.

Closed-form methods (CORAL, subspace alignment) fill the projection and a linear classifier; trainable adapters
fill the bottleneck layer and classifier. Arrays only, so a run folder is safetensors + JSON and never code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transferkit.errors import AdaptError

KINDS = ("linear", "mlp")


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class FeatureClassifier:
    """A classifier on backbone features of the target domain.

    arrays: mean, std (input standardisation), optional proj (D, d), optional hidden_weight/hidden_bias
    (the adapter's bottleneck, kind "mlp"), weight (C, h) and bias (C,). `extra` holds arrays kept for the
    record (a CORAL transform, the subspace bases) that prediction does not need, and the source-side map the
    classifier was trained through: `source_mean`/`source_std` (the source's own standardisation) and
    `source_map` (what replaces `proj` for source items: CORAL's recolouring, subspace alignment's Ps·M) and
    `source_bias` (the source's class prior, where a label-shift correction moved the bias to the target's). Without
    them the source side is the target side (source-only, norm=source). Validators and source accuracy score
    source items through `source_embed`, never through the target's map.
    """

    kind: str
    arrays: dict[str, np.ndarray]
    class_names: list[str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AdaptError(f"unknown predictor kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        need = {"mean", "std", "weight", "bias"} | ({"hidden_weight", "hidden_bias"} if self.kind == "mlp" else set())
        missing = need - set(self.arrays)
        if missing:
            raise AdaptError(f"{self.kind} predictor lacks arrays {sorted(missing)}: the run folder is incomplete")
        if self.arrays["weight"].shape[0] != len(self.class_names):
            raise AdaptError(f"classifier has {self.arrays['weight'].shape[0]} outputs for "
                             f"{len(self.class_names)} class names: the run folder is inconsistent")

    @property
    def feature_dim(self) -> int:
        """The backbone feature dimension this classifier reads."""
        return int(self.arrays["mean"].shape[-1])

    def embed(self, X: np.ndarray) -> np.ndarray:
        """The representation the classifier reads (after standardisation, projection, bottleneck)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.feature_dim:
            raise AdaptError(f"features have shape {X.shape} but this model reads (N, {self.feature_dim}): "
                             "extract them with the run's backbone (see run.json)")
        z = (X - self.arrays["mean"]) / self.arrays["std"]
        if "proj" in self.arrays:
            z = z @ self.arrays["proj"]
        if self.kind == "mlp":
            z = np.maximum(z @ self.arrays["hidden_weight"].T + self.arrays["hidden_bias"], 0.0)
        return z.astype(np.float32, copy=False)

    def source_embed(self, X: np.ndarray) -> np.ndarray:
        """The representation the classifier was trained on for *source* items (see the class docstring)."""
        if "source_mean" not in self.extra:
            return self.embed(X)
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.feature_dim:
            raise AdaptError(f"features have shape {X.shape} but this model reads (N, {self.feature_dim})")
        z = (X - self.extra["source_mean"]) / self.extra["source_std"]
        if "source_map" in self.extra:
            z = z @ self.extra["source_map"]
        elif "proj" in self.arrays:
            z = z @ self.arrays["proj"]
        if self.kind == "mlp":
            z = np.maximum(z @ self.arrays["hidden_weight"].T + self.arrays["hidden_bias"], 0.0)
        return z.astype(np.float32, copy=False)

    def logits(self, X: np.ndarray, source: bool = False) -> np.ndarray:
        """Class scores (N, C) of target-domain items (source=True: of source items, through the source map)."""
        z = self.source_embed(X) if source else self.embed(X)
        bias = self.extra["source_bias"] if source and "source_bias" in self.extra else self.arrays["bias"]
        return z @ self.arrays["weight"].T + bias

    def source_predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of source items, through the map the classifier was trained on."""
        return softmax(self.logits(X, source=True).astype(np.float64))

    def source_predict(self, X: np.ndarray) -> np.ndarray:
        """Class ids of source items, through the map the classifier was trained on."""
        return self.logits(X, source=True).argmax(axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C), columns in `class_names` order."""
        return softmax(self.logits(X).astype(np.float64))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class ids (N,)."""
        return self.logits(X).argmax(axis=1)
