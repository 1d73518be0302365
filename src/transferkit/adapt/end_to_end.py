"""End-to-end domain adaptation through the fine-tuning loop: DANN, CDAN and MMD train the backbone too.

`DomainTerm` is a loss term of the fine-tuning loop (`transferkit.finetune.terms`): for every source batch it draws
a target batch of the same size (order a pure function of (seed, epoch), so resume stays exact), the loop encodes
both in one forward pass of the same network, and the term adds `domain_tradeoff` × one of:

- dann (Ganin et al. 2016): a domain discriminator behind gradient reversal, coefficient 2/(1+exp(-10p))-1;
- cdan (Long et al. 2018): the discriminator reads the multilinear map features ⊗ predictions (the randomized map
  of the paper, 1024 dims, above `RANDOMIZED_ABOVE` dimensions);
- mmd (DAN, Long et al. 2015): multi-kernel MMD between source and target features of each micro-batch (under
  data parallelism, of the micro-batch's rows on every process, so with grad_accum 1 N processes compute what one
  computes; with grad_accum > 1 each process's share is cut into micro-batches, so the gathered micro-batches hold
  other items than one process's and MMD, not a sum over items, differs slightly).

The features are the standardised backbone features the head reads. The discriminator (same architecture as the
feature-level adapters') is trained with the run and saved in its resume state, but the written model is
backbone + head only, so `transferkit predict` reads the folder like any fine-tuning run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.adapt import losses as L
from transferkit.adapt.adapters import RANDOMIZED_ABOVE, _discriminator
from transferkit.adapt.losses import dann_schedule
from transferkit.backbones.base import Backbone
from transferkit.data.dataset import Dataset
from transferkit.errors import AdaptError
from transferkit.finetune.config import FinetuneConfig
from transferkit.finetune.loop import FinetuneResult
from transferkit.finetune.terms import LossTerm, TermBatch

#: CLI method name → the domain loss of `DomainTerm`
END_TO_END = {"dann-e2e": "dann", "cdan-e2e": "cdan", "mmd-e2e": "mmd"}
DOMAIN_LOSSES = tuple(END_TO_END.values())


class DomainTerm(LossTerm):
    """The domain loss of end-to-end adaptation, as a loss term of the fine-tuning loop.

    Each source batch is paired with as many target items (`extra_items`, a per-epoch permutation of the target
    drawn from (seed, epoch), cycled), and `loss` returns `tradeoff` × the domain loss on the loop's "sum over the
    source items" scale (BCE summed over both domains / 2, or MMD × the source items). Initialised from `seed`.
    """

    name = "domain"

    def __init__(self, method: str, target: Dataset, feature_dim: int, n_classes: int, *, tradeoff: float = 1.0,
                 batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        if method not in DOMAIN_LOSSES:
            raise AdaptError(f"unknown domain loss {method!r}: use one of {', '.join(DOMAIN_LOSSES)}")
        if tradeoff < 0:
            raise AdaptError(f"domain_tradeoff={tradeoff} is negative: give a weight ≥ 0 for the domain loss")
        self.method, self.items, self.tradeoff, self.seed = method, target, float(tradeoff), seed
        self.batch_size = batch_size  # the run's global batch: where each batch's target items start
        self.rmap: L.RandomizedMultilinearMap | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if method == "cdan":
                dim = feature_dim * n_classes
                if dim > RANDOMIZED_ABOVE:
                    self.rmap = L.RandomizedMultilinearMap(feature_dim, n_classes, 1024,
                                                           generator=torch.Generator().manual_seed(seed))
                    dim = 1024
            else:
                dim = feature_dim
            self.disc = _discriminator(dim) if method in ("dann", "cdan") else None

    def extra_items(self, epoch: int, position: int, source: np.ndarray) -> np.ndarray:
        return target_batch(len(self.items), len(source), self.batch_size, self.seed, epoch, position)

    def loss(self, batch: TermBatch, progress: float) -> torch.Tensor:
        m = len(batch.source_features)
        f = torch.cat([batch.source_features, batch.features]).float()
        if self.method == "mmd":  # on the whole micro-batch of every process; this process's share of it
            src, tgt = batch.gather(f[:m]), batch.gather(f[m:])
            return self.tradeoff * L.multi_kernel_mmd(src, tgt) * len(src) / batch.processes
        if self.method == "cdan":
            logits = torch.cat([batch.source_outputs, batch.outputs])
            probs = torch.softmax(logits.float(), 1).detach()
            f = self.rmap(f, probs) if self.rmap is not None else L.multilinear_map(f, probs)
        d = self.disc(L.grad_reverse(f, dann_schedule(progress)))
        is_src = torch.cat([torch.ones(m), torch.zeros(len(f) - m)]).to(d.device)
        return self.tradeoff * L.domain_adversarial_loss(d, is_src) * len(f) / 2.0

    def record(self) -> dict:
        return {"method": self.method, "tradeoff": self.tradeoff, "target": self.items.name,
                "target_items": len(self.items), "target_fingerprint": self.items.fingerprint}

    def mismatch(self, prior: dict) -> str | None:
        if "terms" in prior:
            old = prior["terms"].get(self.name) or {}
        else:  # a run folder of an earlier version: the domain loss sat in its config and "adaptation" record
            config = prior.get("config") or {}
            old = {**(prior.get("adaptation") or {}), "method": config.get("domain_loss"),
                   "tradeoff": float(config.get("domain_tradeoff", 1.0))}
        if old.get("target_fingerprint") != self.items.fingerprint:
            return "the target data differ from those the run started on (resume with the same --target)"
        if (old.get("method"), old.get("tradeoff")) != (self.method, self.tradeoff):
            return (f"the run started with domain loss {old.get('method')} × {old.get('tradeoff')}, not "
                    f"{self.method} × {self.tradeoff}")
        return None


def check_target(target: Dataset, modality: str, task: str) -> None:
    """Refuse a target domain the loop cannot adapt to, with the fix."""
    if len(target) == 0:
        raise AdaptError(f"the target data set {target.name!r} is empty: give unlabelled target items")
    if target.modality != modality:
        raise AdaptError(f"the backbone reads {modality} items but the target {target.name!r} holds "
                         f"{target.modality} items: give target data of the source's kind")
    if task != "classification":
        raise AdaptError("end-to-end domain adaptation (dann/cdan/mmd) adapts classifiers; the source is a "
                         "regression task")


def target_batch(n_target: int, size: int, batch_size: int, seed: int, epoch: int, position: int) -> np.ndarray:
    """Target item indices paired with source batch `position` of `epoch` (cycling a per-epoch permutation)."""
    order = np.random.default_rng([seed, 3, epoch]).permutation(n_target)
    return order[(position * batch_size + np.arange(size)) % n_target]


def adapt_end_to_end(method: str, backbone: Backbone, source: Dataset, target: Dataset, out: str | Path,
                     config: FinetuneConfig | None = None, *, tradeoff: float = 1.0,
                     target_labels: np.ndarray | None = None, backbone_options: dict | None = None,
                     resume: bool = False, progress: bool = True, log: Callable[[str], None] = lambda m: None,
                     stop_after_steps: int | None = None, device: str = "auto",
                     reference_run: str | Path | None = None, keep_adapted: bool = False) -> FinetuneResult:
    """Fine-tune `backbone` on labelled `source` with `method`'s domain loss (weight `tradeoff`) on unlabelled
    `target` into `out`.

    target_labels (class ids in the source's class order) are used after training, to score the written model
    on the target, and nothing else. Returns the FinetuneResult; run.json gains an "adaptation" record (the method,
    the term's record and, with target labels, the target accuracy).

    reference_run: a finished fine-tuning run on the same classes without the domain loss (the unadapted model).
    Both networks then go through the target-only validators (as source-free adaptation does); when the judge
    expects the adapted one to be worse, `out` gets the reference model and the adapted run moves to
    `out/adapted/` (a complete run folder), unless `keep_adapted`. The record says which was kept and why.
    """
    from transferkit.finetune import FinetuneConfig, finetune
    from transferkit.finetune.batches import make_targets
    from transferkit.finetune.checkpoint import RunFolder
    from transferkit.finetune.run import load_run
    from transferkit.model import write_model
    from transferkit.model.migrate import finetune_info

    source, target = source.in_memory(), target.in_memory()  # read in shuffled order, epoch after epoch

    if method not in END_TO_END:
        raise AdaptError(f"unknown end-to-end method {method!r}: use one of {', '.join(END_TO_END)}")
    config = config or FinetuneConfig()
    if config.strategy == "head":
        raise AdaptError(f"--method {method} aligns backbone features, so the backbone must train: use strategy "
                         "full, last-k, gradual or lora")
    labels = make_targets(source)
    check_target(target, backbone.modality, labels.task)
    handed = (Path(out) / "run.json").exists() and (RunFolder(out).read().get("adaptation") or {}).get("kept")
    if handed == "unadapted":
        raise AdaptError(f"{out} holds the unadapted model that an earlier run handed over (the validators expected "
                         f"{method} to hurt); the adapted run is in {Path(out) / 'adapted'}: choose another --out")
    if reference_run is not None:
        _check_reference(reference_run, source)
    term = DomainTerm(END_TO_END[method], target, backbone.feature_dim, labels.n_outputs, tradeoff=tradeoff,
                      batch_size=config.batch_size, seed=config.seed)
    res = finetune(backbone, source, out, config, terms=[term], backbone_options=backbone_options, resume=resume,
                   progress=progress, log=log, stop_after_steps=stop_after_steps, device=device)
    if int(os.environ.get("RANK", "0")) == 0:  # under DDP the main process writes the record
        folder = RunFolder(out)
        info = folder.read()
        stale = ("validators", "kept", "source_run", "metrics", "adapted_run")  # a finished run's earlier verdict
        record = {**{k: v for k, v in (info.get("adaptation") or {}).items() if k not in stale}, **term.record(),
                  "method": method}
        adapted = load_run(out) if target_labels is not None or reference_run is not None else None
        acc = None
        if target_labels is not None:
            acc = float((adapted.predict(target) == np.asarray(target_labels)).mean())
            record["metrics"] = {"target_accuracy": acc}
        if reference_run is not None:
            record.update(_judge(adapted, acc, reference_run, target, target_labels, config.seed, keep_adapted))
        handing_over = record.get("kept") == "unadapted"
        # a folder that is about to move to out/adapted/ describes, on its own, the adapted model
        info["adaptation"] = _adapted_record(record, out) if handing_over else record
        folder.write(info)
        write_model(folder.path, finetune_info(info))
        if handing_over:
            info = _hand_over_reference(out, reference_run, record)
        res.info = info
    return res


def _check_reference(reference_run: str | Path, source: Dataset) -> None:
    """Refuse, before any training, a reference that is not an unadapted fine-tuning run of the source's classes
    or that cannot be loaded."""
    from transferkit.finetune.checkpoint import RunFolder
    from transferkit.finetune.run import load_run

    info = RunFolder(reference_run).read()
    if info.get("status") != "complete" or info.get("kind", "finetune") != "finetune":
        raise AdaptError(f"--source-run {reference_run} is not a finished `transferkit finetune` run folder")
    if (info.get("terms") or {}).get("domain") or info.get("adaptation"):
        raise AdaptError(f"--source-run {reference_run} is itself adapted: give the plain `transferkit finetune` run "
                         "on the source that adaptation is compared with")
    if list(info.get("class_names") or []) != list(source.class_names):
        raise AdaptError(f"--source-run {reference_run} predicts classes {info.get('class_names')}, the "
                         f"source holds {list(source.class_names)}: give the run fine-tuned on this source")
    load_run(reference_run, device="cpu")  # its weights and backbone load (else the error names the cause)


def _judge(adapted: Any, adapted_accuracy: float | None, reference_run: str | Path, target: Dataset,
           target_labels: np.ndarray | None, seed: int, keep_adapted: bool) -> dict:
    """The validators' panels of the reference (unadapted) and the adapted run (loaded, with its target accuracy
    when labels were given) on the target, and what is kept."""
    from transferkit.adapt.source_free import network_panel, panel_items, verdict
    from transferkit.finetune.run import load_run

    probe = panel_items(target, seed)
    ref = load_run(reference_run)
    judged = verdict(network_panel(ref, probe, seed), network_panel(adapted, probe, seed), len(probe))
    rec: dict = {"source_run": str(Path(reference_run).resolve()), "validators": judged,
                 "kept": "unadapted" if judged["expected"] == "hurt" and not keep_adapted else "adapted"}
    if target_labels is not None:
        before = float((ref.predict(target) == np.asarray(target_labels)).mean())
        rec["metrics"] = {"target_accuracy_before": before, "target_accuracy_adapted": adapted_accuracy,
                          "target_accuracy": adapted_accuracy if rec["kept"] == "adapted" else before}
    return rec


def _adapted_record(record: dict, out: str | Path) -> dict:
    """The adaptation record of the adapted run once it is handed over to out/adapted/: its own target accuracy,
    and where the unadapted model went."""
    metrics = dict(record.get("metrics") or {})
    if "target_accuracy_adapted" in metrics:
        metrics["target_accuracy"] = metrics["target_accuracy_adapted"]
    return {**record, "kept": "adapted", **({"metrics": metrics} if metrics else {}),
            "handed_over": f"the validators expected harm: {out} holds the unadapted model"}


def _hand_over_reference(out: str | Path, reference_run: str | Path, record: dict) -> dict:
    """Move the adapted run into out/adapted/ and write the reference model into `out` with the adaptation record
    (kept: unadapted); returns out's new run.json."""
    import shutil

    from transferkit.finetune.checkpoint import RunFolder
    from transferkit.model import write_model
    from transferkit.model.migrate import finetune_info

    out = Path(out)
    partial, moved = out / ".adapted.partial", out / "adapted"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for f in list(out.iterdir()):
        if f != partial:
            shutil.move(str(f), partial / f.name)
    partial.rename(moved)
    ref = RunFolder(reference_run)
    shutil.copy2(ref.model_file, out / ref.model_file.name)
    info = {**ref.read(), "adaptation": {**record, "adapted_run": str(moved.resolve())}}
    RunFolder(out).write(info)
    write_model(out, finetune_info(info))
    return info


__all__ = ["DOMAIN_LOSSES", "END_TO_END", "DomainTerm", "adapt_end_to_end", "check_target", "target_batch"]
