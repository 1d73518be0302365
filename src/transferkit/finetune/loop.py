"""The training loop: seeded, resumable at any optimizer step, data-parallel through Hugging Face Accelerate.

One global batch of `batch_size` items is cut into equal slices per process (so 1 process and
`accelerate launch --num_processes N` see the same global batch) and each slice into `grad_accum`
micro-batches. Losses are summed and divided by the global batch size, so gradients equal those of
the whole batch at once whatever the split. The data order of epoch e is a permutation drawn from
(seed, e), so a resumed run skips exactly the batches already done and ends where an uninterrupted
run ends. Ctrl-C (SIGINT/SIGTERM) finishes the current step, saves, and exits.

With `target=` (unlabelled items) and `config.domain_loss`, each source micro-batch is collated together with
an equally sized target micro-batch (cut from the global target batch exactly as the source batch is) and a
domain loss is added; see `transferkit.adapt.end_to_end`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.adapt.end_to_end import target_batch
from transferkit.adapt.losses import dann_schedule
from transferkit.backbones.base import Backbone
from transferkit.data.dataset import Dataset
from transferkit.data.splits import stratified_split
from transferkit.errors import DataError
from transferkit.features.runtime import peak_rss_mb
from transferkit.finetune import lora
from transferkit.finetune.checkpoint import (
    RunFolder,
    load_model_tensors,
    model_tensors,
    optimizer_from_files,
    restore_rng,
    save_tensors,
)
from transferkit.finetune.config import FinetuneConfig, FinetuneError, Interrupted
from transferkit.finetune.model import (
    TransferModel,
    check_strategy,
    count_parameters,
    enable_grad_checkpointing,
    ever_trained,
    frozen_norm_eval,
    init_head,
    n_blocks,
    precise_bn,
    set_trainable,
    trainable_blocks,
    unused_parameters,
)
from transferkit.finetune.optim import make_optimizer, make_scheduler, param_groups
from transferkit.heads.metrics import PRIMARY_METRIC, score_all

#: Training items whose pretrained features set the head's input standardisation.
CALIBRATION_ITEMS = 128


@dataclass
class FinetuneResult:
    """What a run produced: its folder, metrics per split, cost and the per-epoch history."""

    out: Path
    metrics: dict[str, dict[str, float]]
    history: list[dict]
    trainable_parameters: int
    total_parameters: int
    wall_time_s: float
    peak_memory_mb: float
    best_epoch: int | None
    steps: int
    info: dict = field(default_factory=dict)


@dataclass
class _Target:
    """Training targets: class ids (classification) or standardised values (regression)."""

    task: str
    y: np.ndarray
    class_names: tuple[str, ...]
    mean: float = 0.0
    std: float = 1.0

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) if self.task == "classification" else 1

    def tensor(self, idx: Sequence[int]) -> torch.Tensor:
        v = self.y[np.asarray(idx, dtype=np.int64)]
        if self.task == "classification":
            return torch.as_tensor(v, dtype=torch.long)
        return torch.as_tensor((v - self.mean) / self.std, dtype=torch.float32)


def make_target(data: Dataset) -> _Target:
    """Check the labels and encode them for training."""
    if data.labels is None:
        raise DataError(f"data set {data.name!r} has no labels: fine-tuning needs a label per item")
    if data.task == "classification":
        y = np.asarray(data.labels, dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            raise DataError(f"data set {data.name!r} has only one class ({data.class_names[present[0]]!r}): "
                            "a classifier needs at least two")
        return _Target("classification", y, tuple(data.class_names))
    y = np.asarray(data.labels, dtype=np.float64)
    if not np.isfinite(y).all():
        raise DataError(f"data set {data.name!r} has NaN or infinite targets: clean them before fine-tuning")
    return _Target("regression", y, (), float(y.mean()), float(y.std() or 1.0))


# ---- batches --------------------------------------------------------------------------------------


class _Batches(torch.utils.data.Dataset):
    """Index batches → (collated inputs, targets); a DataLoader over it collates in worker processes."""

    def __init__(self, data: Dataset, batches: list[list[int]], collate: Callable, target: _Target | None) -> None:
        self.data, self.batches, self.collate, self.target = data, batches, collate, target

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[dict, torch.Tensor | None, int]:
        idx = self.batches[i]
        items = [self.data.items[j] for j in idx]
        return self.collate(items), (self.target.tensor(idx) if self.target else None), len(idx)


class _PairBatches(_Batches):
    """Source index batches paired with target ones → (inputs of source items then target items, targets, n)."""

    def __init__(self, data: Dataset, batches: list[list[int]], collate: Callable, target: _Target,
                 other: Dataset, other_batches: list[list[int]]) -> None:
        super().__init__(data, batches, collate, target)
        self.other, self.other_batches = other, other_batches

    def __getitem__(self, i: int) -> tuple[dict, torch.Tensor | None, int]:
        idx = self.batches[i]
        items = [self.data.items[j] for j in idx] + [self.other.items[j] for j in self.other_batches[i]]
        return self.collate(items), self.target.tensor(idx), len(idx)


def _loader(data: Dataset, batches: list[list[int]], collate: Callable, target: _Target | None,
            num_workers: int, ds: _Batches | None = None) -> Iterator[tuple[dict, torch.Tensor | None, int]]:
    ds = ds or _Batches(data, batches, collate, target)
    if num_workers <= 0 or len(batches) < 2:
        return (ds[i] for i in range(len(ds)))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers,
                                         generator=torch.Generator().manual_seed(0),
                                         persistent_workers=False, multiprocessing_context="spawn")
    return iter(loader)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of training items in `epoch` (a pure function of seed and epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = epoch_order(n, seed, epoch)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def local_micro_batches(batch: np.ndarray, rank: int, world: int, grad_accum: int) -> list[list[int]]:
    """This process's micro-batches of one global batch: equal contiguous slices, then `grad_accum` parts."""
    mine = np.array_split(batch, world)[rank]
    return [m.tolist() for m in np.array_split(mine, grad_accum) if len(m)]


