"""Adapt a fine-tuned source run to a target domain without source data: AdaBN, TENT and SHOT.

Both start from a finished `transferkit finetune` run folder (the source model) and unlabelled target items,
and write a new run folder of the same kind, so `transferkit predict` and `load_run` read it unchanged.

- adabn (Li et al. 2016): batch-norm running statistics recomputed as exact averages over target batches
  (`precise_bn`); with `recentre` the head's fixed input centring (`feature_mean`) is also re-estimated on
  target features. No parameter is trained.
- tent (Wang et al., ICLR 2021): one streaming pass over target batches; each batch is normalised with its own
  statistics and the batch-norm scale/shift alone take an Adam step that lowers the mean prediction entropy.
  The written model predicts in eval mode, so its running statistics are then recomputed on the target (AdaBN).
- shot (Liang et al., ICML 2020): the head (the source hypothesis) is frozen and the backbone trains on target
  batches to lower information maximisation (mean prediction entropy minus the entropy of the mean prediction)
  + beta × cross-entropy to pseudo labels, which are recomputed at each epoch start as the nearest
  (cosine) of class centroids in feature space: first weighted by the predicted probabilities, then one
  refinement from the hard labels. Batch-norm layers keep the source run's statistics throughout (no AdaBN
  afterwards). It is a short dedicated pass rather than `finetune()`: that loop trains on fixed labels with a
  labelled validation split and best-epoch selection, none of which exist here, and SHOT's labels change every
  epoch.

A network without batch norm cannot use AdaBN or TENT: that is an error naming the fix (a feature-level method
or shot).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.dataset import Dataset
from transferkit.errors import AdaptError

SOURCE_FREE = ("adabn", "tent", "shot")
ADABN_ITEMS = 2048  # target items whose batches give the statistics (a seeded subset when there are more)


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _collate(run: Any, items: list) -> dict[str, torch.Tensor]:
    """A batch of raw items, on the device of the run's network."""
    dev = next(run.model.parameters()).device
    return {k: v.to(dev) for k, v in run.backbone.collate(items).items()}


def _batches(run: Any, target: Dataset, idx: np.ndarray, batch_size: int) -> list[dict[str, torch.Tensor]]:
    return [_collate(run, [target.items[int(i)] for i in idx[s: s + batch_size]])
            for s in range(0, len(idx), batch_size) if len(idx[s: s + batch_size]) > 1]


def _check(run: Any, target: Dataset, method: str) -> None:
    if run.task != "classification":
        raise AdaptError(f"{run.folder.path} is a regression run: source-free adaptation here adapts classifiers")
    if len(target) < 2:
        raise AdaptError(f"the target has {len(target)} item(s): batch statistics need at least 2 target items")
    if target.modality != run.backbone.modality:
        raise AdaptError(f"the run's backbone reads {run.backbone.modality} items but the target holds "
                         f"{target.modality} items: give target data of the source's kind")
    if method != "shot" and not _norms(run.model):
        raise AdaptError(f"{run.backbone.spec} has no batch-norm layers, so AdaBN/TENT have nothing to adapt: use a "
                         "feature-level method (transferkit adapt --source ... --method coral|dann|...) or shot")


def _adabn(run: Any, target: Dataset, *, batch_size: int, seed: int, recentre: bool) -> None:
    from transferkit.finetune.model import precise_bn

    idx = np.sort(np.random.default_rng(seed).permutation(len(target))[:ADABN_ITEMS])
    batches = _batches(run, target, idx, batch_size)
    run.model.eval()
    precise_bn(run.model, batches)
    if recentre:
        with torch.no_grad():
            feats = torch.cat([run.model.features(b).float() for b in batches])
            run.model.feature_mean.copy_(feats.mean(0))


