"""Fine-tuning: train the backbone itself (full, last-k, gradual, LoRA) or only a new head, resumably.

    from transferkit.finetune import FinetuneConfig, finetune, load_run
"""

from transferkit.finetune.config import STRATEGIES, FinetuneConfig, FinetuneError, Interrupted
from transferkit.finetune.loop import FinetuneResult, finetune
from transferkit.finetune.run import FineTunedModel, load_run
from transferkit.finetune.terms import LossTerm, TermBatch

__all__ = ["STRATEGIES", "FineTunedModel", "FinetuneConfig", "FinetuneError", "FinetuneResult", "Interrupted",
           "LossTerm", "TermBatch", "finetune", "load_run"]
