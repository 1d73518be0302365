"""What a fine-tuning run is asked to do: strategy, optimisation and checkpointing settings, JSON-able.

The same `FinetuneConfig` is written to the run folder, read back by `--resume` (which refuses a
changed config) and shown in reports, so every field is a plain value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from transferkit import runtime
from transferkit.errors import FinetuneError, Interrupted

__all__ = ["DEFAULT_LR", "FinetuneConfig", "FinetuneError", "Interrupted", "OPTIMIZERS", "PRECISIONS", "SCHEDULES",
           "STRATEGIES"]

STRATEGIES = ("head", "full", "last-k", "gradual", "lora", "contrastive")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
PRECISIONS = runtime.PRECISIONS
#: each strategy's default learning rate (the backbone's; the new head trains at 10x), and the centre of the
#: `lr="auto"` search: LoRA's adapters want a far larger rate than full fine-tuning's weights
DEFAULT_LR = {"head": 1e-3, "lora": 1e-3, "last-k": 2e-4, "gradual": 1e-4, "full": 5e-5, "contrastive": 2e-5}
#: validated epochs after which `stop_below` may stop a run: a third of its epochs, at least 2
RACE_AFTER = 2


def race_after(epochs: int) -> int:
    """How many validated epochs a run gets before the racing rule may stop it."""
    return max(RACE_AFTER, -(-int(epochs) // 3))
#: settings earlier versions kept in the config; they now belong to loss terms (see terms.py) and are dropped on read
RETIRED = ("domain_loss", "domain_tradeoff")


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run. Defaults are a sensible AdamW + warm-up/cosine recipe.

    lr is the backbone's learning rate (its last block's, under layer decay), or "auto": chosen by a short
    search on validation with successive halving (lr_search.py); head_lr the new head's (default 10 × lr).
    layer_decay < 1 gives block i of n the rate lr · layer_decay^(n-1-i) (discriminative rates).
    bn_train=False keeps batch-norm layers on their pretrained running statistics
    (their scale and shift still train), the robust choice for the small batches of transfer learning,
    as the Keras fine-tuning guide advises; True updates them from each batch; None (default) means
    False for pretrained backbones and True for random-init ones, which have no statistics to keep.
    batch_size is the global batch: split across processes under `accelerate launch`, and over
    `grad_accum` micro-batches.
    augment: "none", "light" (random resized crop + flip), "strong" (+ TrivialAugment) or "auto" (light for
    images, none for text) — image training items only, seeded per (seed, epoch, item) so resume stays exact.
    time_limit_s ends the run once its wall time (across resumes) reaches it: the epoch in progress is validated
    as a partial one and the best weights so far are kept (how `fit` spends its budget).
    stop_below: a racing rule (how `fit` stops hopeless candidates early): once `race_after(epochs)` epochs are
    validated (a third of them, at least 2),
    the run stops, keeping its best weights, when its best validation score is still below this value (the
    leader's score so far, less a noise margin).
    Extra losses (domain adaptation, say) are not settings here: they are `LossTerm`s given to `finetune`.
    """

    strategy: str = "full"  # contrastive: SetFit-style pairs for the body, a fitted head (contrastive.py)
    epochs: int = 3
    batch_size: int = 32
    lr: float | str = 1e-4
    head_lr: float | None = None
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.01
    layer_decay: float = 1.0
    schedule: str = "cosine"
    warmup: float = 0.1
    label_smoothing: float = 0.0
    grad_accum: int = 1
    clip: float | None = 1.0
    precision: str = "auto"
    grad_checkpointing: bool = False
    bn_train: bool | None = None
    patience: int | None = None
    last_k: int = 2
    unfreeze_every: int = 1
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "auto"
    class_weights: str | None = None
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 50
    max_steps: int | None = None
    time_limit_s: float | None = None
    augment: str = "none"
    stop_below: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_rate(self) -> float:
        """The head's learning rate."""
        if self.lr == "auto" and self.head_lr is None:
            raise FinetuneError("lr='auto' is chosen by the learning-rate search before the run trains")
        return self.head_lr if self.head_lr is not None else 10.0 * self.lr

    def validate(self) -> None:
        """Raise FinetuneError naming the first bad option and its valid values."""
        def bad(name: str, value: Any, fix: str) -> FinetuneError:
            return FinetuneError(f"{name}={value!r} is not valid: {fix}")

        if self.strategy not in STRATEGIES:
            raise bad("strategy", self.strategy, "use one of " + ", ".join(STRATEGIES))
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", self.optimizer, "use one of " + ", ".join(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise bad("schedule", self.schedule, "use one of " + ", ".join(SCHEDULES))
        if self.precision not in PRECISIONS:
            raise bad("precision", self.precision, "use one of " + ", ".join(PRECISIONS))
        for name in ("epochs", "batch_size", "grad_accum", "last_k", "unfreeze_every", "lora_r", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise bad(name, getattr(self, name), "give a whole number ≥ 1")
        if self.batch_size % self.grad_accum:
            raise bad("grad_accum", self.grad_accum, f"it must divide batch_size={self.batch_size}")
        if isinstance(self.lr, str) and self.lr != "auto":
            try:
                self.lr = float(self.lr)
            except ValueError:
                raise bad("lr", self.lr, "give a number > 0, or 'auto' to search for one") from None
        if self.lr != "auto" and self.lr <= 0:
            raise bad("lr", self.lr, "learning rates must be > 0")
        if self.head_lr is not None and self.head_lr <= 0:
            raise bad("head_lr", self.head_lr, "learning rates must be > 0")
        if not 0 < self.layer_decay <= 1:
            raise bad("layer_decay", self.layer_decay, "give a factor in (0, 1]; 1 turns it off")
        if not 0 <= self.warmup < 1:
            raise bad("warmup", self.warmup, "give the warm-up as a fraction of all steps in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", self.label_smoothing, "give a value in [0, 1)")
        if self.clip is not None and self.clip <= 0:
            raise bad("clip", self.clip, "give a max gradient norm > 0, or None to turn clipping off")
        if self.patience is not None and self.patience < 1:
            raise bad("patience", self.patience, "give a number of epochs ≥ 1, or None for no early stopping")
        if self.class_weights not in (None, "balanced"):
            raise bad("class_weights", self.class_weights, "use 'balanced' or None")
        from transferkit.finetune.augment import AUGMENTS

        if self.augment not in AUGMENTS:
            raise bad("augment", self.augment, "use one of " + ", ".join(AUGMENTS))
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise bad("time_limit_s", self.time_limit_s, "give a positive number of seconds, or None for no limit")
        if self.max_steps is not None and self.max_steps < 1:
            raise bad("max_steps", self.max_steps, "give a number of optimizer steps ≥ 1, or None")

    def to_dict(self) -> dict:
        """JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        """Rebuild from `to_dict` output; unknown keys are an error (a run folder from another version)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k not in RETIRED}
        unknown = sorted(set(d) - names)
        if unknown:
            raise FinetuneError(f"run config has unknown settings {unknown}: it was written by another version")
        return cls(**d)

    # Settings that may change on --resume without changing what the run computes.
    RESUMABLE_CHANGES = ("num_workers", "checkpoint_every", "time_limit_s", "stop_below")