def _tent(run: Any, target: Dataset, *, batch_size: int, seed: int, lr: float, epochs: int) -> list[str]:
    """Entropy minimisation on norm affine parameters over streaming target batches; returns their names."""
    model = run.model
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for mod_name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
            names += [f"{mod_name}.weight", f"{mod_name}.bias"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    model.eval()
    for m in _norms(model):  # normalise each batch with its own statistics, as at test time in TENT
        m.train()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for batch in _batches(run, target, rng.permutation(len(target)), batch_size):
            p = torch.softmax(model(batch).float(), 1)
            loss = -(p * torch.log(p + 1e-8)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return names


@torch.no_grad()
def shot_pseudo_labels(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """SHOT's self-supervised labels: cosine-nearest class centroid of the (1-augmented, unit-norm) features, with
    centroids first weighted by the predicted probabilities, then recomputed once from the resulting hard labels."""
    f = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    f = f / f.norm(dim=1, keepdim=True)
    weights = probs.double()
    for _ in range(2):
        centroids = weights.T @ f / (weights.sum(0)[:, None] + 1e-8)
        labels = (f @ (centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)).T).argmax(1)
        weights = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return labels


def _shot(run: Any, target: Dataset, *, batch_size: int, seed: int, lr: float, epochs: int, beta: float) -> list[str]:
    """SHOT on the run's backbone (head frozen); returns the names of the parameters it trained."""
    from transferkit.adapt.losses import information_maximization
    from transferkit.finetune.model import frozen_norm_eval

    model = run.model
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith("head."))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    all_idx = np.arange(len(target))
    for _ in range(epochs):
        model.eval()
        with torch.no_grad():
            outs = [model(b, with_features=True) for b in _batches(run, target, all_idx, batch_size)]
        n_full = sum(len(o[0]) for o in outs)
        if n_full < len(target):  # a last single item that _batches leaves out
            outs.append(model(_collate(run, [target.items[-1]]), with_features=True))
        logits, feats = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        pseudo = shot_pseudo_labels(feats, torch.softmax(logits.float(), 1))
        model.train()
        frozen_norm_eval(model, all_norms=True)  # the source run's batch-norm statistics stay
        order = rng.permutation(len(target))
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            if len(idx) < 2:
                continue
            out = model(_collate(run, [target.items[int(i)] for i in idx]))
            loss = information_maximization(out) + beta * torch.nn.functional.cross_entropy(
                out.float(), pseudo[torch.as_tensor(idx)].to(out.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    trained = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return trained


#: target items the validator panel reads before and after adapting (a seeded subset when there are more)
PANEL_ITEMS = 2000


def network_panel(run: Any, items: Dataset, seed: int = 0) -> dict[str, float]:
    """The target-only validators (`validate.TARGET_ONLY`) of a fine-tuned network on `items`, in fp32."""
    from transferkit.adapt.validate import target_panel
    from transferkit.finetune.contrastive import head_features

    device = next(run.model.parameters()).device
    z = head_features(run.model, items, np.arange(len(items)), run.backbone.collate, device)
    return target_panel(run.predict_proba(items, precision="fp32"), z, seed)


def panel_items(target: Dataset, seed: int = 0) -> Dataset:
    """The target items the validators read: all of them, or a seeded subset of PANEL_ITEMS."""
    if len(target) <= PANEL_ITEMS:
        return target
    return target.subset(np.sort(np.random.default_rng([seed, 5]).permutation(len(target))[:PANEL_ITEMS]))


def verdict(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, Any]:
    """The validators' verdict on adapting a network: the panels of the unadapted (`before`) and adapted network,
    the judge (`--validator auto`'s ClassAMI, a target-only validator) and whether it expects harm."""
    from transferkit.adapt.fit import AUTO_VALIDATOR
    from transferkit.adapt.validate import TARGET_ONLY, VALIDATORS

    judge = AUTO_VALIDATOR if AUTO_VALIDATOR in TARGET_ONLY else "classami"
    higher = VALIDATORS[judge][0] == "higher"
    hurt = after[judge] < before[judge] if higher else after[judge] > before[judge]
    return {"before": before, "after": after, "judge": judge, "expected": "hurt" if hurt else "help", "items": items}


def adapt_run(method: str, source_run: str | Path, target: Dataset, out: str | Path, *, batch_size: int = 64,
              seed: int = 0, recentre: bool = True, lr: float | None = None, epochs: int | None = None,
              beta: float = 0.3, target_labels: np.ndarray | None = None, trust_pickle: bool = False,
              device: str = "cpu", keep_adapted: bool = False) -> dict:
    """Adapt the fine-tuned run `source_run` to `target` with `method` (adabn, tent or shot) into the run folder `out`.

    lr / epochs default to 1e-3 / 1 (tent: Adam on norm affine parameters) and 1e-4 / 3 (shot: AdamW on the
    backbone); beta weighs SHOT's pseudo-label cross-entropy.
    target_labels: class ids of the target items in the run's class order, for evaluation only.
    device: where the network runs ("auto": CUDA when present).
    The unadapted and the adapted network are scored by the target-only validators (entropy, IM, BNM, ClassAMI,
    SND); when the judge (`--validator auto`'s ClassAMI) scores the adapted one worse, adaptation is expected to
    hurt and the folder gets the unadapted source model unless `keep_adapted` (the record says which was kept).
    Returns the record written to run.json's "adaptation" entry (with target accuracy when labels were given).
    """
    from transferkit.finetune.checkpoint import RunFolder, model_tensors, save_tensors
    from transferkit.finetune.run import load_run
    from transferkit.model import write_model
    from transferkit.model.migrate import finetune_info

    if method not in SOURCE_FREE:
        raise AdaptError(f"unknown source-free method {method!r}: use one of {', '.join(SOURCE_FREE)}")
    target = target.in_memory()  # read in shuffled order, epoch after epoch
    dest = RunFolder(out)
    if dest.exists():
        raise AdaptError(f"{dest.path} already holds a run: choose another --out")
    run = load_run(source_run, trust_pickle=trust_pickle, device=device)
    _check(run, target, method)
    lr = lr if lr is not None else (1e-4 if method == "shot" else 1e-3)
    epochs = epochs if epochs is not None else (3 if method == "shot" else 1)
    t0 = time.perf_counter()
    before = None
    if target_labels is not None:
        before = float((run.predict(target, batch_size) == target_labels).mean())
    probe = panel_items(target, seed)
    panel_before = network_panel(run, probe, seed)
    extra: list[str] = []
    with torch.enable_grad():
        if method == "tent":
            extra = _tent(run, target, batch_size=batch_size, seed=seed, lr=lr, epochs=epochs)
        if method == "shot":
            extra = _shot(run, target, batch_size=batch_size, seed=seed, lr=lr, epochs=epochs, beta=beta)
    if method != "shot":
        _adabn(run, target, batch_size=batch_size, seed=seed, recentre=recentre)
    run.info = {**run.info, "precision": "fp32"}  # computed in fp32 (above): the adapted model predicts in fp32
    fit_s = time.perf_counter() - t0
    judged = verdict(panel_before, network_panel(run, probe, seed), len(probe))
    hurt = judged["expected"] == "hurt"
    adapted_accuracy = float((run.predict(target, batch_size) == target_labels).mean()) \
        if target_labels is not None else None
    kept = "adapted" if keep_adapted or not hurt else "unadapted"
    if kept == "unadapted":  # the validators expect adaptation to hurt: hand over the source model itself
        run = load_run(source_run, trust_pickle=trust_pickle, device=device)
        extra = []
    record: dict[str, Any] = {"method": method, "source_run": str(Path(source_run).resolve()),
                              "target_items": len(target), "target_fingerprint": target.fingerprint,
                              "hyperparameters": {"batch_size": batch_size, "seed": seed,
                                                  **({"recentre": recentre} if method != "shot" else {"beta": beta}),
                                                  **({"lr": lr, "epochs": epochs} if method != "adabn" else {})},
                              "fit_s": round(fit_s, 3),
                              "validators": judged, "kept": kept}
    if target_labels is not None:
        record["metrics"] = {"target_accuracy_before": before, "target_accuracy_adapted": adapted_accuracy,
                             "target_accuracy": adapted_accuracy if kept == "adapted" else before}
    info = dict(run.info)
    saved = sorted(set(info["saved_parameters"]) | set(extra))
    # the source run's scores are of the network before adaptation: they move into the record, not the model's
    record["source_run_metrics"] = info.get("metrics")
    info.update({"saved_parameters": saved, "adaptation": record, "metrics": {}})
    dest.path.mkdir(parents=True, exist_ok=True)
    save_tensors(dest.model_file, model_tensors(run.model, set(saved)), metadata={"format": "transferkit-run"})
    dest.write(info)
    write_model(dest.path, finetune_info({**info, "format": 1}))
    return record
