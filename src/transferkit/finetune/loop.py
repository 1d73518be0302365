"""The training loop: seeded, resumable at any optimizer step, data-parallel through Hugging Face Accelerate.

Batches are cut as `batches.py` says (the same global batch for one process or N); losses are summed and divided
by the global batch size, so gradients equal those of the whole batch at once whatever the split. A resumed run
skips exactly the batches already done and ends where an uninterrupted run ends. Ctrl-C (SIGINT/SIGTERM)
finishes the current step, saves, and exits. Extra loss terms (`terms.py`, e.g. domain adaptation) plug in
without the loop knowing what they compute.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.data.dataset import Dataset
from transferkit.data.splits import stratified_split
from transferkit.errors import DataError
from transferkit.features.inference import is_cnn
from transferkit.finetune import lora
from transferkit.finetune.augment import Augment, resolve_augment
from transferkit.finetune.batches import (
    Batches,
    Targets,
    global_batches,
    loader,
    local_micro_batches,
    make_targets,
)
from transferkit.finetune.checkpoint import (
    RunFolder,
    load_model_tensors,
    model_tensors,
    optimizer_from_files,
    restore_rng,
    save_tensors,
)
from transferkit.finetune.config import FinetuneConfig, FinetuneError, Interrupted, race_after
from transferkit.finetune.contrastive import PairTerm, fit_head
from transferkit.finetune.lr_search import search_lr
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
from transferkit.finetune.state import LoopState
from transferkit.finetune.terms import LossTerm, TermBatch, check_terms, gather_rows
from transferkit.heads.metrics import PRIMARY_METRIC, score_all
from transferkit.model import write_model
from transferkit.model.migrate import finetune_info
from transferkit.runtime import device_of, peak_rss_mb, resolve_device, resolve_precision, tune_allocator

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


@torch.inference_mode()
def predict_outputs(model: TransferModel, data: Dataset, collate: Callable, *, indices: np.ndarray | None = None,
                    batch_size: int = 64, device: torch.device | None = None,
                    autocast: Callable[[], Any] | None = None, num_workers: int = 0,
                    with_features: bool = False) -> np.ndarray:
    """Raw model outputs (logits or standardised values) for the items at `indices` (all by default), in order;
    with_features: the standardised features the head reads instead."""
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size}: give at least 1")
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    batches = [idx[i : i + batch_size].tolist() for i in range(0, len(idx), batch_size)]
    out = []
    try:
        for inputs, _, _ in loader(Batches(data, batches, collate, None), num_workers):
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            with autocast() if autocast else contextlib.nullcontext():
                got = model(inputs, with_features=True)[1] if with_features else model(inputs)
                out.append(got.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.head.in_features if with_features
                                                     else model.head.out_features), np.float32)


def _scores(target: Targets, outputs: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    y = target.y[idx]
    if target.task == "classification":
        return score_all("classification", y, outputs.argmax(1))
    return score_all("regression", y, outputs[:, 0] * target.std + target.mean)


def _loss(target: Targets, outputs: np.ndarray, idx: np.ndarray) -> float:
    """Mean validation loss: cross-entropy of the logits (classification) or MSE of the standardised values."""
    out = torch.as_tensor(outputs, dtype=torch.float64)
    if target.task == "classification":
        return float(nn.functional.cross_entropy(out, torch.as_tensor(target.y[idx], dtype=torch.long)))
    return float(nn.functional.mse_loss(out[:, 0], target.tensor(idx).double()))


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


def training_precision(precision: str, device: Any, model: nn.Module) -> str:
    """The precision a fine-tune trains in: the runtime policy (`resolve_precision`), except that "auto" keeps a
    convolutional network on the CPU in fp32.

    Measured on a 2-core Xeon with AMX (`benchmarks/finetune_precision.py`, EfficientNet-Lite0 at 64 px, full
    fine-tuning on 1,200 digits, lr 1e-3): bf16 autocast diverged (test accuracy 0.30 and 0.50 against 0.89 and 0.91
    in fp32 for two seeds; its first-epoch training loss 4.1, above chance) and was not faster (0.95× fp32's
    samples/s). On one batch its gradients for the early layers had a cosine near 0 to fp32's, whatever the CPU
    instruction set oneDNN was allowed: rounding noise that AdamW scales up to full-size steps. Transformers train in
    bf16 where the policy says so (MiniLM: the same test accuracy, 1.47× the samples/s). `bf16` asked for by name
    is used as asked."""
    resolved = resolve_precision(precision, device)
    if precision == "auto" and resolved == "bf16" and device_of(device).type == "cpu" and is_cnn(model):
        return "fp32"
    return resolved


def _accelerator(config: FinetuneConfig, device: str, model: nn.Module) -> Any:
    """Accelerate's accelerator on `device` (auto: CUDA when present) with bf16 autocast where
    `training_precision` says so."""
    from accelerate import Accelerator

    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None:
        raise FinetuneError(f"--device {device}: fine-tuning places its processes itself; pick the GPU with "
                            f"CUDA_VISIBLE_DEVICES={dev.index} and --device cuda")
    if dev.type not in ("cpu", "cuda"):
        raise FinetuneError(f"--device {device}: fine-tuning runs on cpu or cuda")
    mp = "bf16" if training_precision(config.precision, dev, model) == "bf16" else "no"
    try:
        return Accelerator(cpu=dev.type == "cpu", mixed_precision=mp)
    except ValueError as e:
        # Accelerate keeps one state per process; a second run in the same process with another precision or
        # device (a notebook, `transferkit.load(...).fit`, a test) may replace it, unless processes share it
        from accelerate.state import AcceleratorState, GradientState, PartialState

        if "already been initialized" not in str(e) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        GradientState._reset_state()
        return Accelerator(cpu=dev.type == "cpu", mixed_precision=mp)


def _check_resume(folder: RunFolder, info: dict, config: FinetuneConfig, data: Dataset, spec: str,
                  terms: Sequence[LossTerm]) -> None:
    old = FinetuneConfig.from_dict(info["config"]).to_dict()
    new = config.to_dict()
    for reason in [t.mismatch(info) for t in terms] + [f"the run started with a {name} loss term, not given now"
                                                         for name in (info.get("terms") or {})
                                                         if name not in {t.name for t in terms}]:
        if reason:
            raise FinetuneError(f"--resume {folder.path}: {reason}; resume with the same settings, or start a new "
                                "run in another --out")
    changed = [k for k in new if old.get(k) != new[k] and k not in FinetuneConfig.RESUMABLE_CHANGES]
    if changed:
        raise FinetuneError(f"--resume {folder.path}: settings changed since the run started ({', '.join(changed)}); "
                            "resume with the same settings, or start a new run in another --out")
    if info["data"]["fingerprint"] != data.fingerprint:
        raise FinetuneError(f"--resume {folder.path}: the data differ from the data the run started on; "
                            "resume with the same data, or start a new run in another --out")
    if info["backbone"]["spec"] != spec:
        raise FinetuneError(f"--resume {folder.path}: the run started from {info['backbone']['spec']}, not {spec}")


def _over_time(accelerator: Any, elapsed: float, limit: float) -> bool:
    """Whether the run's time limit is reached; every process gets the same answer (they stop at the same step)."""
    over = elapsed >= limit
    if accelerator.num_processes > 1:
        flag = torch.tensor([1.0 if over else 0.0], device=accelerator.device)
        over = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return over


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
    terms: Sequence[LossTerm] = (),
    device: str = "auto",
    trial: bool = False,
) -> FinetuneResult:
    """Fine-tune `backbone` on `data` into the run folder `out`; see the module docstring for the mechanics.

    backbone_options: how to rebuild the backbone from its spec (pretrained, pooling, image_size,
    max_length) — written to run.json so `load_run` and `--resume` rebuild the same network (default: the
    options `load_backbone` recorded in `backbone.build`).
    stop_after_steps: stop (as on Ctrl-C, state saved) once this many optimizer steps are done — for tests.
    terms: extra loss terms (`LossTerm`, e.g. `transferkit.adapt.end_to_end.DomainTerm`) added to the loss.
    device: "auto" (CUDA when present), "cpu" or "cuda"; under `accelerate launch` each process takes its own.
    trial: a learning-rate trial (lr_search.py) reads only the returned history and record: the test split is not
    predicted and no model file or card is written.
    """
    config = config or FinetuneConfig()
    data = data.in_memory()  # training reads items in shuffled order, epoch after epoch
    terms = list(terms)
    check_terms(terms)
    user_terms = list(terms)  # what a learning-rate trial gets a copy of (the pair term it adds itself)
    folder = RunFolder(out)
    t_start = time.perf_counter()
    target = make_targets(data)
    check_strategy(config, backbone)
    split = stratified_split(target.y if target.task == "classification" else data.labels, val=config.val,
                             test=config.test, seed=config.seed,
                             class_names=target.class_names or None)
    train_idx, val_idx, test_idx = split.train, split.val, split.test
    contrastive = config.strategy == "contrastive"
    if contrastive:  # SetFit: the body learns from pairs, the head is fitted on its features (contrastive.py)
        if target.task != "classification":
            raise FinetuneError("strategy 'contrastive' learns from same-class / other-class pairs: it needs "
                                "class labels; use the full or lora strategy for regression")
        terms.append(PairTerm(data, target.y, train_idx, seed=config.seed))
        check_terms(terms)
    prior = folder.read() if folder.exists() else None
    if prior and not resume:
        what = "a finished run" if prior.get("status") == "complete" else "an unfinished run"
        fix = ("choose another --out" if prior.get("status") == "complete"
               else "add --resume to continue it, or choose another --out")
        raise FinetuneError(f"{folder.path} already holds {what}: {fix}")
    if resume and not prior:
        raise FinetuneError(f"--resume {folder.path}: there is no run there to resume; drop --resume to start one")
    wall_before = float((prior or {}).get("wall_time_s") or 0.0)  # what earlier sessions of this run took
    lr_record = None
    if config.lr == "auto" and prior and prior.get("lr_search"):  # the run already chose its rate
        lr_record = prior["lr_search"]
        config = replace(config, lr=lr_record["chosen"])
    if prior:
        _check_resume(folder, prior, config, data, backbone.spec, terms)
        if prior.get("status") == "complete":
            log(f"{folder.path} is already complete; nothing to do")
            return result_from_folder(folder)

    if config.lr == "auto":  # short trials on copies of the backbone, before this run builds anything
        import copy

        def run_trial(bb: Backbone, trial_out: Path, trial_config: FinetuneConfig) -> FinetuneResult:
            return finetune(bb, data, trial_out, trial_config, backbone_options=backbone_options, progress=False,
                            terms=copy.deepcopy(user_terms), device=device, trial=True)

        lr_record = search_lr(run_trial, backbone, folder.path, config, len(train_idx),
                              metric=PRIMARY_METRIC[target.task],
                              key={"config": {k: v for k, v in config.to_dict().items()
                                          if k not in FinetuneConfig.RESUMABLE_CHANGES},
                                   "data": data.fingerprint, "spec": backbone.spec},
                              log=log)
        config = replace(config, lr=lr_record["chosen"])

    accelerator = _accelerator(config, device, backbone.model)
    level = resolve_augment(config.augment, backbone.modality)
    augment = Augment(level, config.seed) if level != "none" else None
    if accelerator.device.type == "cpu":
        tune_allocator()
    precision = "bf16" if accelerator.mixed_precision == "bf16" else "fp32"
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % (world * config.grad_accum):
        raise FinetuneError(f"batch_size={config.batch_size} cannot be split into {world} processes × "
                            f"{config.grad_accum} micro-batches: make it a multiple of {world * config.grad_accum}")

    # --- model ---
    base_digest = backbone.weights_digest()
    lora_modules = lora.inject(backbone, config) if config.strategy == "lora" else []
    model = TransferModel(backbone, target.n_outputs)
    init_head(model.head, config.seed)
    calib = np.sort(np.random.default_rng([config.seed, 1]).permutation(train_idx)[:CALIBRATION_ITEMS])
    if backbone.pretrained:  # random weights have no feature statistics worth fixing
        model.calibrate(torch.as_tensor(backbone.embed([data.items[int(i)] for i in calib], batch_size=64,
                                                       precision=precision)))
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
    for t in terms:  # a term's own parameters train at the head's rate; they are never part of the written model
        t.to(accelerator.device)
        params = list(t.named_parameters())
        if params:
            groups.append({"params": [p for _, p in params], "names": [f"{t.name}.{n}" for n, _ in params],
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
    state = LoopState()
    best_weights: dict[str, torch.Tensor] | None = None
    trainer = folder.read_trainer() if prior else None
    if trainer:
        st = folder.load_state(trainer, rank)
        prefixes = tuple(f"{t.name}." for t in terms)
        load_model_tensors(model, {k: v for k, v in st["weights"].items() if not k.startswith(prefixes)},
                           folder.state)
        for t in terms:
            load_model_tensors(t, {k.removeprefix(f"{t.name}."): v for k, v in st["weights"].items()
                                   if k.startswith(f"{t.name}.")}, folder.state)
        optimizer_from_files(optimizer, st["optimizer"], trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        if st["rng"] is not None:
            restore_rng(st["rng"])
        state, best_weights = LoopState.from_json(trainer), st["best"]
        log(f"resuming {folder.path} at step {state.step}/{total_steps} (epoch {state.epoch + 1}, "
            f"batch {state.position})")
    elif prior:
        log(f"{folder.path}: the run stopped before its first checkpoint; starting it again")
    if not trainer:
        torch.manual_seed(config.seed)

    info = {
        "kind": "finetune",
        "status": "running",
        "backbone": {"spec": backbone.spec, "modality": backbone.modality, "base_digest": base_digest,
                     "pretrained": backbone.pretrained, "feature_dim": backbone.feature_dim,
                     "preprocessing": backbone.preprocessing,
                     **(backbone_options if backbone_options is not None else
                        {k: v for k, v in backbone.build.items() if k != "spec"})},
        "task": target.task,
        "class_names": list(target.class_names),
        "target_scale": {"mean": target.mean, "std": target.std},
        "config": config.to_dict(),
        "data": {"name": data.name, "fingerprint": data.fingerprint, "n": len(data), **split.sizes(),
                 **{k: data.meta[k] for k in ("spec", "sample", "text_column", "label_column") if data.meta.get(k)}},
        "lora_modules": lora_modules,
        "saved_parameters": sorted(saved_names),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "processes": world,
        "precision": precision,
        "terms": {t.name: t.record() for t in terms},
        **({"lr_search": lr_record} if lr_record else {}),
    }
    if accelerator.is_main_process:
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.write({**(prior or {}), **info})
    accelerator.wait_for_everyone()

    ddp_model = accelerator.prepare_model(model)
    optimizer = accelerator.prepare_optimizer(optimizer)
    unwrapped: TransferModel = accelerator.unwrap_model(ddp_model)
    # terms with parameters are wrapped like the model, so their gradients are all-reduced too
    ddp_terms = [accelerator.prepare_model(t) if any(True for _ in t.parameters()) else t for t in terms]
    synced = [(t, d) for t, d in zip(terms, ddp_terms) if d is not t]
    device = accelerator.device
    if device.type == "cuda":  # this run's peak (the model already on the GPU), not an earlier run's in this process
        torch.cuda.reset_peak_memory_stats(device)

    # the last resume point, and whether a best epoch since then is not yet in one: epoch ends write a resume point
    # only once checkpoint_every steps have passed (a few-shot epoch is one step; writing weights + optimizer state
    # after each would cost more than the training), the best weights go into the next one written
    ckpt = {"step": state.step, "best": False}

    def save(new_best: bool) -> None:
        new_best = new_best or ckpt["best"]
        ckpt.update(step=state.step, best=False)
        folder.save_rng(state.step, rank)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            trainer_json = {**state.to_json(), "scheduler": scheduler.state_dict(),
                            "files": (folder.read_trainer() or {}).get("files", {})}
            weights = model_tensors(unwrapped, saved_names)
            for t in terms:
                weights.update({f"{t.name}.{k}": v for k, v in t.state_dict().items()})
            folder.save_state(step=state.step, trainer=trainer_json, weights=weights,
                              optimizer=optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                              best=best_weights if new_best else None)
            folder.write_history(state.history)
        accelerator.wait_for_everyone()

    def validate(row: dict) -> bool:
        """Score the validation split into `row`; keep the weights when they are the best so far."""
        nonlocal best_weights
        if not len(val_idx):
            return False
        if contrastive:
            fit_contrastive_head()
        outputs = predict_outputs(unwrapped, data, backbone.collate, indices=val_idx,
                                  batch_size=max(config.batch_size, 64), device=device,
                                  autocast=accelerator.autocast, num_workers=config.num_workers)
        scores = _scores(target, outputs, val_idx)
        row.update({f"val_{kk}": v for kk, v in scores.items()}, val_loss=_loss(target, outputs, val_idx))
        if state.best_score is None or scores[metric] > state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = scores[metric], row["epoch"], 0
            best_weights = {kk: v.detach().cpu().clone() for kk, v in model_tensors(unwrapped, saved_names).items()}
            return True
        state.bad_epochs += 1
        return False

    def fit_contrastive_head() -> None:
        fit_head(unwrapped, data, target.y, train_idx, backbone.collate, device, accelerator.autocast, config.seed)

    metric = PRIMARY_METRIC[target.task]
    bn_train = config.bn_train if config.bn_train is not None else not backbone.pretrained
    stop_reason = None
    with _StopFlag() as flag:
        while state.epoch < config.epochs and state.step < total_steps:
            k = trainable_blocks(config, nb, state.epoch)
            set_trainable(model, backbone, config, k)
            now_training = {n for n, p in model.named_parameters() if p.requires_grad} & trained_names
            for n, p in model.named_parameters():
                # DDP registered the parameters once: keep them all there and drop frozen ones' gradients
                p.requires_grad_(n in (trained_names if world > 1 else now_training))
            frozen_now = [p for n, p in model.named_parameters() if n in trained_names and n not in now_training]
            ddp_model.train()
            for t in terms:
                t.train()
            if k == 0 and config.strategy != "lora":
                unwrapped.backbone.eval()  # frozen backbone: no dropout, fixed statistics, as a probe sees it
            frozen_norm_eval(unwrapped, all_norms=not bn_train)

            batches = global_batches(len(train_idx), config.batch_size, config.seed, state.epoch)
            start = state.position
            todo = batches[start:]
            if config.max_steps:
                todo = todo[: max(0, total_steps - state.step)]
            micro = [local_micro_batches(train_idx[b], rank, world, config.grad_accum) for b in todo]
            flat = [m for ms in micro for m in ms]
            sizes = [len(b) for b in todo]
            extras = []  # each term's extra items, cut across processes and micro-batches like the source batch
            for t in terms:
                picks = [t.extra_items(state.epoch, start + i, train_idx[b]) for i, b in enumerate(todo)]
                if all(p is None for p in picks):
                    extras.append(None)
                    continue
                if any(p is None or len(p) != len(b) for p, b in zip(picks, todo)):
                    raise FinetuneError(f"loss term {t.name!r} must pair every source batch with as many extra "
                                        "items as the batch has (or with none at all)")
                local = [local_micro_batches(np.asarray(p, dtype=np.int64), rank, world, config.grad_accum)
                         for p in picks]
                extras.append([m for ms in local for m in ms])
            it = loader(Batches(data, flat, backbone.collate, target,
                                [(t.items, e) for t, e in zip(terms, extras) if e is not None], augment=augment,
                                epoch=state.epoch), config.num_workers)
            bar = _progress(len(batches), start, f"epoch {state.epoch + 1}/{config.epochs}",
                            progress and accelerator.is_main_process)
            fi = -1  # index of the current micro-batch in `flat` (and in each term's extras)
            epoch_t0, epoch_items = time.perf_counter(), 0
            over_time = False
            for b_i, ms in enumerate(micro):
                epoch_items += sizes[b_i]
                n_global = sizes[b_i]
                loss_total = torch.zeros((), device=device)
                # a term may gather a micro-batch's rows from every process when each process holds a part of it
                spread = ({"gather": gather_rows, "processes": world} if world > 1 and len(
                    {len(local_micro_batches(train_idx[todo[b_i]], r, world, config.grad_accum))
                     for r in range(world)}) == 1 else {})
                for m_i in range(len(ms)):
                    fi += 1
                    inputs, y, _ = next(it)
                    inputs = {kk: v.to(device, non_blocking=True) for kk, v in inputs.items()}
                    y = y.to(device)
                    ctx = contextlib.ExitStack()
                    if m_i < len(ms) - 1 and world > 1:  # accumulate locally; all-reduce on the last micro-batch
                        for d in [ddp_model, *(d for _, d in synced)]:
                            ctx.enter_context(accelerator.no_sync(d))
                    with ctx:
                        with accelerator.autocast():
                            if not terms:
                                loss = loss_sum(ddp_model(inputs), y)
                            else:
                                outputs, feats = ddp_model(inputs, with_features=True)
                                # contrastive: the head is fitted, not trained (0 × keeps it in the all-reduce)
                                loss = loss_sum(outputs[: len(y)], y) * (0.0 if contrastive else 1.0)
                                at = len(y)
                                for d, e in zip(ddp_terms, extras):
                                    n_extra = len(e[fi]) if e is not None else 0
                                    part = TermBatch(outputs[: len(y)], feats[: len(y)], outputs[at: at + n_extra],
                                                     feats[at: at + n_extra], source_index=np.asarray(flat[fi]),
                                                     index=np.asarray(e[fi]) if e is not None else None,
                                                     **spread)
                                    at += n_extra
                                    loss = loss + d(part, state.step / max(total_steps, 1))
                            loss = loss * (world / n_global)
                        accelerator.backward(loss)
                    loss_total += loss.detach()
                if not ms:  # this process got no items of a tiny last batch: join the all-reduce with zeros
                    with accelerator.autocast():
                        dummy = ddp_model({kk: v.to(device) for kk, v in
                                           backbone.collate([data.items[int(train_idx[0])]]).items()}).sum() * 0.0
                    for _, d in synced:
                        dummy = dummy + d(None)
                    accelerator.backward(dummy)
                for p in frozen_now:
                    p.grad = None
                if config.clip:
                    clipped = list(model.parameters()) + [p for t in terms for p in t.parameters()]
                    accelerator.clip_grad_norm_([p for p in clipped if p.grad is not None], config.clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.position += 1
                batch_loss = float(accelerator.reduce(loss_total, reduction="sum")) / world
                state.epoch_loss += batch_loss * n_global
                state.epoch_items += n_global
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{batch_loss:.4f}", lr=f"{scheduler.get_last_lr()[-1]:.2e}")
                stop_now = flag.raised or (stop_after_steps is not None and state.step >= stop_after_steps)
                if stop_now or (state.step % config.checkpoint_every == 0 and state.position < len(batches)):
                    save(False)
                if stop_now:
                    if bar is not None:
                        bar.close()
                    raise Interrupted(f"stopped at step {state.step}/{total_steps}; state saved in {folder.state}: "
                                      "rerun the same command with --resume to continue")
                if config.time_limit_s and _over_time(accelerator, wall_before + time.perf_counter() - t_start,
                                                      config.time_limit_s):
                    over_time = True
                    break
            if bar is not None:
                bar.close()
            partial = state.position < len(batches)  # max_steps or the time limit ended the run inside this epoch
            # --- end of epoch (or of the part of it max_steps allowed): validate, track the best, maybe stop early
            if bn_train:
                recompute_bn_statistics(unwrapped, data, train_idx, backbone.collate, config, device)
            row = {"epoch": state.epoch + (state.position / len(batches) if partial else 1), "step": state.step,
                   "train_loss": state.epoch_loss / max(state.epoch_items, 1), "lr": scheduler.get_last_lr()[-1],
                   "trainable_parameters": count_parameters(model, now_training),
                   "time_s": round(time.perf_counter() - t_start, 3),
                   # training throughput of this epoch (this session's part of it), validation excluded
                   "train_items_per_s": round(epoch_items / max(time.perf_counter() - epoch_t0, 1e-9), 2)}
            if partial:
                row.update(partial=True, batches=state.position, of_batches=len(batches))
            new_best = validate(row)
            state.history.append(row)
            if accelerator.is_main_process:
                log(f"epoch {row['epoch']:.3g}: loss {row['train_loss']:.4f}"
                    + (f", val {metric} {row.get('val_' + metric):.4f}" if len(val_idx) else "")
                    + (f" (stopped after {state.position} of {len(batches)} batches)" if partial else ""))
            if over_time:
                stop_reason = (f"time limit {config.time_limit_s:g} s reached in epoch {state.epoch + 1} "
                               f"({state.position} of {len(batches)} batches)")
                if not partial:
                    save(new_best)
                break
            if partial:
                stop_reason = (f"max_steps={config.max_steps} reached inside epoch {state.epoch + 1} "
                               f"({state.position} of {len(batches)} batches)")
                break
            state.start_epoch()
            validated = sum(1 for h in state.history if f"val_{metric}" in h)
            if config.stop_below is not None and state.best_score is not None \
                    and validated >= race_after(config.epochs) and state.best_score < config.stop_below:
                stop_reason = (f"racing: best val {metric} {state.best_score:.4f} after {validated} epochs is below "
                               f"{config.stop_below:.4f} (the leader's, less noise)")
                log(stop_reason)
                save(new_best)
                break
            if config.patience and state.bad_epochs >= config.patience:
                stop_reason = f"early stop: val {metric} did not improve for {state.bad_epochs} epochs"
                log(stop_reason)
                save(new_best)
                break
            ckpt["best"] = ckpt["best"] or new_best
            if state.step - ckpt["step"] >= config.checkpoint_every:
                save(False)

    # --- finish: best weights, final metrics, artefacts ---
    if best_weights is not None:
        load_model_tensors(unwrapped, best_weights, folder.state)
    elif contrastive:  # no validation split chose a head: fit it on the final body
        fit_contrastive_head()
    metrics: dict[str, dict[str, float]] = {}
    for part, idx in (("val", val_idx), ("test", test_idx)):
        if len(idx) and not (trial and part == "test"):
            outputs = predict_outputs(unwrapped, data, backbone.collate, indices=idx,
                                      batch_size=max(config.batch_size, 64), device=device,
                                      autocast=accelerator.autocast, num_workers=config.num_workers)
            metrics[part] = _scores(target, outputs, idx)
    wall = time.perf_counter() - t_start + (prior or {}).get("wall_time_s", 0.0)
    peak = _peak_memory_mb(device)
    done = {**info, "status": "complete", "metrics": metrics, "best_epoch": state.best_epoch, "steps": state.step,
            "stopped": stop_reason, "wall_time_s": wall, "peak_memory_mb": peak}
    if accelerator.is_main_process:
        if not trial:
            save_tensors(folder.model_file, model_tensors(unwrapped, saved_names),
                         metadata={"format": "transferkit-run"})
        folder.write_history(state.history)
        folder.write(done)
        if not trial:
            write_model(folder.path, finetune_info({**done, "format": 1}))  # model.json + card: a model folder
        if folder.state.exists():
            import shutil

            shutil.rmtree(folder.state, ignore_errors=True)
    accelerator.wait_for_everyone()
    return result_from_info(folder, done, state.history)


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