# ---- evaluation -----------------------------------------------------------------------------------


@torch.inference_mode()
def predict_outputs(model: TransferModel, data: Dataset, collate: Callable, *, indices: np.ndarray | None = None,
                    batch_size: int = 64, device: torch.device | None = None,
                    autocast: Callable[[], Any] | None = None, num_workers: int = 0) -> np.ndarray:
    """Raw model outputs (logits or standardised values) for the items at `indices` (all by default), in order."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    batches = [idx[i : i + batch_size].tolist() for i in range(0, len(idx), batch_size)]
    out = []
    try:
        for inputs, _, _ in _loader(data, batches, collate, None, num_workers):
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            with autocast() if autocast else contextlib.nullcontext():
                out.append(model(inputs).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.head.out_features), np.float32)


def _scores(target: _Target, outputs: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    y = target.y[idx]
    if target.task == "classification":
        return score_all("classification", y, outputs.argmax(1))
    return score_all("regression", y, outputs[:, 0] * target.std + target.mean)


# ---- the loop -------------------------------------------------------------------------------------


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks between steps; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


#: Training items whose batches recompute batch-norm statistics at each epoch end when they train.
PRECISE_BN_ITEMS = 1024


def recompute_bn_statistics(model: TransferModel, data: Dataset, train_idx: np.ndarray, collate: Callable,
                            config: FinetuneConfig, device: torch.device) -> None:
    """Precise BN over a fixed seeded subset of training items (same on every process, so ranks agree)."""
    idx = np.sort(np.random.default_rng([config.seed, 2]).permutation(train_idx)[:PRECISE_BN_ITEMS])
    size = max(config.batch_size // config.grad_accum, 2)
    batches = [{k: v.to(device) for k, v in collate([data.items[int(i)] for i in idx[s : s + size]]).items()}
               for s in range(0, len(idx), size) if len(idx[s : s + size]) > 1]
    precise_bn(model, batches)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()  # this process's own peak, also when started by torchrun or a compare child


def _accelerator(config: FinetuneConfig) -> Any:
    from accelerate import Accelerator

    from transferkit.features.runtime import native_bf16

    cpu = not torch.cuda.is_available()
    device = torch.device("cpu" if cpu else "cuda")
    if config.precision == "bf16" or (config.precision == "auto" and native_bf16(device)):
        mp = "bf16"
    else:
        mp = "no"
    return Accelerator(cpu=cpu, mixed_precision=mp)


def _check_resume(folder: RunFolder, info: dict, config: FinetuneConfig, data: Dataset, spec: str,
                  domain: Dataset | None = None) -> None:
    old = FinetuneConfig.from_dict(info["config"]).to_dict()
    new = config.to_dict()
    changed = [k for k in new if old.get(k) != new[k] and k not in FinetuneConfig.RESUMABLE_CHANGES]
    if changed:
        raise FinetuneError(f"--resume {folder.path}: settings changed since the run started ({', '.join(changed)}); "
                            "resume with the same settings, or start a new run in another --out")
    if info["data"]["fingerprint"] != data.fingerprint:
        raise FinetuneError(f"--resume {folder.path}: the data differ from the data the run started on; "
                            "resume with the same data, or start a new run in another --out")
    if info["backbone"]["spec"] != spec:
        raise FinetuneError(f"--resume {folder.path}: the run started from {info['backbone']['spec']}, not {spec}")
    if domain is not None and (info.get("adaptation") or {}).get("target_fingerprint") != domain.fingerprint:
        raise FinetuneError(f"--resume {folder.path}: the target data differ from those the run started on; "
                            "resume with the same --target, or start a new run in another --out")


def finetune(
    backbone: Backbone,
    data: Dataset,
    out: str | Path,
    config: FinetuneConfig | None = None,
    *,
    resume: bool = False,
    backbone_options: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: None,
    stop_after_steps: int | None = None,
    target: Dataset | None = None,
) -> FinetuneResult:
    """Fine-tune `backbone` on `data` into the run folder `out`; see the module docstring for the mechanics.

    backbone_options: how to rebuild the backbone from its spec (pretrained, pooling, image_size,
    max_length) — written to run.json so `load_run` and `--resume` rebuild the same network.
    stop_after_steps: stop (as on Ctrl-C, state saved) once this many optimizer steps are done — for tests.
    target: unlabelled target-domain items for `config.domain_loss` (end-to-end domain adaptation).
    """
    config = config or FinetuneConfig()
    folder = RunFolder(out)
    t_start = time.perf_counter()
    domain, target = target, make_target(data)  # `target` below means the training labels
    if (domain is None) != (config.domain_loss is None):
        raise FinetuneError("end-to-end adaptation needs both target items and domain_loss: give "
                            + ("config.domain_loss (dann, cdan or mmd)" if domain is not None else "target=DATA"))
    if domain is not None:
        from transferkit.adapt.end_to_end import check_target

        check_target(domain, backbone.modality, target.task)
    check_strategy(config, backbone)
    prior = folder.read() if folder.exists() else None
    if prior and not resume:
        what = "a finished run" if prior.get("status") == "complete" else "an unfinished run"
        fix = ("choose another --out" if prior.get("status") == "complete"
               else "add --resume to continue it, or choose another --out")
        raise FinetuneError(f"{folder.path} already holds {what}: {fix}")
    if resume and not prior:
        raise FinetuneError(f"--resume {folder.path}: there is no run there to resume; drop --resume to start one")
    if prior:
        _check_resume(folder, prior, config, data, backbone.spec, domain)
        if prior.get("status") == "complete":
            log(f"{folder.path} is already complete; nothing to do")
            return result_from_folder(folder)

    accelerator = _accelerator(config)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % (world * config.grad_accum):
        raise FinetuneError(f"batch_size={config.batch_size} cannot be split into {world} processes × "
                            f"{config.grad_accum} micro-batches: make it a multiple of {world * config.grad_accum}")

    split = stratified_split(target.y if target.task == "classification" else data.labels, val=config.val,
                             test=config.test, seed=config.seed,
                             class_names=target.class_names or None)
    train_idx, val_idx, test_idx = split.train, split.val, split.test

    # --- model ---
    base_digest = backbone.weights_digest()
    lora_modules = lora.inject(backbone, config) if config.strategy == "lora" else []
    model = TransferModel(backbone, target.n_outputs)
    init_head(model.head, config.seed)
    calib = np.sort(np.random.default_rng([config.seed, 1]).permutation(train_idx)[:CALIBRATION_ITEMS])
    if backbone.pretrained:  # random weights have no feature statistics worth fixing
        model.calibrate(torch.as_tensor(backbone.embed([data.items[int(i)] for i in calib], batch_size=64)))
    if config.grad_checkpointing:
        enable_grad_checkpointing(backbone)
    nb = n_blocks(backbone)
    ever = ever_trained(config, nb)
    set_trainable(model, backbone, config, ever)
    probe = backbone.collate([data.items[int(i)] for i in calib[:2]])
    unused = unused_parameters(model, probe)
    trained_names = {n for n, p in model.named_parameters() if p.requires_grad} - unused
    total = sum(p.numel() for n, p in model.named_parameters() if n not in unused and "lora_" not in n)
    for n, p in model.named_parameters():
        p.requires_grad_(n in trained_names)
    saved_names = trained_names if backbone.pretrained else {n for n, _ in model.named_parameters()}
    trainable = count_parameters(model, trained_names)
    model.to(accelerator.device)

    groups = param_groups(model, backbone, config, trained_names)
    term = None
    if domain is not None:  # the domain discriminator trains with the head's rate; it is never part of the model
        from transferkit.adapt.end_to_end import DomainTerm

        term = DomainTerm(config.domain_loss, backbone.feature_dim, target.n_outputs, config.seed)
        term.to(accelerator.device)
        if any(True for _ in term.parameters()):
            groups.append({"params": list(term.parameters()), "names": [f"domain.{n}" for n, _ in
                                                                       term.named_parameters()],
                           "lr": config.head_rate, "weight_decay": config.weight_decay})
    optimizer = make_optimizer(groups, config)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    scheduler = make_scheduler(optimizer, config, total_steps)

    class_weights = None
    if config.class_weights == "balanced" and target.task == "classification":
        counts = np.bincount(target.y[train_idx], minlength=target.n_outputs).astype(np.float64)
        w = len(train_idx) / (target.n_outputs * np.maximum(counts, 1))
        class_weights = torch.as_tensor(w, dtype=torch.float32, device=accelerator.device)

    def loss_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if target.task == "classification":
            return nn.functional.cross_entropy(out.float(), y, weight=class_weights, reduction="sum",
                                               label_smoothing=config.label_smoothing)
        return nn.functional.mse_loss(out[:, 0].float(), y, reduction="sum")

    # --- state (fresh or resumed) ---
    step, epoch, pos, history = 0, 0, 0, []
    epoch_loss, epoch_items = 0.0, 0
    best_score, best_epoch, bad_epochs = -math.inf, None, 0
    best_weights: dict[str, torch.Tensor] | None = None
    trainer = folder.read_trainer() if prior else None
    if trainer:
        st = folder.load_state(trainer, rank)
        load_model_tensors(model, {k: v for k, v in st["weights"].items() if not k.startswith("domain.")},
                           folder.state)
        if term is not None:
            load_model_tensors(term, {k.removeprefix("domain."): v for k, v in st["weights"].items()
                                      if k.startswith("domain.")}, folder.state)
        optimizer_from_files(optimizer, st["optimizer"], trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        if st["rng"] is not None:
            restore_rng(st["rng"])
        step, epoch, pos = trainer["step"], trainer["epoch"], trainer["position"]
        history, bad_epochs = trainer["history"], trainer["bad_epochs"]
        epoch_loss, epoch_items = trainer["epoch_loss"], trainer["epoch_items"]
        best_score = trainer["best_score"] if trainer["best_score"] is not None else -math.inf
        best_epoch, best_weights = trainer["best_epoch"], st["best"]
        log(f"resuming {folder.path} at step {step}/{total_steps} (epoch {epoch + 1}, batch {pos})")
    elif prior:
        log(f"{folder.path}: the run stopped before its first checkpoint; starting it again")
    if not trainer:
        torch.manual_seed(config.seed)

    info = {
        "kind": "finetune",
        "status": "running",
        "backbone": {"spec": backbone.spec, "modality": backbone.modality, "base_digest": base_digest,
                     "pretrained": backbone.pretrained, "feature_dim": backbone.feature_dim,
                     **(backbone_options or {})},
        "task": target.task,
        "class_names": list(target.class_names),
        "target_scale": {"mean": target.mean, "std": target.std},
        "config": config.to_dict(),
        "data": {"name": data.name, "fingerprint": data.fingerprint, "n": len(data), **split.sizes()},
        "lora_modules": lora_modules,
        "saved_parameters": sorted(saved_names),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "processes": world,
        "precision": accelerator.mixed_precision,
    }
    if domain is not None:
        info["adaptation"] = {"method": f"{config.domain_loss}-e2e", "tradeoff": config.domain_tradeoff,
                              "target": domain.name, "target_items": len(domain),
                              "target_fingerprint": domain.fingerprint}
    if accelerator.is_main_process:
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.write({**(prior or {}), **info})
    accelerator.wait_for_everyone()

    ddp_model = accelerator.prepare_model(model)
    optimizer = accelerator.prepare_optimizer(optimizer)
    unwrapped: TransferModel = accelerator.unwrap_model(ddp_model)
    has_disc = term is not None and term.disc is not None
    ddp_term = accelerator.prepare_model(term) if has_disc else term
    device = accelerator.device

    def save(step_now: int, epoch_now: int, pos_now: int, new_best: bool) -> None:
        folder.save_rng(step_now, rank)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            trainer_json = {
                "epoch": epoch_now, "position": pos_now, "scheduler": scheduler.state_dict(), "history": history,
                "best_score": None if best_score == -math.inf else best_score, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "epoch_loss": epoch_loss, "epoch_items": epoch_items,
                "files": (folder.read_trainer() or {}).get("files", {}),
            }
            weights = model_tensors(unwrapped, saved_names)
            if term is not None:
                weights.update({f"domain.{k}": v for k, v in term.state_dict().items()})
            folder.save_state(step=step_now, trainer=trainer_json, weights=weights,
                              optimizer=optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                              best=best_weights if new_best else None)
            folder.write_history(history)
        accelerator.wait_for_everyone()

    metric = PRIMARY_METRIC[target.task]
    bn_train = config.bn_train if config.bn_train is not None else not backbone.pretrained
    stop_reason = None
    with _StopFlag() as flag:
        while epoch < config.epochs and step < total_steps:
            k = trainable_blocks(config, nb, epoch)
            set_trainable(model, backbone, config, k)
            now_training = {n for n, p in model.named_parameters() if p.requires_grad} & trained_names
            for n, p in model.named_parameters():
                # DDP registered the parameters once: keep them all there and drop frozen ones' gradients
                p.requires_grad_(n in (trained_names if world > 1 else now_training))
            frozen_now = [p for n, p in model.named_parameters() if n in trained_names and n not in now_training]
            ddp_model.train()
            if term is not None:
                term.train()
            if k == 0 and config.strategy != "lora":
                unwrapped.backbone.eval()  # frozen backbone: no dropout, fixed statistics, as a probe sees it
            frozen_norm_eval(unwrapped, all_norms=not bn_train)

            batches = global_batches(len(train_idx), config.batch_size, config.seed, epoch)
            todo = batches[pos:]
            if config.max_steps:
                todo = todo[: max(0, total_steps - step)]
            micro = [local_micro_batches(train_idx[b], rank, world, config.grad_accum) for b in todo]
            flat = [m for ms in micro for m in ms]
            sizes = [len(b) for b in todo]
            pairs = None
            if domain is not None:  # the target batch of each source batch, split across processes the same way
                tb = [target_batch(len(domain), len(b), config.batch_size, config.seed, epoch, pos + i)
                      for i, b in enumerate(todo)]
                tflat = [m for t in tb for m in local_micro_batches(t, rank, world, config.grad_accum)]
                pairs = _PairBatches(data, flat, backbone.collate, target, domain, tflat)
            it = _loader(data, flat, backbone.collate, target, config.num_workers, pairs)
            bar = _progress(len(batches), pos, f"epoch {epoch + 1}/{config.epochs}",
                            progress and accelerator.is_main_process)
            for b_i, ms in enumerate(micro):
                n_global = sizes[b_i]
                loss_total = torch.zeros((), device=device)
                for m_i in range(len(ms)):
                    inputs, y, _ = next(it)
                    inputs = {kk: v.to(device, non_blocking=True) for kk, v in inputs.items()}
                    y = y.to(device)
                    sync = m_i == len(ms) - 1
                    ctx = contextlib.ExitStack()
                    if not sync and world > 1:
                        ctx.enter_context(accelerator.no_sync(ddp_model))
                        if has_disc:
                            ctx.enter_context(accelerator.no_sync(ddp_term))
                    with ctx:
                        with accelerator.autocast():
                            if term is None:
                                loss = loss_sum(ddp_model(inputs), y) * (world / n_global)
                            else:
                                out_all, feats = ddp_model(inputs, with_features=True)
                                m = len(y)
                                dom = ddp_term(feats, out_all, m, dann_schedule(step / max(total_steps, 1)))
                                loss = (loss_sum(out_all[:m], y) + config.domain_tradeoff * dom) * (world / n_global)
                        accelerator.backward(loss)
                    loss_total += loss.detach()
                if not ms:  # this process got no items of a tiny last batch: join the all-reduce with zeros
                    with accelerator.autocast():
                        dummy = ddp_model({kk: v.to(device) for kk, v in
                                           backbone.collate([data.items[int(train_idx[0])]]).items()})
                    if has_disc:
                        dummy = dummy.sum() * 0.0 + ddp_term(None, None, 0, 0.0)
                    accelerator.backward(dummy.sum() * 0.0)
                for p in frozen_now:
                    p.grad = None
                if config.clip:
                    clipped = list(model.parameters()) + (list(term.parameters()) if term is not None else [])
                    accelerator.clip_grad_norm_([p for p in clipped if p.grad is not None], config.clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                pos += 1
                batch_loss = float(accelerator.reduce(loss_total, reduction="sum")) / world
                epoch_loss += batch_loss * n_global
                epoch_items += n_global
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{batch_loss:.4f}", lr=f"{scheduler.get_last_lr()[-1]:.2e}")
                stop_now = flag.raised or (stop_after_steps is not None and step >= stop_after_steps)
                if stop_now or (step % config.checkpoint_every == 0 and pos < len(batches)):
                    save(step, epoch, pos, False)
                if stop_now:
                    if bar is not None:
                        bar.close()
                    raise Interrupted(f"stopped at step {step}/{total_steps}; state saved in {folder.state}: "
                                      "rerun the same command with --resume to continue")
            if bar is not None:
                bar.close()
            if pos < len(batches):  # max_steps ended the run inside this epoch
                break
            # --- end of epoch: validate, track the best, maybe stop early ---
            if bn_train:
                recompute_bn_statistics(unwrapped, data, train_idx, backbone.collate, config, device)
            row = {"epoch": epoch + 1, "step": step, "train_loss": epoch_loss / max(epoch_items, 1),
                   "lr": scheduler.get_last_lr()[-1], "trainable_parameters": count_parameters(model, now_training),
                   "time_s": round(time.perf_counter() - t_start, 3)}
            new_best = False
            if len(val_idx):
                outputs = predict_outputs(unwrapped, data, backbone.collate, indices=val_idx,
                                          batch_size=max(config.batch_size, 64), device=device,
                                          autocast=accelerator.autocast, num_workers=config.num_workers)
                scores = _scores(target, outputs, val_idx)
                row.update({f"val_{kk}": v for kk, v in scores.items()})
                if scores[metric] > best_score:
                    best_score, best_epoch, bad_epochs, new_best = scores[metric], epoch + 1, 0, True
                    best_weights = {kk: v.detach().cpu().clone()
                                    for kk, v in model_tensors(unwrapped, saved_names).items()}
                else:
                    bad_epochs += 1
            history.append(row)
            if accelerator.is_main_process:
                log("epoch {epoch}: loss {train_loss:.4f}".format(**row)
                    + (f", val {metric} {row.get('val_' + metric):.4f}" if len(val_idx) else ""))
            epoch += 1
            pos, epoch_loss, epoch_items = 0, 0.0, 0
            if config.patience and bad_epochs >= config.patience:
                stop_reason = f"early stop: val {metric} did not improve for {bad_epochs} epochs"
                log(stop_reason)
                save(step, epoch, pos, new_best)
                break
            save(step, epoch, pos, new_best)

    # --- finish: best weights, final metrics, artefacts ---
    if best_weights is not None:
        load_model_tensors(unwrapped, best_weights, folder.state)
    metrics: dict[str, dict[str, float]] = {}
    for part, idx in (("val", val_idx), ("test", test_idx)):
        if len(idx):
            outputs = predict_outputs(unwrapped, data, backbone.collate, indices=idx,
                                      batch_size=max(config.batch_size, 64), device=device,
                                      autocast=accelerator.autocast, num_workers=config.num_workers)
            metrics[part] = _scores(target, outputs, idx)
    wall = time.perf_counter() - t_start + (prior or {}).get("wall_time_s", 0.0)
    peak = _peak_memory_mb(device)
    done = {**info, "status": "complete", "metrics": metrics, "best_epoch": best_epoch, "steps": step,
            "stopped": stop_reason, "wall_time_s": wall, "peak_memory_mb": peak}
    if accelerator.is_main_process:
        save_tensors(folder.model_file, model_tensors(unwrapped, saved_names), metadata={"format": "transferkit-run"})
        folder.write_history(history)
        folder.write(done)
        if folder.state.exists():
            import shutil

            shutil.rmtree(folder.state, ignore_errors=True)
    accelerator.wait_for_everyone()
    return result_from_info(folder, done, history)


def _progress(total: int, start: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True)


def result_from_info(folder: RunFolder, info: dict, history: list[dict]) -> FinetuneResult:
    return FinetuneResult(
        out=folder.path, metrics=info.get("metrics", {}), history=history,
        trainable_parameters=info["trainable_parameters"], total_parameters=info["total_parameters"],
        wall_time_s=info.get("wall_time_s", 0.0), peak_memory_mb=info.get("peak_memory_mb", 0.0),
        best_epoch=info.get("best_epoch"), steps=info.get("steps", 0), info=info,
    )


def result_from_folder(folder: RunFolder) -> FinetuneResult:
    """The result record of a finished run folder."""
    from transferkit.io import read_json

    info = folder.read()
    hist_file = folder.path / "history.json"
    return result_from_info(folder, info, read_json(hist_file) if hist_file.exists() else [])


__all__ = ["FinetuneResult", "Interrupted", "finetune", "predict_outputs"]
