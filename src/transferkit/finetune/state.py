"""Where a fine-tuning run stands between optimizer steps: everything but tensors that a resume point restores.

One dataclass, saved whole into the resume state's trainer.json and read back whole, so a field cannot be
restored in one place and forgotten in another (the tensors — weights, optimizer, RNG, best weights — live in
safetensors files that trainer.json names; see checkpoint.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from transferkit.finetune.config import FinetuneError


@dataclass
class LoopState:
    """Progress of a run: optimizer steps done, epoch and batch position in it, per-epoch history, the best
    validation score so far (and its epoch), epochs without improvement, and the running loss of this epoch."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    history: list[dict] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    epoch_loss: float = 0.0
    epoch_items: int = 0

    def to_json(self) -> dict:
        """The JSON record of trainer.json (these keys; the scheduler, files and optimizer layout sit beside them)."""
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> LoopState:
        """Read back what `to_json` wrote (trainer.json of this or an earlier version: the keys are the same)."""
        try:
            return cls(**{f.name: record[f.name] for f in fields(cls)})
        except (KeyError, TypeError) as e:
            raise FinetuneError(f"the resume state lacks {e}: it is damaged; start the run again in another --out"
                                ) from None

    def start_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch += 1
        self.position, self.epoch_loss, self.epoch_items = 0, 0.0, 0
