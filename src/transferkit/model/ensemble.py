"""The ensemble model kind: a weighted average of member models' class probabilities, the weights found by greedy
ensemble selection on validation predictions (Caruana et al., ICML 2004), written as one model folder whose
members are model folders themselves (members/NAME/), so `predict`, `serve` and `transferkit.load` use it like
any other.

Selection: start from the best single member by validation log-loss, then repeatedly add (with replacement) the
member whose addition lowers the validation log-loss of the average most, for `rounds` rounds; a member's weight
is how often it was picked. Its own validation score is cross-fitted (weights chosen on one half of the
validation split, scored on the other, and the other way round), so choosing an ensemble against single models on
validation does not reward it for having been fitted to that same split.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.model.folder import load_model, read_info, write_model
from transferkit.model.info import ModelFolderError, ModelInfo

MEMBERS = "members"


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def select_weights(probas: Sequence[np.ndarray], y: np.ndarray, rounds: int = 25) -> np.ndarray:
    """Greedy ensemble selection with replacement: weights (summing to 1) over `probas` ((N, C) each, the members'
    validation probabilities) that lower the log-loss of their average on labels `y`."""
    if not len(probas):
        raise ValueError("no members to select from")
    y = np.asarray(y, dtype=np.int64)
    losses = [_log_loss(p, y) for p in probas]
    counts = np.zeros(len(probas), dtype=np.int64)
    first = int(np.argmin(losses))
    counts[first] = 1
    total = np.array(probas[first], dtype=np.float64)
    for _ in range(rounds - 1):
        n = counts.sum()
        trial = [_log_loss((total + p) / (n + 1), y) for p in probas]
        best = int(np.argmin(trial))  # ties go to the earlier (cheaper, as strategies are ordered) member
        counts[best] += 1
        total += probas[best]
    return counts / counts.sum()


def cross_fitted_accuracy(probas: Sequence[np.ndarray], y: np.ndarray, seed: int = 0, rounds: int = 25) -> float:
    """Validation accuracy of ensemble selection measured honestly: weights chosen on one half of the items,
    accuracy on the other half, both ways."""
    y = np.asarray(y, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    halves = (order[: len(y) // 2], order[len(y) // 2:])
    right = 0
    for fit, score in (halves, halves[::-1]):
        if not len(fit) or not len(score):
            continue
        w = select_weights([p[fit] for p in probas], y[fit], rounds)
        avg = sum(wi * p[score] for wi, p in zip(w, probas, strict=True))
        right += int((avg.argmax(1) == y[score]).sum())
    return right / max(len(y), 1)


def save_ensemble(folder: str | Path, members: list[tuple[str, Path]], weights: np.ndarray, *,
                  class_names: list[str], modality: str, metrics: dict, data: dict, cost: dict | None = None,
                  training: dict | None = None) -> Path:
    """Write an ensemble model folder: every member with a weight > 0 copied to members/NAME/, the weights in
    model.safetensors and model.json."""
    folder = Path(folder)
    keep = [(name, Path(src), float(w)) for (name, src), w in zip(members, weights, strict=True) if w > 0]
    if not keep:
        raise ModelFolderError("an ensemble needs at least one member with a weight above 0")
    (folder / MEMBERS).mkdir(parents=True, exist_ok=True)
    entries = []
    for name, src, w in keep:
        sub = name.replace(":", "-").replace("+", "-plus-")
        dest = folder / MEMBERS / sub
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("state", "*.tmp", "log.txt", "task.json",
                                                                  "result.json", "predictions.json"))
        entries.append({"name": name, "folder": f"{MEMBERS}/{sub}", "weight": w})
    precisions = {read_info(folder / e["folder"]).precision for e in entries}
    info = ModelInfo(kind="ensemble", task="classification", class_names=list(class_names), backbone=None,
                     precision="bf16" if "bf16" in precisions else "fp32", modality=modality, metrics=metrics,
                     data=data, cost=cost or {}, training={"members": entries, "selection": "greedy, log-loss, "
                                                           "with replacement (Caruana et al. 2004)",
                                                           **(training or {})})
    return write_model(folder, info, {"weights": np.asarray([e["weight"] for e in entries], dtype=np.float64)})


class EnsemblePredictor:
    """Raw items -> each member's class probabilities -> their weighted average."""

    has_proba = True

    def __init__(self, members: list[Any], weights: np.ndarray) -> None:
        self.members, self.weights = members, np.asarray(weights, dtype=np.float64)

    def outputs(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        items = list(items)
        return sum(w * m.predict_proba(items, batch_size) for w, m in zip(self.weights, self.members, strict=True))

    def embed(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """What the average reads: the members' probabilities side by side, (N, members × classes)."""
        items = list(items)
        return np.hstack([m.predict_proba(items, batch_size) for m in self.members])


def load_predictor(folder: Path, info: ModelInfo, *, device: Any, precision: str, trust_pickle: bool,
                   trust_remote_code: bool = False) -> EnsemblePredictor:
    """The `ensemble` kind's loader (see `transferkit.model.folder.LOADERS`): every member loaded from its own
    folder (in its own precision, unless one is forced), the weights from model.json."""
    entries = info.training.get("members")
    if not isinstance(entries, list) or not entries:
        raise ModelFolderError(f"{folder / 'model.json'} lists no ensemble members: the model folder is damaged")
    members = []
    for e in entries:
        sub = Path(folder) / str(e.get("folder", ""))
        if not sub.resolve().is_relative_to(Path(folder).resolve()):
            raise ModelFolderError(f"{folder / 'model.json'} names a member outside the folder ({e.get('folder')})")
        loaded = load_model(sub, device=device, precision="auto" if precision == info.precision else precision,
                            trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
        if not loaded.has_proba or loaded.class_names != list(info.class_names):
            raise ModelFolderError(f"ensemble member {sub} does not give probabilities over the ensemble's classes")
        members.append(loaded)
    return EnsemblePredictor(members, np.asarray([float(e["weight"]) for e in entries]))
